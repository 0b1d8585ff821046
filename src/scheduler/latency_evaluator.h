// The "latency" evaluator: the default evaluator plus what latency probes measured
// (network_topology.h, docs/measurement.md "The latency evaluator").
//
// Same bad-parent filter as "default". Score of a good candidate:
//   0.80 * default score (default_evaluator.h)
// + 0.20 * latency term    kReferenceRttNs / (kReferenceRttNs + rtt): 1 ms -> 0.5, 0.1 ms -> 0.91,
//                          10 ms -> 0.09. A candidate never probed (rtt_ns 0) gets the mean term
//                          of the probed candidates (0.5 when none is): unknown is neutral, it
//                          neither wins nor loses against the others.
// - 0.10 per failed probe of the parent's host since its last success, at most
//        kMaxPenalizedFailures (an unreachable parent loses 0.3: it still serves when nobody
//        else can, since a probe fails for reasons piece transfers may not share, e.g. a
//        firewall on the piece port's handshake path).
// Reads only ParentInfo: no I/O.
#pragma once

#include "scheduler/default_evaluator.h"

namespace df::scheduler {

// Stateless, thread-safe.
class LatencyEvaluator : public Evaluator {
 public:
  static constexpr std::string_view kName = "latency";
  static constexpr double kDefaultWeight = 0.80;
  static constexpr double kLatencyWeight = 0.20;
  static constexpr double kReferenceRttNs = 1e6;  // 1 ms scores 0.5
  static constexpr double kFailurePenalty = 0.10;
  static constexpr uint32_t kMaxPenalizedFailures = 3;

  std::string_view name() const override { return kName; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override;

  // The latency term of a probed RTT, in (0, 1]; rtt_ns must be > 0.
  static double LatencyScore(int64_t rtt_ns);
  static double FailurePenalty(uint32_t probe_failures);
};

}  // namespace df::scheduler
