#include "inference/server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>

#include <chrono>

#include "common/grpc_limits.h"

namespace df::inference {

Result<std::unique_ptr<InferenceServer>> InferenceServer::Start(const InferenceConfig& config,
                                                                prometheus::Registry& registry) {
  DF_RETURN_IF_ERROR(ValidateConfig(config));
  std::unique_ptr<InferenceServer> s(new InferenceServer());
  s->metrics_ = std::make_unique<InferenceMetrics>(registry);
  s->repository_ = std::make_unique<ModelRepository>(
      config.repo, std::chrono::milliseconds(config.poll_interval_ms), s->metrics_.get());
  s->service_ = std::make_unique<InferenceService>(*s->repository_, *s->metrics_);

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_request_size));
  grpc::ResourceQuota quota("dfinference");
  quota.SetMaxThreads(static_cast<int>(config.rpc_threads));
  builder.SetResourceQuota(quota);
  ApplyServerLimits(builder);
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return Unavailable("cannot listen on " + config.listen);
  }
  s->repository_->Start();
  return s;
}

InferenceServer::~InferenceServer() { Shutdown(); }

void InferenceServer::Shutdown(uint64_t grace_ms) {
  if (shut_down_) return;
  shut_down_ = true;
  if (repository_ != nullptr) repository_->Stop();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
    server_->Wait();
  }
}

}  // namespace df::inference
