#include "scheduler/bandwidth_records.h"

namespace df::scheduler {

void BandwidthRecords::Add(BandwidthRecord record) {
  PairKey key{record.child_host_id, record.parent_host_id};
  std::lock_guard lock(mu_);
  auto& ring = pairs_[std::move(key)];
  ring.push_back(std::move(record));
  ++record_count_;
  if (ring.size() > records_per_pair_) {
    ring.pop_front();
    --record_count_;
  }
}

std::vector<BandwidthRecord> BandwidthRecords::Pair(const std::string& child_host_id,
                                                    const std::string& parent_host_id) const {
  std::lock_guard lock(mu_);
  auto it = pairs_.find({child_host_id, parent_host_id});
  if (it == pairs_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

double BandwidthRecords::EstimateBytesPerSec(const std::string& child_host_id,
                                             const std::string& parent_host_id) const {
  std::lock_guard lock(mu_);
  auto it = pairs_.find({child_host_id, parent_host_id});
  if (it == pairs_.end()) return 0;
  double bytes = 0;
  double cost_ns = 0;
  for (const auto& r : it->second) {
    bytes += static_cast<double>(r.bytes);
    cost_ns += static_cast<double>(r.cost_ns);
  }
  return cost_ns > 0 ? bytes * 1e9 / cost_ns : 0;
}

void BandwidthRecords::RemoveHost(const std::string& host_id) {
  std::lock_guard lock(mu_);
  for (auto it = pairs_.begin(); it != pairs_.end();) {
    if (it->first.first == host_id || it->first.second == host_id) {
      record_count_ -= it->second.size();
      it = pairs_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t BandwidthRecords::pair_count() const {
  std::lock_guard lock(mu_);
  return pairs_.size();
}

size_t BandwidthRecords::record_count() const {
  std::lock_guard lock(mu_);
  return record_count_;
}

}  // namespace df::scheduler
