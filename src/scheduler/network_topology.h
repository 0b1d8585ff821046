// NetworkTopology: the scheduler side of assigned latency probes (docs/measurement.md, "Probes
// (scheduler side)").
//
// Every probe interval a daemon asks for targets (SyncProbes, ProbeStarted). AssignTargets picks
// the `probe_count` least probed hosts of a random sample of at most `probe_sample_size` other
// reachable hosts and counts them as probed once more, so every host is probed and each host's
// cost is O(probe_count) per interval, not O(hosts). The daemon reports RTTs (Record) and failures
// (RecordFailure).
//
// What is kept, and where:
//   - the Store (shared by the schedulers of a cluster): every sample (AddProbe, Dragonfly's key
//     layout), the probed counts;
//   - here, in memory: the last `probe_queue_length` samples and their moving average
//     (MovingAverageRtt, store.h) per (src, dst), the
//     probed counts last seen (the fallback when the store fails), and per target the failures
//     since its last success. Evaluators read only this copy (AverageRtt, ProbeFailures): no I/O
//     on the scheduling path.
// A background thread reloads every edge from a shared Store (not the memory store, which only
// this process writes) every `refresh_interval` (the probes reported through other schedulers)
// and deletes the probes of removed hosts from the Store. A reload copies every edge: O(edges)
// every interval, fine for thousands of hosts; beyond, reload only what changed (a stream of
// updated keys).
//
// Invariants: an edge never has src == dst; a removed host has no edge in either direction here,
// and its edges are deleted from the Store by the background thread before its next reload, so
// a reload cannot bring them back; samples of a host removed less than kTombstoneTtl ago are
// ignored unless the scheduler offers the host as a candidate again (it came back).
//
// Thread-safe: every public method may be called from any thread. Methods that do Store I/O say
// so; the caller must not hold the scheduler's resource mutex while calling them. The lookups
// (AverageRtt, ProbeFailures, Edges, ...) only take this object's own mutex, a leaf lock that may
// be taken under the scheduler's. `store` and `clock` are borrowed and must outlive the object.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "scheduler.pb.h"
#include "scheduler/store.h"

namespace df::scheduler {

struct NetworkTopologyOptions {
  uint32_t probe_count = 5;         // targets per round
  uint32_t probe_queue_length = 5;  // samples kept per (src, dst)
  uint32_t probe_sample_size = 50;  // random sample the targets are chosen from
  std::chrono::milliseconds refresh_interval{500};
  // After a Store call fails, the RPC path skips the store (memory only) for this long; the
  // background thread keeps trying.
  std::chrono::milliseconds store_backoff{1000};
  const df::Clock* clock = nullptr;  // null: SteadyClock::Instance()
};

class NetworkTopology {
 public:
  // Samples outside (0, kMaxRttNs) are not measurements; they are ignored.
  static constexpr int64_t kMaxRttNs = 60'000'000'000;
  // Samples per Record / failures per RecordFailure taken at most (the rest are ignored).
  static constexpr size_t kMaxProbesPerMessage = 64;
  // A target with this many failures (from distinct sources, since its last success) is
  // Unreachable.
  static constexpr uint32_t kUnreachableFailures = 3;
  static constexpr auto kTombstoneTtl = std::chrono::seconds(30);

  NetworkTopology(Store* store, NetworkTopologyOptions options);
  // Stop()s.
  ~NetworkTopology();
  NetworkTopology(const NetworkTopology&) = delete;
  NetworkTopology& operator=(const NetworkTopology&) = delete;

  // Starts the background thread (reload, deletions). Once. Without it nothing is reloaded.
  void Start();
  // Joins the background thread; idempotent.
  void Stop();

  // The hosts `src_host_id` should probe now: at most probe_count of `candidates` (hosts the
  // scheduler considers reachable), never src itself nor a duplicate, least probed first (ties
  // broken at random), each counted as probed once more. Does Store I/O (one ProbedCounts, one
  // AddProbedCount per target); with the store failing it decides from the local counts.
  std::vector<df::scheduler::v1::Host> AssignTargets(
      const std::string& src_host_id, std::vector<df::scheduler::v1::Host> candidates);

  // Records what `src_host_id` measured. A probe is ignored when its target is empty, src itself,
  // a duplicate in the message, a recently removed host, or its RTT is outside (0, kMaxRttNs);
  // at most kMaxProbesPerMessage are taken. A sample's created_unix_ms is kept when it is within
  // a minute of now, else replaced by now. A success clears the target's failures. Does Store
  // I/O (AddProbe per sample; skipped while the store is backing off). Returns how many were
  // recorded.
  size_t Record(const std::string& src_host_id,
                const std::vector<df::scheduler::v1::Probe>& probes);

  // `src_host_id` could not probe `dst_host_id` (`why` is logged at debug): one more failure of
  // dst unless src already counted since dst's last success. Memory only (reachability is a
  // local judgement, store.h).
  void RecordFailure(const std::string& src_host_id, const std::string& dst_host_id,
                     const std::string& why);

  // Forgets `host_id`'s probes in both directions, its probed count and failures, now, and
  // queues Store::DeleteHost for the background thread (so the call does no I/O: the scheduler
  // may call it under its mutex). Unknown ids are fine.
  void RemoveHost(const std::string& host_id);

  // Moving average of the kept samples of (src, dst); when that pair has none, of (dst, src) (an
  // RTT is symmetric); nullopt when neither was probed.
  std::optional<int64_t> AverageRtt(const std::string& src_host_id,
                                    const std::string& dst_host_id) const;
  // Failures of `host_id` as a target since its last successful probe (distinct sources).
  uint32_t ProbeFailures(const std::string& host_id) const;
  bool Unreachable(const std::string& host_id) const {
    return ProbeFailures(host_id) >= kUnreachableFailures;
  }
  // How often `host_id` was assigned as a target, as last seen (store or local).
  uint64_t ProbedCount(const std::string& host_id) const;

  // Every kept edge, sorted by (src, dst): for the HTTP API and tests.
  std::vector<ProbeEdge> Edges() const;

  // Reloads every edge from the Store now (the background thread does it every
  // refresh_interval). Store I/O; Unavailable when the store failed (the local copy is kept).
  Status Refresh();

 private:
  using EdgeKey = std::pair<std::string, std::string>;  // (src, dst)
  struct Failures {
    std::set<std::string> sources;  // distinct sources that failed since the last success
    std::string last_error;
  };

  bool StoreUsable() const;
  void StoreFailed(const Status& s, const char* op);
  // Adds `sample` to the local edge (requires mu_ exclusively).
  void AddLocal(const std::string& src, const std::string& dst, const ProbeSample& sample);
  bool Tombstoned(const std::string& host_id, df::Clock::TimePoint now) const;  // requires mu_
  // Unix ms now, and a sample time within a minute of it (else now).
  static int64_t NowUnixMs();
  std::vector<uint64_t> Counts(const std::vector<std::string>& ids);
  void RunBackground();
  void DeleteRemoved();
  void ForgetOldTombstones();

  Store* const store_;
  const NetworkTopologyOptions options_;
  const df::Clock& clock_;

  mutable std::shared_mutex mu_;
  std::map<EdgeKey, ProbeEdge> edges_;                         // GUARDED_BY(mu_)
  std::unordered_map<std::string, std::set<std::string>> in_;  // GUARDED_BY(mu_) dst -> srcs
  std::unordered_map<std::string, uint64_t> probed_counts_;    // GUARDED_BY(mu_)
  std::unordered_map<std::string, Failures> failures_;         // GUARDED_BY(mu_)
  // Hosts removed recently, with when: their late samples and stale store copies are ignored.
  std::unordered_map<std::string, df::Clock::TimePoint> tombstones_;  // GUARDED_BY(mu_)
  std::vector<std::string> pending_deletes_;                          // GUARDED_BY(mu_)
  std::optional<df::Clock::TimePoint> store_failed_at_;               // GUARDED_BY(mu_)

  std::mutex rng_mu_;
  std::mt19937_64 rng_;  // GUARDED_BY(rng_mu_)

  std::mutex run_mu_;
  std::condition_variable run_cv_;
  bool stop_ = false;  // GUARDED_BY(run_mu_)
  std::thread thread_;
};

}  // namespace df::scheduler
