// Daemon: constructs every component of a peer and wires them together — storage, origin
// backends, the scheduler link, the piece server, the download engine, the gRPC services and
// metrics. main.cc only parses the configuration and runs it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "backend/backend.h"
#include "common/fd.h"
#include "common/metrics.h"
#include "daemon/config.h"
#include "daemon/daemon_metrics.h"
#include "daemon/piece_server.h"
#include "daemon/prober.h"
#include "daemon/registry_mirror.h"
#include "daemon/scheduler_client.h"
#include "daemon/services.h"
#include "daemon/task_manager.h"
#include "storage/piece_store.h"

namespace df {

// Start() once, then Wait() until RequestStop() (from any thread), then Shutdown() once.
class Daemon {
 public:
  explicit Daemon(DaemonConfig config);
  ~Daemon();

  // Takes the daemon's locks, opens storage, binds every port and the unix socket (mode
  // sock_mode, 0600 by default, whatever the umask). Unavailable "another dfdaemon holds
  // <path>" when another process holds <data_dir>/dfdaemon.lock or <sock>.lock (one daemon per
  // data dir and per socket), Unavailable when a port or the socket is taken, IoError when the
  // data dir cannot be used; before any of that, the errors of ControlAuth::Load for a bad token
  // or TLS files, and InvalidArgument for a TLS certificate that does not name config.ip.
  Status Start();
  // Blocks until RequestStop().
  void Wait();
  void RequestStop();
  // Stops every component in order; called once by the owner after Wait() returns, or by the
  // destructor. Not safe to call concurrently with itself.
  void Shutdown();

 private:
  // Fills trust_ from the config: token, TLS, file:// directories, the scheduler's addresses.
  Status LoadTrust();
  void FillHost(df::scheduler::v1::Host* host);
  // Creates and starts prober_ when there is a scheduler and probing is on.
  void StartProber();
  void Housekeeping();
  // Mirrors the piece server's and clients' counts into the metrics (housekeeping).
  void UpdatePieceMetrics();
  // Mirrors the task manager's counters and the storage size into the metrics (housekeeping).
  void UpdateTaskMetrics();
  // The local API's daemon status (dfdaemon status).
  void FillStatus(df::dfdaemon::v1::DaemonStatus* status);

  DaemonConfig config_;
  std::string host_id_;
  // Exclusive flocks on <data_dir>/dfdaemon.lock and <sock>.lock, held for the daemon's life.
  // Declared before the components so that they are released after them.
  UniqueFd data_dir_lock_;
  UniqueFd sock_lock_;
  std::unique_ptr<PieceStore> store_;
  BackendRegistry backends_;
  ServiceTrust trust_;  // read by the services; set before they start
  std::unique_ptr<SchedulerClient> scheduler_;
  // Latency probes; null without a scheduler or with probe_interval 0. Stopped before scheduler_.
  std::unique_ptr<Prober> prober_;
  std::unique_ptr<PieceServer> piece_server_;
  std::unique_ptr<TaskManager> manager_;
  // The OCI registry mirror; null with proxy_port 0. Stopped before manager_ goes.
  std::unique_ptr<RegistryMirror> mirror_;
  DaemonControl control_;  // read by download_service_; set before it starts
  std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  std::unique_ptr<DownloadService> download_service_;
  std::unique_ptr<UploadService> upload_service_;
  std::unique_ptr<grpc::Server> local_server_;
  std::unique_ptr<grpc::Server> upload_server_;
  MetricsServer metrics_;
  DaemonMetrics series_{metrics_.registry()};  // after metrics_, whose registry it uses

  bool shut_down_ = false;  // Shutdown() ran
  bool owns_sock_ = false;  // we bound config_.sock and remove it on shutdown
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread housekeeping_;
};

}  // namespace df
