#include "learning/host_graph.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace df::learning {
namespace {

std::optional<std::array<uint8_t, 16>> ParseIp(const std::string& ip) {
  std::array<uint8_t, 16> out{};
  in_addr v4{};
  if (inet_pton(AF_INET, ip.c_str(), &v4) == 1) {
    out[10] = 0xff;
    out[11] = 0xff;
    std::memcpy(out.data() + 12, &v4, 4);
    return out;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, ip.c_str(), &v6) == 1) {
    std::memcpy(out.data(), &v6, 16);
    return out;
  }
  return std::nullopt;
}

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

uint32_t Fnv1a32(std::string_view s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) {
    h ^= c;
    h *= 16777619u;
  }
  return h;
}

HostIndex HostGraph::AddHost(const HostRecord& record) {
  if (auto it = by_id_.find(record.id); it != by_id_.end()) return it->second;
  const auto index = static_cast<HostIndex>(hosts_.size());
  GraphHost h;
  h.record = record;
  h.id_hash = Fnv1a32(record.id);
  h.idc_hash = record.idc.empty() ? 0 : Fnv1a32(record.idc);
  h.location_hash = record.location.empty() ? 0 : Fnv1a32(record.location);
  h.ip = ParseIp(record.ip);
  hosts_.push_back(std::move(h));
  adjacency_.emplace_back();
  by_id_.emplace(record.id, index);
  return index;
}

std::optional<HostIndex> HostGraph::Find(const std::string& id) const {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return std::nullopt;
  return it->second;
}

const GraphEdge* HostGraph::FindEdge(HostIndex a, HostIndex b) const {
  const auto& list = adjacency_[Value(a)];
  auto it = std::lower_bound(list.begin(), list.end(), b, [](const GraphEdge& e, HostIndex x) {
    return Value(e.other) < Value(x);
  });
  return it != list.end() && it->other == b ? &*it : nullptr;
}

HostGraph HostGraph::Build(
    const Dataset& dataset,
    const std::function<bool(const std::string&, const std::string&)>& exclude) {
  HostGraph g;
  for (const auto& [id, record] : dataset.hosts()) g.AddHost(record);
  // Edges keyed by (self, other), built in maps then flattened in order.
  std::vector<std::unordered_map<uint32_t, GraphEdge>> edges(g.hosts_.size());
  auto edge = [&](HostIndex self, HostIndex other) -> GraphEdge& {
    GraphEdge& e = edges[Value(self)][Value(other)];
    e.other = other;
    return e;
  };
  for (const auto& [pair, t] : dataset.transfers()) {
    auto child = g.Find(pair.first);
    auto parent = g.Find(pair.second);
    if (!child || !parent || (exclude && exclude(pair.first, pair.second))) continue;
    edge(*child, *parent).from_other = t;
    edge(*parent, *child).to_other = t;
  }
  for (const auto& [pair, p] : dataset.probes()) {
    auto src = g.Find(pair.first);
    auto dst = g.Find(pair.second);
    if (!src || !dst) continue;
    auto back = dataset.probes().find({pair.second, pair.first});
    const ProbeRecord* reverse = back == dataset.probes().end() ? nullptr : &back->second;
    const uint64_t rtt =
        reverse == nullptr ? p.average_rtt_ns : (p.average_rtt_ns + reverse->average_rtt_ns) / 2;
    edge(*src, *dst).rtt_ns = rtt;
    edge(*dst, *src).rtt_ns = rtt;
  }
  for (size_t i = 0; i < edges.size(); ++i) {
    auto& list = g.adjacency_[i];
    list.reserve(edges[i].size());
    for (auto& [other, e] : edges[i]) list.push_back(e);
    std::sort(list.begin(), list.end(), [](const GraphEdge& a, const GraphEdge& b) {
      return Value(a.other) < Value(b.other);
    });
  }
  return g;
}

std::vector<PairSample> PairSamples(const Dataset& dataset, const HostGraph& graph) {
  std::vector<PairSample> samples;
  samples.reserve(dataset.transfers().size());
  for (const auto& [pair, t] : dataset.transfers()) {
    auto child = graph.Find(pair.first);
    auto parent = graph.Find(pair.second);
    const double bw = t.bandwidth_bytes_per_sec();
    if (!child || !parent || !(bw > 0)) continue;
    samples.push_back({*child, *parent, bw, t.pieces});
  }
  return samples;
}

bool IsHeldOutPair(const std::string& a, const std::string& b, uint64_t seed, double fraction) {
  const uint32_t ha = Fnv1a32(a);
  const uint32_t hb = Fnv1a32(b);
  const uint64_t key = (static_cast<uint64_t>(std::min(ha, hb)) << 32) | std::max(ha, hb);
  const uint64_t h = Mix(key ^ Mix(seed));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0) < fraction;
}

}  // namespace df::learning
