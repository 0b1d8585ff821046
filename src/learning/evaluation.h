// Error metrics of bandwidth predictions, and the per-pair history baseline the GNN must beat.
// libtorch-free. Thread-compatible.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <unordered_map>

#include "learning/host_graph.h"

namespace df::learning {

// Errors of predictions against actual bandwidths (bytes/s), one value per held-out pair.
struct ErrorMetrics {
  double mape = 0;  // mean of |predicted - actual| / actual
  double mae = 0;   // mean of |predicted - actual|, bytes/s
  double rmse = 0;  // sqrt(mean of (predicted - actual)^2), bytes/s
  size_t count = 0;
};
// Pairs with actual <= 0 are skipped. Spans of equal length.
ErrorMetrics ComputeErrors(std::span<const double> predicted, std::span<const double> actual);

// Baseline (a): per-pair history, falling back to per-host means, then the global mean.
//   - a pair seen in the graph: its own bandwidth;
//   - else min(child's download mean, parent's upload mean) when both are known (a transfer is
//     bounded by both ends), the one known otherwise (means are geometric, over its pairs);
//   - else the geometric mean of every pair.
// Fitted on a HostGraph (the training graph: held-out pairs are not in it).
class HistoryBaseline {
 public:
  explicit HistoryBaseline(const HostGraph& graph);
  double Predict(HostIndex child, HostIndex parent) const;

 private:
  const HostGraph& graph_;
  std::vector<double> download_mean_;  // per host, 0 = none
  std::vector<double> upload_mean_;
  double global_mean_ = 0;
};

}  // namespace df::learning
