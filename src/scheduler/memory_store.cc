#include "scheduler/memory_store.h"

#include <algorithm>

namespace df::scheduler {

Status MemoryStore::PutHost(const df::scheduler::v1::Host& host, int64_t now_unix_ms) {
  std::lock_guard lock(mu_);
  hosts_[host.id()] = StoredHost{host, now_unix_ms};
  return Status::Ok();
}

Status MemoryStore::DeleteHost(const std::string& host_id) {
  std::lock_guard lock(mu_);
  hosts_.erase(host_id);
  probed_counts_.erase(host_id);
  capacities_.erase(host_id);
  std::erase_if(probes_, [&](const auto& e) {
    return e.first.first == host_id || e.first.second == host_id;
  });
  std::erase_if(
      pairs_, [&](const auto& e) { return e.first.first == host_id || e.first.second == host_id; });
  return Status::Ok();
}

Result<std::vector<StoredHost>> MemoryStore::ListHosts() {
  std::lock_guard lock(mu_);
  std::vector<StoredHost> out;
  out.reserve(hosts_.size());
  for (const auto& [id, h] : hosts_) out.push_back(h);
  return out;
}

Status MemoryStore::AddProbe(const std::string& src_host_id, const std::string& dst_host_id,
                             const ProbeSample& sample, size_t queue_length) {
  std::lock_guard lock(mu_);
  ProbeEdge& e = probes_[{src_host_id, dst_host_id}];
  if (e.samples.empty() && e.created_unix_ms == 0) {
    e.src_host_id = src_host_id;
    e.dst_host_id = dst_host_id;
    e.created_unix_ms = sample.created_unix_ms;
  }
  e.samples.push_back(sample);
  const size_t keep = std::max<size_t>(queue_length, 1);
  if (e.samples.size() > keep) {
    e.samples.erase(e.samples.begin(), e.samples.end() - static_cast<ptrdiff_t>(keep));
  }
  e.average_rtt_ns = MovingAverageRtt(e.samples);
  e.updated_unix_ms = sample.created_unix_ms;
  return Status::Ok();
}

Status MemoryStore::AddProbedCount(const std::string& host_id, uint64_t n) {
  std::lock_guard lock(mu_);
  probed_counts_[host_id] += n;
  return Status::Ok();
}

Result<std::vector<uint64_t>> MemoryStore::ProbedCounts(const std::vector<std::string>& host_ids) {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> out;
  out.reserve(host_ids.size());
  for (const auto& id : host_ids) {
    auto it = probed_counts_.find(id);
    out.push_back(it == probed_counts_.end() ? 0 : it->second);
  }
  return out;
}

Result<std::vector<ProbeEdge>> MemoryStore::ListProbes(const std::string& src_host_id) {
  std::lock_guard lock(mu_);
  std::vector<ProbeEdge> out;
  auto it = src_host_id.empty() ? probes_.begin() : probes_.lower_bound({src_host_id, ""});
  for (; it != probes_.end(); ++it) {
    if (!src_host_id.empty() && it->first.first != src_host_id) break;
    out.push_back(it->second);
  }
  return out;
}

Status MemoryStore::PutCapacities(const std::vector<LearnedCapacity>& capacities) {
  std::lock_guard lock(mu_);
  for (const auto& c : capacities) capacities_[c.host_id] = c;
  return Status::Ok();
}

Result<std::vector<LearnedCapacity>> MemoryStore::ListCapacities() {
  std::lock_guard lock(mu_);
  std::vector<LearnedCapacity> out;
  for (const auto& [id, c] : capacities_) out.push_back(c);
  return out;
}

Status MemoryStore::PutPairEstimates(const std::vector<PairEstimate>& estimates) {
  std::lock_guard lock(mu_);
  for (const auto& e : estimates) pairs_[{e.child_host_id, e.parent_host_id}] = e;
  return Status::Ok();
}

Result<std::vector<PairEstimate>> MemoryStore::ListPairEstimates() {
  std::lock_guard lock(mu_);
  std::vector<PairEstimate> out;
  for (const auto& [k, e] : pairs_) out.push_back(e);
  return out;
}

Status MemoryStore::AppendRecords(const std::vector<BandwidthRecord>& records, size_t max_records) {
  std::lock_guard lock(mu_);
  for (const auto& r : records) records_.push_back(r);
  while (records_.size() > max_records) records_.pop_front();
  return Status::Ok();
}

Result<std::vector<BandwidthRecord>> MemoryStore::ListRecords(size_t limit) {
  std::lock_guard lock(mu_);
  const size_t n = std::min(limit, records_.size());
  return std::vector<BandwidthRecord>(records_.end() - static_cast<ptrdiff_t>(n), records_.end());
}

}  // namespace df::scheduler
