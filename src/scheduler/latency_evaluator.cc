#include "scheduler/latency_evaluator.h"

#include <algorithm>

namespace df::scheduler {

double LatencyEvaluator::LatencyScore(int64_t rtt_ns) {
  return kReferenceRttNs / (kReferenceRttNs + static_cast<double>(std::max<int64_t>(rtt_ns, 1)));
}

double LatencyEvaluator::FailurePenalty(uint32_t probe_failures) {
  return kFailurePenalty * std::min(probe_failures, kMaxPenalizedFailures);
}

std::vector<ScoredParent> LatencyEvaluator::Evaluate(const ChildInfo& child,
                                                     const std::vector<ParentInfo>& candidates,
                                                     const TaskView& task) const {
  // The default evaluator filters and scores; this one re-weighs its scores.
  std::vector<ScoredParent> scored = DefaultEvaluator().Evaluate(child, candidates, task);
  double known_sum = 0;
  size_t known = 0;
  for (const auto& s : scored) {
    if (candidates[s.index].rtt_ns > 0) {
      known_sum += LatencyScore(candidates[s.index].rtt_ns);
      ++known;
    }
  }
  const double neutral = known > 0 ? known_sum / static_cast<double>(known) : 0.5;
  for (auto& s : scored) {
    const ParentInfo& p = candidates[s.index];
    const double latency = p.rtt_ns > 0 ? LatencyScore(p.rtt_ns) : neutral;
    s.score =
        kDefaultWeight * s.score + kLatencyWeight * latency - FailurePenalty(p.probe_failures);
  }
  // Ties keep the default evaluator's order, which keeps the candidates' (random) order.
  std::stable_sort(scored.begin(), scored.end(),
                   [](const ScoredParent& a, const ScoredParent& b) { return a.score > b.score; });
  return scored;
}

}  // namespace df::scheduler
