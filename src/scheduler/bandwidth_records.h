// Bandwidth records: one per piece a child downloaded from a parent (bytes, cost, time), kept per
// (child host, parent host) pair in a bounded ring, so memory is O(pairs * capacity).
//
// This is the raw material for per-pair bandwidth estimates and for the trainer's dataset. It is
// the one class that later moves behind the Store interface (memory / Redis); keep it small.
// Thread-safe (one internal mutex; callers may hold the Scheduler's mutex, this lock is a leaf).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace df::scheduler {

struct BandwidthRecord {
  std::string child_host_id;
  std::string parent_host_id;
  uint64_t bytes = 0;
  uint64_t cost_ns = 0;
  int64_t unix_ms = 0;  // when the piece finished (scheduler's wall clock)
};

class BandwidthRecords {
 public:
  explicit BandwidthRecords(size_t records_per_pair = 64) : records_per_pair_(records_per_pair) {}

  // Appends a record; the pair's oldest record is dropped when its ring is full.
  void Add(BandwidthRecord record);

  // The pair's records, oldest first; empty for an unknown pair.
  std::vector<BandwidthRecord> Pair(const std::string& child_host_id,
                                    const std::string& parent_host_id) const;

  // Total bytes / total cost over the pair's records, in bytes per second; 0 without records.
  double EstimateBytesPerSec(const std::string& child_host_id,
                             const std::string& parent_host_id) const;

  // Drops every pair where `host_id` is the child or the parent (the host is gone).
  void RemoveHost(const std::string& host_id);

  size_t pair_count() const;
  size_t record_count() const;

 private:
  using PairKey = std::pair<std::string, std::string>;  // (child host, parent host)

  const size_t records_per_pair_;
  mutable std::mutex mu_;
  std::map<PairKey, std::deque<BandwidthRecord>> pairs_;  // GUARDED_BY(mu_)
  size_t record_count_ = 0;                               // GUARDED_BY(mu_)
};

}  // namespace df::scheduler
