// Store: what the schedulers of a cluster share: hosts, latency probes, learned capacities, pair
// bandwidth estimates and the record dataset. Tasks, peers, the DAG and bookings are not here:
// they are local to the scheduler a task hashes to (resource.h).
//
// Two implementations:
//   "memory"  one process (the embedded default): NewStore("") or NewStore("memory").
//   "redis"   several schedulers on one Redis: NewStore("redis://HOST:PORT/DB"). Probe keys use
//             Dragonfly's layout so its tools can read ours; every key is listed in
//             docs/measurement.md.
//
// Calls may do network I/O (Redis): the scheduler never calls a Store under its resource mutex.
// A failed call returns Unavailable and changes nothing the caller relies on; the caller keeps
// working from what it already has (network_view.h keeps the local copy).
//
// Thread-safe: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "scheduler.pb.h"
#include "scheduler/bandwidth_records.h"

namespace df::scheduler {

struct StoredHost {
  df::scheduler::v1::Host info;  // as last announced to any scheduler
  int64_t updated_unix_ms = 0;
};

struct ProbeSample {
  int64_t rtt_ns = 0;
  int64_t created_unix_ms = 0;
};

// The average RTT of an edge's samples (oldest first), as Dragonfly computes it so that its
// tools and ours read the same value: the first sample, then each later one weighted 1 - w
// against w for the average so far (w = kRttAverageWeight). A recent sample counts most: a
// route change shows at the next probe, and the older samples only damp a one-off outlier.
inline constexpr double kRttAverageWeight = 0.1;
int64_t MovingAverageRtt(const std::vector<ProbeSample>& samples);

// The probes of one (src, dst) pair: Dragonfly's "network topology" edge.
struct ProbeEdge {
  std::string src_host_id;
  std::string dst_host_id;
  int64_t average_rtt_ns = 0;        // MovingAverageRtt(samples)
  std::vector<ProbeSample> samples;  // the last probe_queue_length, oldest first
  int64_t created_unix_ms = 0;       // first sample
  int64_t updated_unix_ms = 0;       // last sample
};

// A host's capacity as learned from piece records (capacity_estimator.h), bytes/s; 0 = unknown.
struct LearnedCapacity {
  std::string host_id;
  uint64_t upload_bytes_per_sec = 0;
  uint64_t download_bytes_per_sec = 0;
  int64_t updated_unix_ms = 0;
};

// Bandwidth of one (child host, parent host) pair as learned from piece records.
struct PairEstimate {
  std::string child_host_id;
  std::string parent_host_id;
  double bytes_per_sec = 0;
  uint64_t records = 0;  // records behind the estimate
  int64_t updated_unix_ms = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual std::string_view name() const = 0;  // "memory", "redis"

  // Ok when the store answers now (Redis: PING); Unavailable otherwise.
  virtual Status Ping() = 0;

  // Hosts. PutHost adds or replaces a host by id. DeleteHost removes the host, its probes (both
  // directions), its probed count, its learned capacity and its pair estimates; unknown ids are
  // Ok. ListHosts returns every stored host, in no particular order.
  virtual Status PutHost(const df::scheduler::v1::Host& host, int64_t now_unix_ms) = 0;
  virtual Status DeleteHost(const std::string& host_id) = 0;
  virtual Result<std::vector<StoredHost>> ListHosts() = 0;

  // Probes. AddProbe appends a sample to the (src, dst) edge, keeps the last `queue_length`
  // samples and recomputes the edge's average. AddProbedCount adds `n` to how often `host_id`
  // was assigned as a probe target (the least probed are assigned first). A failed probe is
  // recorded by the caller as it sees fit (not stored here: reachability is a local judgement).
  virtual Status AddProbe(const std::string& src_host_id, const std::string& dst_host_id,
                          const ProbeSample& sample, size_t queue_length) = 0;
  virtual Status AddProbedCount(const std::string& host_id, uint64_t n) = 0;
  // Probed counts of `host_ids`, in the same order (0 for a host never probed).
  virtual Result<std::vector<uint64_t>> ProbedCounts(const std::vector<std::string>& host_ids) = 0;
  // Every stored edge; with `src_host_id` non-empty, only the edges from it.
  virtual Result<std::vector<ProbeEdge>> ListProbes(const std::string& src_host_id = "") = 0;

  // Learned capacities and pair estimates: the latest value per host / pair replaces the older.
  virtual Status PutCapacities(const std::vector<LearnedCapacity>& capacities) = 0;
  virtual Result<std::vector<LearnedCapacity>> ListCapacities() = 0;
  virtual Status PutPairEstimates(const std::vector<PairEstimate>& estimates) = 0;
  virtual Result<std::vector<PairEstimate>> ListPairEstimates() = 0;

  // The record dataset: one record per piece a child got from a parent, bounded to the newest
  // `max_records` (older ones are dropped). ListRecords returns at most `limit`, newest last.
  virtual Status AppendRecords(const std::vector<BandwidthRecord>& records, size_t max_records) = 0;
  virtual Result<std::vector<BandwidthRecord>> ListRecords(size_t limit) = 0;
};

// The store `url` names: "" or "memory" for the in-process store, "redis://HOST:PORT[/DB]"
// (optionally "redis://:PASSWORD@HOST:PORT/DB") for Redis. InvalidArgument for another scheme or
// a malformed URL. A Redis store that cannot connect yet is still returned (it reconnects on
// use); Ping() tells whether it is up.
Result<std::unique_ptr<Store>> NewStore(std::string_view url);

}  // namespace df::scheduler
