// The most recent piece costs of one parent: how long each piece it served took, in ns.
// Bounded (a ring of kCapacity samples), so memory per peer is constant. Value type, not
// thread-safe (owned by a Peer under the Scheduler's mutex).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace df::scheduler {

class CostHistory {
 public:
  static constexpr size_t kCapacity = 64;

  void Add(uint64_t cost_ns);
  size_t size() const { return size_; }
  // Oldest first; the last element is the latest cost.
  std::vector<uint64_t> Samples() const;

 private:
  std::array<uint64_t, kCapacity> ring_{};
  size_t next_ = 0;  // slot of the next sample
  size_t size_ = 0;
};

}  // namespace df::scheduler
