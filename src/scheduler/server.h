// A running scheduler: the Scheduler, its gRPC service and the gRPC server, wired together.
// Used by dfscheduler's main, the tests and the benchmark.
#pragma once

#include <grpcpp/server.h>

#include <memory>

#include "common/status.h"
#include "scheduler/admin_service.h"
#include "scheduler/config.h"
#include "scheduler/dataset_uploader.h"
#include "scheduler/metrics.h"
#include "scheduler/network_topology.h"
#include "scheduler/scheduler.h"
#include "scheduler/seed_trigger.h"
#include "scheduler/service.h"

namespace df::scheduler {

// Thread-safe. `registry` (for metrics) must outlive the server.
class SchedulerServer {
 public:
  // Builds everything from `config` and listens on config.listen (port 0 = any free port).
  // `seed_trigger` null = GrpcSeedTrigger. InvalidArgument for a bad config or evaluator name;
  // the errors of ControlAuth::Load for a bad auth_token_file or TLS files; Unavailable when the
  // address cannot be bound.
  static Result<std::unique_ptr<SchedulerServer>> Start(
      const SchedulerConfig& config, prometheus::Registry& registry,
      std::unique_ptr<SeedTrigger> seed_trigger = nullptr);

  ~SchedulerServer();

  // Stops accepting RPCs, ends open streams (waiting at most `grace_ms` for them), then stops
  // the scheduler's background thread. Idempotent.
  void Shutdown(uint64_t grace_ms = 1000);

  int port() const { return port_; }
  Scheduler& scheduler() { return *scheduler_; }
  NetworkTopology& network_topology() { return *topology_; }
  // Streams the dataset to dftrainer (config.trainer); null when no trainer is configured.
  DatasetUploader* dataset_uploader() { return uploader_.get(); }

 private:
  SchedulerServer() = default;
  // Starts the NetworkTopology (over the scheduler's store) the scheduler reads RTTs from.
  void StartNetworkTopology(const SchedulerConfig& config);

  ControlAuth auth_;  // before everything that borrows it
  std::unique_ptr<SchedulerMetrics> metrics_;
  // Latency probes: borrows the scheduler's store and is stopped by Shutdown() (before the
  // scheduler and its store are destroyed); destroyed after the scheduler, which points to it.
  std::unique_ptr<NetworkTopology> topology_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<DatasetUploader> uploader_;  // borrows the scheduler's DatasetWriter
  std::unique_ptr<SchedulerService> service_;
  std::unique_ptr<AdminService> admin_;  // stopped before the server shuts down
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace df::scheduler
