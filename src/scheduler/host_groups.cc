#include "scheduler/host_groups.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <map>
#include <numeric>
#include <utility>

namespace df::scheduler {
namespace {

// Union-find over host indices, path halving.
class Components {
 public:
  explicit Components(size_t n) : parent_(n) { std::iota(parent_.begin(), parent_.end(), 0); }
  size_t Find(size_t v) {
    while (parent_[v] != v) v = parent_[v] = parent_[parent_[v]];
    return v;
  }
  void Join(size_t a, size_t b) { parent_[Find(a)] = Find(b); }

 private:
  std::vector<size_t> parent_;
};

// The threshold between the slow and the fast class of sorted log values (Otsu's split), or
// NaN when the classes are less than log(min_ratio) apart.
double SplitThreshold(const std::vector<double>& sorted, double min_ratio) {
  const size_t n = sorted.size();
  std::vector<double> prefix(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + sorted[i];
  double best = -1;
  size_t split = 0;
  for (size_t k = 1; k < n; ++k) {  // slow: [0, k), fast: [k, n)
    if (sorted[k] == sorted[k - 1]) continue;
    const double w0 = static_cast<double>(k);
    const double w1 = static_cast<double>(n - k);
    const double m0 = prefix[k] / w0;
    const double m1 = (prefix[n] - prefix[k]) / w1;
    const double between = w0 * w1 * (m1 - m0) * (m1 - m0);
    if (between > best) {
      best = between;
      split = k;
    }
  }
  if (split == 0) return std::nan("");
  const double m0 = prefix[split] / static_cast<double>(split);
  const double m1 = (prefix[n] - prefix[split]) / static_cast<double>(n - split);
  if (m1 - m0 < std::log(min_ratio)) return std::nan("");
  return (sorted[split - 1] + sorted[split]) / 2;
}

}  // namespace

std::unordered_map<std::string, std::string> InferHostGroups(
    const std::vector<PairBandwidth>& pairs, const HostGroupOptions& options, std::string* why) {
  std::unordered_map<std::string, std::string> groups;
  auto none = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return std::unordered_map<std::string, std::string>{};
  };
  // Hosts by index; unordered pairs (low index, high index) -> sum of log bandwidths, count.
  std::unordered_map<std::string, size_t> index;
  std::vector<std::string> hosts;
  auto index_of = [&](const std::string& id) {
    auto [it, added] = index.emplace(id, hosts.size());
    if (added) hosts.push_back(id);
    return it->second;
  };
  std::map<std::pair<size_t, size_t>, std::pair<double, int>> logs;
  for (const PairBandwidth& p : pairs) {
    if (!(p.bytes_per_sec > 0) || !std::isfinite(p.bytes_per_sec) || p.child.empty() ||
        p.parent.empty() || p.child == p.parent) {
      continue;
    }
    size_t a = index_of(p.child);
    size_t b = index_of(p.parent);
    if (a > b) std::swap(a, b);
    auto& [sum, count] = logs[{a, b}];
    sum += std::log(p.bytes_per_sec);
    ++count;
  }
  if (logs.size() < options.min_pairs) {
    return none(fmt::format("{} host pairs, fewer than {}", logs.size(), options.min_pairs));
  }
  std::vector<double> values;
  values.reserve(logs.size());
  for (const auto& [key, v] : logs) values.push_back(v.first / v.second);
  std::vector<double> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  const double threshold = SplitThreshold(sorted, options.min_ratio);
  if (std::isnan(threshold)) {
    return none(fmt::format("no fast and slow pairs {:.1f}x apart", options.min_ratio));
  }

  Components components(hosts.size());
  size_t i = 0;
  for (const auto& [key, v] : logs) {
    if (values[i++] > threshold) components.Join(key.first, key.second);
  }
  // Per component root: hosts, and the fast and all known pairs inside it.
  struct Component {
    size_t hosts = 0;
    size_t fast = 0;
    size_t known = 0;
    std::string name;  // the smallest host id
  };
  std::unordered_map<size_t, Component> by_root;
  for (size_t h = 0; h < hosts.size(); ++h) {
    Component& c = by_root[components.Find(h)];
    ++c.hosts;
    if (c.name.empty() || hosts[h] < c.name) c.name = hosts[h];
  }
  i = 0;
  for (const auto& [key, v] : logs) {
    const bool fast = values[i++] > threshold;
    const size_t root = components.Find(key.first);
    if (root != components.Find(key.second)) continue;
    Component& c = by_root[root];
    ++c.known;
    if (fast) ++c.fast;
  }
  size_t qualified = 0;
  for (const auto& [root, c] : by_root) {
    if (c.hosts < 2) continue;
    if (static_cast<double>(c.fast) < options.min_fast_share * static_cast<double>(c.known)) {
      // A slow pair inside: groups chained together, trust none.
      return none(fmt::format("{} slow of {} pairs inside the hosts joined to {}", c.known - c.fast,
                              c.known, c.name));
    }
    ++qualified;
  }
  if (qualified < 2) return none(fmt::format("{} group(s) of two or more hosts", qualified));
  for (size_t h = 0; h < hosts.size(); ++h) {
    const Component& c = by_root[components.Find(h)];
    if (c.hosts >= 2) groups.emplace(hosts[h], "~" + c.name);
  }
  return groups;
}

}  // namespace df::scheduler
