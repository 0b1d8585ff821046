// MemoryStore: the Store of a single scheduler process (the embedded default). Everything lives
// in maps behind one mutex; nothing survives a restart (the hosts re-announce, the probes and
// records are measured again).
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "scheduler/store.h"

namespace df::scheduler {

// Thread-safe (one internal mutex).
class MemoryStore final : public Store {
 public:
  std::string_view name() const override { return "memory"; }
  Status Ping() override { return Status::Ok(); }

  Status PutHost(const df::scheduler::v1::Host& host, int64_t now_unix_ms) override;
  Status DeleteHost(const std::string& host_id) override;
  Result<std::vector<StoredHost>> ListHosts() override;

  Status AddProbe(const std::string& src_host_id, const std::string& dst_host_id,
                  const ProbeSample& sample, size_t queue_length) override;
  Status AddProbedCount(const std::string& host_id, uint64_t n) override;
  Result<std::vector<uint64_t>> ProbedCounts(const std::vector<std::string>& host_ids) override;
  Result<std::vector<ProbeEdge>> ListProbes(const std::string& src_host_id) override;

  Status PutCapacities(const std::vector<LearnedCapacity>& capacities) override;
  Result<std::vector<LearnedCapacity>> ListCapacities() override;
  Status PutPairEstimates(const std::vector<PairEstimate>& estimates) override;
  Result<std::vector<PairEstimate>> ListPairEstimates() override;

  Status AppendRecords(const std::vector<BandwidthRecord>& records, size_t max_records) override;
  Result<std::vector<BandwidthRecord>> ListRecords(size_t limit) override;

 private:
  using Pair = std::pair<std::string, std::string>;

  std::mutex mu_;
  std::unordered_map<std::string, StoredHost> hosts_;            // GUARDED_BY(mu_)
  std::map<Pair, ProbeEdge> probes_;                             // GUARDED_BY(mu_), (src, dst)
  std::unordered_map<std::string, uint64_t> probed_counts_;      // GUARDED_BY(mu_)
  std::unordered_map<std::string, LearnedCapacity> capacities_;  // GUARDED_BY(mu_)
  std::map<Pair, PairEstimate> pairs_;                           // GUARDED_BY(mu_), (child, parent)
  std::deque<BandwidthRecord> records_;                          // GUARDED_BY(mu_), oldest first
};

}  // namespace df::scheduler
