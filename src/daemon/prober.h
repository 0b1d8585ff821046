// Prober: the daemon side of assigned latency probes (docs/measurement.md, "Probes (daemon
// side)").
//
// Every probe interval the prober opens a SyncProbes stream to the scheduler, sends
// ProbeStarted, reads the one answer (the hosts to probe, chosen by the scheduler so that each
// host's cost is O(k), not O(N)), measures the RTT to each host's piece port (MeasureTcpRtt: the
// TCP handshake time, unprivileged, the minimum of a few handshakes), then sends one
// ProbeFinished with the successes and one ProbeFailed with the failures (each only when not
// empty), WritesDone and Finish.
//
// What the scheduler sends is not trusted: at most kMaxProbeTargets distinct hosts are taken
// (the rest ignored), this host itself is never probed, and a target with an empty id, an `ip`
// that is not an IP literal (no name is ever resolved) or a port outside 1..65535 is reported
// failed with the reason instead of probed.
//
// Timing: the first round comes a random 0..min(interval, first_round_max_delay) after Start()
// (thousands of daemons started together do not arrive at once), then one every interval
// +-10%. A failing scheduler costs a warning per failure streak and a retry next interval.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/status.h"
#include "daemon/scheduler_client.h"
#include "scheduler.grpc.pb.h"

namespace df {

// Distinct hosts probed per round at most, whatever the scheduler sends (it sends
// probe_count, 5 by default).
constexpr size_t kMaxProbeTargets = 32;

struct ProberOptions {
  std::string host_id;             // this host: the prober's id in every request, never a target
  uint64_t interval_ms = 300'000;  // > 0 (with probe_interval 0 the daemon creates no prober)
  uint64_t timeout_ms = 2000;      // per handshake
  int handshakes = 3;              // per target; the minimum RTT is reported
  int handshake_spacing_ms = 5;
  // Upper bound of the random delay before the first round (the delay is at most the interval).
  uint64_t first_round_max_delay_ms = 10'000;
  // Asked before each round; while false, the round waits (re-asking every second at most):
  // the daemon passes "the scheduler acknowledged this host's announce". Empty: always ready.
  std::function<bool()> ready;
};

// What one round sent to the scheduler.
struct ProbeRound {
  std::vector<df::scheduler::v1::Probe> finished;
  std::vector<df::scheduler::v1::FailedProbe> failed;
};

// Thread-safety: Start() and Stop() are called by the owner (not concurrently with each
// other); RunRound() may be called from any one thread while no loop runs (tests);
// rounds() is thread-safe. `scheduler` and `registry` must outlive the prober.
class Prober {
 public:
  // `registry` (may be null) receives df_daemon_probes_total{result="ok|failed"} (one per
  // target), df_daemon_probe_rounds_total{result="ok|failed"} (one per round) and
  // df_daemon_probe_rtt_seconds (histogram of the reported RTTs).
  Prober(ProberOptions options, SchedulerClient* scheduler, prometheus::Registry* registry);
  // Stop()s.
  ~Prober();
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // Launches the prober thread. Once.
  void Start();
  // Wakes the thread, cancels a round in flight (its RPC and its handshakes) and joins.
  // Returns within about a second whatever the interval; idempotent.
  void Stop();

  // One round, on the calling thread. OK when the stream ended with an OK status; the gRPC
  // failure (Unavailable, DeadlineExceeded, Unauthenticated...) otherwise, or Cancelled after
  // Stop(). `sent` (may be null) gets what was reported.
  Status RunRound(ProbeRound* sent = nullptr);

  // Rounds completed (OK or not) since construction.
  uint64_t rounds() const;

 private:
  struct Target {
    std::string host_id;
    std::string ip;
    int32_t port = 0;
  };
  struct Metrics {
    prometheus::Counter* probes_ok = nullptr;
    prometheus::Counter* probes_failed = nullptr;
    prometheus::Counter* rounds_ok = nullptr;
    prometheus::Counter* rounds_failed = nullptr;
    prometheus::Histogram* rtt_seconds = nullptr;
  };

  void Loop();
  // Waits `delay` or until Stop(); false when stopping.
  bool WaitFor(std::chrono::milliseconds delay);
  // The hosts of `response` to probe; the invalid ones go to `round->failed`.
  std::vector<Target> SelectTargets(const df::scheduler::v1::SyncProbesResponse& response,
                                    ProbeRound* round) const;
  // The SyncProbes stream of one round on `ctx`; fills `round` with what was reported.
  Status Exchange(grpc::ClientContext* ctx, ProbeRound* round);
  // Measures every target into `round`.
  void Measure(const std::vector<Target>& targets, ProbeRound* round);
  void Count(const ProbeRound& round, bool round_ok);
  std::chrono::milliseconds NextDelay(bool first);

  const ProberOptions options_;
  SchedulerClient* const scheduler_;
  Metrics metrics_;
  // Readable once Stop() was called: interrupts handshakes (MeasureTcpRtt's cancel_fd).
  UniqueFd stop_fd_;
  std::mt19937_64 rng_;  // prober thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                           // GUARDED_BY(mu_)
  grpc::ClientContext* active_call_ = nullptr;  // GUARDED_BY(mu_): the round's RPC, to cancel
  uint64_t rounds_ = 0;                         // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace df
