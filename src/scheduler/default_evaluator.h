// The "default" evaluator: rule based, no measurements beyond piece reports.
//
// Bad-parent filter (a candidate is dropped when any holds):
//   - its state cannot serve (Pending, Failed, Left);
//   - the child reported it bad (RescheduleRequest.bad_parent_ids or PieceFailed temporary=false);
//   - its latest piece cost is far above its own history: with >= kMinSamplesForStddev earlier
//     samples, latest > mean + 3 * stddev of those and latest > 2 * mean (a very steady history
//     must not turn ordinary jitter into "far"); with 2..kMinSamplesForStddev-1 earlier
//     samples, latest > 20 * their mean (too few samples for a stddev to mean much).
//
// Score of a good candidate, a weighted sum of terms in [0, 1] (weights sum to 1):
//   0.30 free upload   (limit - uploads) / limit, limit defaulting to 16 when unknown
//   0.20 pieces        finished / total, or 1 - 1/(1 + finished) while the size is unknown
//   0.15 success rate  success / (success + failure); 1 with no reports yet
//   0.15 host type     seed with pieces nobody else among the candidates has: 1.0;
//                      normal peer: 0.6; seed otherwise: 0.2 (fallback, keep its uplink for
//                      unique pieces)
//   0.10 idc           1 when both idcs are set and equal
//   0.10 location      matching leading elements of "country|region|zone" / 3
// Ties keep the candidates' order (the scheduler samples them randomly).
#pragma once

#include "scheduler/evaluator.h"

namespace df::scheduler {

// Stateless, thread-safe.
class DefaultEvaluator : public Evaluator {
 public:
  static constexpr std::string_view kName = "default";
  static constexpr uint32_t kDefaultConcurrentUploadLimit = 16;
  static constexpr size_t kMinSamplesForStddev = 10;
  static constexpr size_t kLocationDepth = 3;

  std::string_view name() const override { return kName; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override;

  // The filter and the score, public so the rules can be specified one by one in tests.
  static bool IsBadParent(const ChildInfo& child, const ParentInfo& parent);
  static bool IsLatestCostOutlier(const std::vector<uint64_t>& costs_ns);
  // `max_normal_pieces`: most finished pieces among the non-seed candidates.
  static double Score(const ChildInfo& child, const ParentInfo& parent, const TaskView& task,
                      uint32_t max_normal_pieces);
  static double FreeUploadScore(const ChildInfo& child, const ParentInfo& parent);
  static double PiecesScore(const ParentInfo& parent, const TaskView& task);
  static double SuccessRateScore(const ParentInfo& parent);
  static double HostTypeScore(const ParentInfo& parent, uint32_t max_normal_pieces);
  static double IdcScore(const ChildInfo& child, const ParentInfo& parent);
  static double LocationScore(const ChildInfo& child, const ParentInfo& parent);
};

}  // namespace df::scheduler
