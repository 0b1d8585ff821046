// LocalCluster: a whole system on loopback — an nginx origin, one dfscheduler, one seed
// dfdaemon and N peer dfdaemons, each a real process with its own socket, storage and ports.
// Used by `dfbench` (the main job of `make demo`) and by the end-to-end P2P tests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "common/status.h"
#include "dfdaemon.grpc.pb.h"

namespace df::bench {

struct ClusterOptions {
  std::string bin_dir;   // holds daemon/dfdaemon, scheduler/dfscheduler (the build's src/)
  std::string work_dir;  // everything goes below it
  int peers = 8;
  std::string evaluator = "default";
  std::string origin_limit_rate;            // nginx per-connection limit, "" = none
  std::vector<std::string> daemon_args;     // extra flags for every dfdaemon
  std::vector<std::string> scheduler_args;  // extra flags for dfscheduler
};

// Result of one download on one peer.
struct PeerResult {
  std::string name;
  double seconds = 0;  // from the request to the output file in place
  uint64_t bytes_from_origin = 0;
  uint64_t bytes_from_peers = 0;
  bool ok = false;
  std::string error;
  std::string output_path;
};

// Not thread-safe except Download(), which may run concurrently for different peers.
class LocalCluster {
 public:
  explicit LocalCluster(ClusterOptions options);
  ~LocalCluster();  // stops every process by pid

  // Starts origin, scheduler, seed and peers and waits until each answers.
  Status Start();
  // Adds and starts one more peer (index = peers() - 1 afterwards).
  Status AddPeer();
  int peers() const { return static_cast<int>(peers_.size()); }

  std::string OriginRoot() const { return options_.work_dir + "/origin"; }
  std::string OriginUrl(const std::string& name) const { return origin_->Url(name); }
  uint64_t OriginBytesServed() const { return origin_->BytesServed(); }
  // dfscheduler's /metrics and /api port on 127.0.0.1.
  uint16_t SchedulerMetricsPort() const { return scheduler_metrics_port_; }

  // Downloads `url` on peer `i` through its local API to <work_dir>/out/<peer>.bin.
  PeerResult Download(int i, const std::string& url, uint64_t piece_length = 0);
  // The local API of peer `i` (-1 = the seed), for StatTask and friends.
  df::dfdaemon::v1::DfdaemonDownload::Stub* Api(int i);
  // Kills peer `i` hard (SIGKILL).
  void KillPeer(int i);

 private:
  struct Daemon {
    std::string name;
    std::string sock;
    Process process;
    std::unique_ptr<df::dfdaemon::v1::DfdaemonDownload::Stub> api;
  };
  Status StartDaemon(const std::string& name, bool seed, Daemon* d);

  ClusterOptions options_;
  std::unique_ptr<NginxOrigin> origin_;
  Process scheduler_;
  uint16_t scheduler_port_ = 0;
  uint16_t scheduler_metrics_port_ = 0;
  std::unique_ptr<Daemon> seed_;
  std::vector<std::unique_ptr<Daemon>> peers_;
};

}  // namespace df::bench
