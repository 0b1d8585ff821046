// A running dfinference: the model repository (polling), the KServe v2 gRPC service and the
// gRPC server, wired together. Used by dfinference's main, the tests and the benchmark.
#pragma once

#include <grpcpp/server.h>

#include <memory>

#include "common/status.h"
#include "inference/config.h"
#include "inference/metrics.h"
#include "inference/model_repository.h"
#include "inference/service.h"

namespace df::inference {

// Thread-safe. `registry` must outlive the server.
class InferenceServer {
 public:
  // Listens on config.listen (port 0 = any free port) with at most config.rpc_threads calls
  // served at once and requests up to config.max_request_size, and starts polling config.repo
  // (the first poll at once, in the background: the server answers before models are loaded).
  // InvalidArgument for a bad config; Unavailable when the address cannot be bound.
  static Result<std::unique_ptr<InferenceServer>> Start(const InferenceConfig& config,
                                                        prometheus::Registry& registry);
  ~InferenceServer();

  // Stops polling, then stops the gRPC server (calls in progress get `grace_ms` to finish).
  // Idempotent.
  void Shutdown(uint64_t grace_ms = 1000);

  int port() const { return port_; }
  ModelRepository& repository() { return *repository_; }

 private:
  InferenceServer() = default;

  std::unique_ptr<InferenceMetrics> metrics_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace df::inference
