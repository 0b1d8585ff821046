#include "scheduler/default_evaluator.h"

#include <algorithm>
#include <cmath>
#include <string_view>

namespace df::scheduler {
namespace {

constexpr double kFreeUploadWeight = 0.30;
constexpr double kPiecesWeight = 0.20;
constexpr double kSuccessRateWeight = 0.15;
constexpr double kHostTypeWeight = 0.15;
constexpr double kIdcWeight = 0.10;
constexpr double kLocationWeight = 0.10;

bool CanServe(PeerState state) {
  return state == PeerState::kRunning || state == PeerState::kBackToSource ||
         state == PeerState::kSucceeded;
}

// Splits "a|b|c" into at most `depth` elements.
std::vector<std::string_view> LocationElements(std::string_view location, size_t depth) {
  std::vector<std::string_view> out;
  while (!location.empty() && out.size() < depth) {
    size_t bar = location.find('|');
    out.push_back(location.substr(0, bar));
    if (bar == std::string_view::npos) break;
    location.remove_prefix(bar + 1);
  }
  return out;
}

}  // namespace

bool DefaultEvaluator::IsLatestCostOutlier(const std::vector<uint64_t>& costs_ns) {
  if (costs_ns.size() < 3) return false;  // latest + at least 2 earlier samples
  const size_t n = costs_ns.size() - 1;   // earlier samples
  const double latest = static_cast<double>(costs_ns.back());
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += static_cast<double>(costs_ns[i]);
  const double mean = sum / static_cast<double>(n);
  if (n < kMinSamplesForStddev) return latest > 20 * mean;
  double sq = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(costs_ns[i]) - mean;
    sq += d * d;
  }
  const double stddev = std::sqrt(sq / static_cast<double>(n));
  // The 2x floor keeps ordinary jitter over a very steady history from counting as "far".
  return latest > mean + 3 * stddev && latest > 2 * mean;
}

bool DefaultEvaluator::IsBadParent(const ChildInfo& child, const ParentInfo& parent) {
  if (!CanServe(parent.state)) return true;
  if (child.bad_parent_ids.contains(parent.peer_id)) return true;
  return IsLatestCostOutlier(parent.piece_costs_ns);
}

double DefaultEvaluator::FreeUploadScore(const ChildInfo& child, const ParentInfo& parent) {
  if (parent.upload_capacity > 0 && child.download_capacity > 0) {
    // The share of what the child can receive that this parent's free upload covers.
    const uint64_t used = std::min(parent.upload_allotted, parent.upload_capacity);
    const double free = static_cast<double>(parent.upload_capacity - used);
    return std::min(1.0, free / static_cast<double>(child.download_capacity));
  }
  const uint32_t limit = parent.concurrent_upload_limit > 0 ? parent.concurrent_upload_limit
                                                            : kDefaultConcurrentUploadLimit;
  if (parent.concurrent_uploads >= limit) return 0;
  return static_cast<double>(limit - parent.concurrent_uploads) / limit;
}

double DefaultEvaluator::PiecesScore(const ParentInfo& parent, const TaskView& task) {
  if (parent.state == PeerState::kSucceeded) return 1;
  if (task.total_pieces > 0) {
    return std::min(1.0, static_cast<double>(parent.finished_pieces) / task.total_pieces);
  }
  return 1.0 - 1.0 / (1.0 + parent.finished_pieces);
}

double DefaultEvaluator::SuccessRateScore(const ParentInfo& parent) {
  const uint64_t total = parent.upload_success + parent.upload_failure;
  if (total == 0) return 1;
  return static_cast<double>(parent.upload_success) / static_cast<double>(total);
}

double DefaultEvaluator::HostTypeScore(const ParentInfo& parent, uint32_t max_normal_pieces) {
  if (!parent.is_seed) return 0.6;
  // A seed still fetching from the origin will produce pieces nobody has, even with 0 now.
  const bool has_unique_pieces =
      parent.finished_pieces > max_normal_pieces || (parent.state == PeerState::kBackToSource);
  return has_unique_pieces ? 1.0 : 0.2;
}

double DefaultEvaluator::IdcScore(const ChildInfo& child, const ParentInfo& parent) {
  return !child.idc.empty() && child.idc == parent.idc ? 1 : 0;
}

double DefaultEvaluator::LocationScore(const ChildInfo& child, const ParentInfo& parent) {
  auto a = LocationElements(child.location, kLocationDepth);
  auto b = LocationElements(parent.location, kLocationDepth);
  size_t common = 0;
  while (common < a.size() && common < b.size() && a[common] == b[common] && !a[common].empty()) {
    ++common;
  }
  return static_cast<double>(common) / kLocationDepth;
}

double DefaultEvaluator::Score(const ChildInfo& child, const ParentInfo& parent,
                               const TaskView& task, uint32_t max_normal_pieces) {
  return kFreeUploadWeight * FreeUploadScore(child, parent) +
         kPiecesWeight * PiecesScore(parent, task) + kSuccessRateWeight * SuccessRateScore(parent) +
         kHostTypeWeight * HostTypeScore(parent, max_normal_pieces) +
         kIdcWeight * IdcScore(child, parent) + kLocationWeight * LocationScore(child, parent);
}

std::vector<ScoredParent> DefaultEvaluator::Evaluate(const ChildInfo& child,
                                                     const std::vector<ParentInfo>& candidates,
                                                     const TaskView& task) const {
  std::vector<size_t> good;
  uint32_t max_normal_pieces = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ParentInfo& p = candidates[i];
    if (IsBadParent(child, p)) continue;
    good.push_back(i);
    if (!p.is_seed) {
      // A succeeded normal peer holds every piece, whatever its count says.
      uint32_t pieces = p.state == PeerState::kSucceeded && task.total_pieces > 0
                            ? task.total_pieces
                            : p.finished_pieces;
      max_normal_pieces = std::max(max_normal_pieces, pieces);
    }
  }
  std::vector<ScoredParent> out;
  out.reserve(good.size());
  for (size_t i : good) {
    out.push_back({i, Score(child, candidates[i], task, max_normal_pieces)});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const ScoredParent& a, const ScoredParent& b) { return a.score > b.score; });
  return out;
}

}  // namespace df::scheduler
