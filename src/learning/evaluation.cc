#include "learning/evaluation.h"

#include <algorithm>
#include <cmath>

namespace df::learning {

ErrorMetrics ComputeErrors(std::span<const double> predicted, std::span<const double> actual) {
  ErrorMetrics m;
  double ape = 0, ae = 0, se = 0;
  for (size_t i = 0; i < std::min(predicted.size(), actual.size()); ++i) {
    if (!(actual[i] > 0)) continue;
    const double err = predicted[i] - actual[i];
    ape += std::abs(err) / actual[i];
    ae += std::abs(err);
    se += err * err;
    ++m.count;
  }
  if (m.count == 0) return m;
  const auto n = static_cast<double>(m.count);
  m.mape = ape / n;
  m.mae = ae / n;
  m.rmse = std::sqrt(se / n);
  return m;
}

HistoryBaseline::HistoryBaseline(const HostGraph& graph)
    : graph_(graph), download_mean_(graph.size(), 0), upload_mean_(graph.size(), 0) {
  double global_sum = 0;
  size_t global_n = 0;
  for (uint32_t v = 0; v < graph.size(); ++v) {
    double down_sum = 0, up_sum = 0;
    int downs = 0, ups = 0;
    for (const GraphEdge& e : graph.edges(static_cast<HostIndex>(v))) {
      if (double bw = e.from_other.bandwidth_bytes_per_sec(); bw > 0) {
        down_sum += std::log(bw), ++downs;
        global_sum += std::log(bw), ++global_n;
      }
      if (double bw = e.to_other.bandwidth_bytes_per_sec(); bw > 0) up_sum += std::log(bw), ++ups;
    }
    if (downs > 0) download_mean_[v] = std::exp(down_sum / downs);
    if (ups > 0) upload_mean_[v] = std::exp(up_sum / ups);
  }
  global_mean_ = global_n == 0 ? 0 : std::exp(global_sum / static_cast<double>(global_n));
}

double HistoryBaseline::Predict(HostIndex child, HostIndex parent) const {
  if (const GraphEdge* e = graph_.FindEdge(child, parent); e != nullptr) {
    if (double bw = e->from_other.bandwidth_bytes_per_sec(); bw > 0) return bw;
  }
  const double down = download_mean_[Value(child)];
  const double up = upload_mean_[Value(parent)];
  if (down > 0 && up > 0) return std::min(down, up);
  if (down > 0) return down;
  if (up > 0) return up;
  return global_mean_;
}

}  // namespace df::learning
