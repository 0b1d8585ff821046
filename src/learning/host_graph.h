// HostGraph: the records dataset as a graph for learning. Nodes are hosts; an edge joins two
// hosts that probed each other (RTT) or exchanged pieces (transfers, each direction on its own).
// Samples are the observed (child, parent) pairs labelled with their bandwidth.
//
// Held-out evaluation: Build() can leave out the transfers of some unordered host pairs (the
// validation pairs), so that a model is trained and its features are built on a graph that never
// saw them. Probes of those pairs stay: a probe is not a label.
//
// Immutable after Build (AddHost aside); thread-safe for concurrent readers.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "learning/dataset.h"

namespace df::learning {

// Index of a host in a HostGraph (not an id, not a count).
enum class HostIndex : uint32_t {};
inline uint32_t Value(HostIndex h) { return static_cast<uint32_t>(h); }

struct GraphHost {
  HostRecord record;
  uint32_t id_hash = 0;                       // FNV-1a of the id (neighbour sampling)
  uint32_t idc_hash = 0;                      // FNV-1a of idc (0 when idc is empty)
  uint32_t location_hash = 0;                 // FNV-1a of location (0 when empty)
  std::optional<std::array<uint8_t, 16>> ip;  // parsed address (v4 mapped into v6), if any
};

// What joins host `self` (the owner of the adjacency list) to `other`.
struct GraphEdge {
  HostIndex other{};
  uint64_t rtt_ns = 0;        // probed RTT (mean of both directions when both), 0 = not probed
  TransferRecord from_other;  // pieces `self` downloaded from `other` (other was the parent)
  TransferRecord to_other;    // pieces `other` downloaded from `self`
};

// One observed (child, parent) pair and its label.
struct PairSample {
  HostIndex child{};
  HostIndex parent{};
  double bandwidth_bytes_per_sec = 0;  // total bytes / total transfer time of its pieces
  uint64_t pieces = 0;
};

class HostGraph {
 public:
  // `exclude(child_id, parent_id)` true: that transfer is left out of the graph (pass a function
  // symmetric in its arguments to hold out unordered pairs). Every host and probe is kept.
  static HostGraph Build(
      const Dataset& dataset,
      const std::function<bool(const std::string&, const std::string&)>& exclude = nullptr);

  size_t size() const { return hosts_.size(); }
  const GraphHost& host(HostIndex h) const { return hosts_[Value(h)]; }
  // Edges of `h`, sorted by the other host's index.
  std::span<const GraphEdge> edges(HostIndex h) const { return adjacency_[Value(h)]; }
  // The edge from a to b; nullptr when they share none.
  const GraphEdge* FindEdge(HostIndex a, HostIndex b) const;
  std::optional<HostIndex> Find(const std::string& id) const;
  // Adds a host the dataset did not name (no edges), or returns the existing index.
  HostIndex AddHost(const HostRecord& record);

 private:
  std::vector<GraphHost> hosts_;
  std::vector<std::vector<GraphEdge>> adjacency_;
  std::unordered_map<std::string, HostIndex> by_id_;
};

// Every (child, parent) transfer of `dataset` whose hosts are in `graph`, as a sample (ordered by
// child then parent id). Pairs with a zero bandwidth are skipped.
std::vector<PairSample> PairSamples(const Dataset& dataset, const HostGraph& graph);

// Deterministic split by unordered pair: true for about `fraction` of all pairs, the same for
// (a, b) and (b, a), for a given seed.
bool IsHeldOutPair(const std::string& a, const std::string& b, uint64_t seed, double fraction);

// FNV-1a (32-bit) of `s`: the hash behind the idc and location buckets of the features. Stable
// across builds and platforms (part of the feature contract).
uint32_t Fnv1a32(std::string_view s);

}  // namespace df::learning
