#include "scheduler/server.h"

#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <chrono>

#include "common/grpc_limits.h"
#include "common/log.h"

namespace df::scheduler {

Result<std::unique_ptr<SchedulerServer>> SchedulerServer::Start(
    const SchedulerConfig& config, prometheus::Registry& registry,
    std::unique_ptr<SeedTrigger> seed_trigger) {
  DF_RETURN_IF_ERROR(ValidateConfig(config));
  EvaluatorOptions evaluator_options;
  evaluator_options.inference = config.inference;
  evaluator_options.inference_model = config.inference_model;
  evaluator_options.inference_deadline_ms = config.inference_deadline_ms;
  evaluator_options.prediction_ttl_ms = config.prediction_ttl_ms;
  evaluator_options.infer_groups = config.infer_groups;
  evaluator_options.registry = &registry;
  auto evaluator = NewEvaluator(config.evaluator, evaluator_options);
  if (!evaluator.ok()) return evaluator.status();
  std::unique_ptr<SchedulerServer> s(new SchedulerServer());
  auto auth =
      ControlAuth::Load(config.auth_token_file,
                        TlsFiles{config.tls_cert_file, config.tls_key_file, config.tls_ca_file});
  if (!auth.ok()) return auth.status();
  s->auth_ = std::move(auth).value();
  if (!seed_trigger) seed_trigger = std::make_unique<GrpcSeedTrigger>(&s->auth_);

  auto store = NewStore(config.store);
  if (!store.ok()) return store.status();
  if (Status up = store.value()->Ping(); !up.ok()) {
    DF_LOG_WARN("store {} does not answer yet; scheduling from memory until it does: {}",
                config.store, up.ToString());
  }
  s->metrics_ = std::make_unique<SchedulerMetrics>(registry);
  s->scheduler_ =
      std::make_unique<Scheduler>(config, std::move(evaluator).value(), std::move(seed_trigger),
                                  s->metrics_.get(), std::move(store).value());
  s->StartNetworkTopology(config);
  s->service_ = std::make_unique<SchedulerService>(s->scheduler_.get(), &s->auth_,
                                                   s->topology_.get(), config.probe_sample_size);

  auto preheat_hosts = oci::ParseAllowedHosts(config.preheat_registries);
  if (!preheat_hosts.ok()) return preheat_hosts.status();  // ValidateConfig checked it
  s->admin_ = std::make_unique<AdminService>(s->scheduler_.get(), &s->auth_,
                                             std::move(preheat_hosts).value());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(config.listen, s->auth_.ServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->admin_.get());
  // A second scheduler on a taken port must fail, not silently share it (gRPC's default).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Peers keep their streams open for a whole download; keepalive pings find dead ones and
  // idle connections (a stranger's, or a daemon's between tasks) are closed.
  ApplyServerLimits(builder);
  s->server_ = builder.BuildAndStart();
  if (!s->server_ || s->port_ == 0) {
    return Unavailable("scheduler: cannot listen on " + config.listen);
  }
  s->scheduler_->Start();
  if (!config.trainer.empty()) {
    DatasetUploader::Options o;
    o.target = config.trainer;
    o.dataset_dir = config.dataset_dir;
    o.interval = std::chrono::milliseconds(config.trainer_interval_ms);
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    o.hostname = host;
    // One dataset per scheduler on the trainer: the same scheduler restarted replaces its own.
    o.scheduler_id = std::string(host) + ":" + std::to_string(s->port_);
    s->uploader_ =
        std::make_unique<DatasetUploader>(o, s->scheduler_->dataset(), &s->auth_, registry);
    s->uploader_->Start();
    DF_LOG_INFO("records dataset goes to trainer {} every {} s", config.trainer,
                config.trainer_interval_ms / 1000);
  }
  return s;
}

SchedulerServer::~SchedulerServer() { Shutdown(); }

void SchedulerServer::Shutdown(uint64_t grace_ms) {
  if (shut_down_) return;
  shut_down_ = true;
  if (admin_) admin_->Stop();  // its queued calls finish before the server waits for them
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(grace_ms));
  }
  if (uploader_) uploader_->Stop();
  if (scheduler_) scheduler_->Stop();
  if (topology_) topology_->Stop();
}

void SchedulerServer::StartNetworkTopology(const SchedulerConfig& config) {
  NetworkTopologyOptions options;
  options.probe_count = config.probe_count;
  options.probe_queue_length = config.probe_queue_length;
  options.probe_sample_size = config.probe_sample_size;
  // Probes live in the scheduler's store; Shutdown() stops the topology before either goes.
  topology_ = std::make_unique<NetworkTopology>(&scheduler_->store(), options);
  scheduler_->SetNetworkTopology(topology_.get());
  topology_->Start();
}

}  // namespace df::scheduler
