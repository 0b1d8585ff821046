// Host groups inferred from pair bandwidth: racks or IDCs that nobody announced.
//
// When hosts do not announce an idc, the scheduler cannot keep a rack's children on the rack's
// own peers, and every child may pull across a thin rack link (docs/learning.md, "Scheduling
// gain"). An evaluator that predicts the bandwidth of (child, parent) pairs sees the structure
// anyway: pairs inside a rack are fast, pairs across are slow. InferHostGroups turns those
// predictions into groups that stand in for the idc (Host::inferred_group, CrossIdc).
//
// The rule, conservative by design (no group is better than a wrong one):
//   1. each unordered pair gets the geometric mean of its directions' bandwidths;
//   2. the log bandwidths are split in two classes where the between-class variance is largest
//      (Otsu); there is structure only when the fast class's mean is at least `min_ratio` times
//      the slow class's;
//   3. hosts joined by fast pairs form components (union-find); a component of two or more hosts
//      is a group when at least `min_fast_share` of the pairs known inside it are fast (a slow
//      pair inside means two groups were chained by a fast prediction between them: no groups);
//   4. there are groups only when at least two components qualify; a host in no group has none.
// A uniform network (one class), or one where bandwidth follows the parent's uplink rather than
// the pair (hetero: every child is close to the wide uplinks), gives no groups.
//
// Pure function: no state, no I/O; O(P log P) for P pairs.
#pragma once

#include <cstddef>
#include <string>
#include <unordered_map>
#include <vector>

namespace df::scheduler {

struct PairBandwidth {
  std::string child;   // host id
  std::string parent;  // host id
  double bytes_per_sec = 0;
};

struct HostGroupOptions {
  double min_ratio = 3.0;        // fast class mean / slow class mean, at least
  double min_fast_share = 0.75;  // of the known pairs inside a group
  size_t min_pairs = 6;          // fewer unordered pairs: no groups
};

// Host id -> group name ("~" + the smallest host id of the group); empty when there is no
// structure to trust. Pairs with a non-positive or non-finite bandwidth, or a host paired with
// itself, are ignored. When there are no groups and `why` is set, it gets the reason.
std::unordered_map<std::string, std::string> InferHostGroups(
    const std::vector<PairBandwidth>& pairs, const HostGroupOptions& options = {},
    std::string* why = nullptr);

}  // namespace df::scheduler
