#include "scheduler/cost_history.h"

namespace df::scheduler {

void CostHistory::Add(uint64_t cost_ns) {
  ring_[next_] = cost_ns;
  next_ = (next_ + 1) % kCapacity;
  if (size_ < kCapacity) ++size_;
}

std::vector<uint64_t> CostHistory::Samples() const {
  std::vector<uint64_t> out;
  out.reserve(size_);
  size_t first = (next_ + kCapacity - size_) % kCapacity;
  for (size_t i = 0; i < size_; ++i) out.push_back(ring_[(first + i) % kCapacity]);
  return out;
}

}  // namespace df::scheduler
