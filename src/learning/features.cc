#include "learning/features.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace df::learning {
namespace {

uint64_t Mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// True when the edge between a and b is the pair {c, p} whose transfers are hidden.
bool IsPair(HostIndex a, HostIndex b, HostIndex c, HostIndex p) {
  return (a == c && b == p) || (a == p && b == c);
}

bool SamePrefix(const GraphHost& a, const GraphHost& b) {
  if (!a.ip || !b.ip) return false;
  const bool v4 = a.ip->at(10) == 0xff && a.ip->at(11) == 0xff;
  const size_t bytes = v4 ? 15 : 8;  // /24 of a v4-mapped address, /64 of a v6 one
  return std::equal(a.ip->begin(), a.ip->begin() + bytes, b.ip->begin());
}

}  // namespace

std::vector<int64_t> InputShape(int input) {
  switch (input) {
    case 0:
      return {2, kHostFeatures};
    case 1:
      return {2, kHop1, kHostFeatures};
    case 2:
      return {2, kHop1, kEdgeFeatures};
    case 3:
      return {2, kHop1};
    case 4:
      return {2, kHop1, kHop2, kHostFeatures};
    case 5:
      return {2, kHop1, kHop2, kEdgeFeatures};
    case 6:
      return {2, kHop1, kHop2};
    case 7:
      return {kEdgeFeatures};
    default:
      return {};
  }
}

int64_t InputSize(int input) {
  int64_t n = 1;
  for (int64_t d : InputShape(input)) n *= d;
  return n;
}

float LogRate(double bytes_per_sec) {
  return bytes_per_sec > 0 ? static_cast<float>((std::log(bytes_per_sec) - 16.0) / 4.0) : 0.0f;
}

float LogRtt(uint64_t rtt_ns) {
  return static_cast<float>((std::log1p(static_cast<double>(rtt_ns) / 1000.0) - 5.0) / 3.0);
}

void InputBatch::Reserve(int64_t samples) {
  for (int i = 0; i < kNumInputs; ++i) data[i].reserve(static_cast<size_t>(samples * InputSize(i)));
}

void InputBatch::AppendFrom(const InputBatch& other, int64_t index) {
  for (int i = 0; i < kNumInputs; ++i) {
    const auto n = static_cast<size_t>(InputSize(i));
    const float* from = other.data[i].data() + static_cast<size_t>(index) * n;
    data[i].insert(data[i].end(), from, from + n);
  }
  ++batch;
}

void FeatureBuilder::HostFeatures(HostIndex v, HostIndex c, HostIndex p, float* out) const {
  std::fill(out, out + kHostFeatures, 0.0f);
  const GraphHost& h = graph_.host(v);
  if (!h.record.idc.empty()) out[h.idc_hash % kIdcBuckets] = 1;
  if (!h.record.location.empty()) out[kIdcBuckets + h.location_hash % kLocationBuckets] = 1;
  out[12] = h.record.seed ? 1 : 0;
  out[13] = LogRate(static_cast<double>(h.record.announced_upload_bytes_per_sec));
  out[14] = LogRate(static_cast<double>(h.record.announced_download_bytes_per_sec));
  out[15] = LogRate(static_cast<double>(h.record.learned_upload_bytes_per_sec));
  out[16] = LogRate(static_cast<double>(h.record.learned_download_bytes_per_sec));
  double up_log_sum = 0, down_log_sum = 0;
  int ups = 0, downs = 0, exchanged = 0, probed = 0;
  for (const GraphEdge& e : graph_.edges(v)) {
    if (e.rtt_ns > 0) ++probed;
    if (IsPair(v, e.other, c, p)) continue;
    const double up = e.to_other.bandwidth_bytes_per_sec();
    const double down = e.from_other.bandwidth_bytes_per_sec();
    if (up > 0) up_log_sum += std::log(up), ++ups;
    if (down > 0) down_log_sum += std::log(down), ++downs;
    if (up > 0 || down > 0) ++exchanged;
  }
  if (ups > 0) out[17] = 1, out[18] = LogRate(std::exp(up_log_sum / ups));
  if (downs > 0) out[19] = 1, out[20] = LogRate(std::exp(down_log_sum / downs));
  out[21] = static_cast<float>(std::log1p(exchanged) / 4.0);
  out[22] = static_cast<float>(std::log1p(probed) / 4.0);
  out[23] = 1;
}

void FeatureBuilder::EdgeFeatures(HostIndex a, HostIndex b, HostIndex c, HostIndex p,
                                  HostIndex other, float* out) const {
  std::fill(out, out + kEdgeFeatures, 0.0f);
  const GraphHost& ha = graph_.host(a);
  const GraphHost& hb = graph_.host(b);
  const GraphEdge* e = graph_.FindEdge(a, b);
  if (e != nullptr && e->rtt_ns > 0) out[0] = 1, out[1] = LogRtt(e->rtt_ns);
  out[2] = !ha.record.idc.empty() && ha.record.idc == hb.record.idc ? 1 : 0;
  out[3] = !ha.record.location.empty() && ha.record.location == hb.record.location ? 1 : 0;
  out[4] = SamePrefix(ha, hb) ? 1 : 0;
  if (e != nullptr && !IsPair(a, b, c, p)) {
    const double down = e->from_other.bandwidth_bytes_per_sec();
    const double up = e->to_other.bandwidth_bytes_per_sec();
    if (down > 0) out[5] = 1, out[6] = LogRate(down);
    if (up > 0) out[7] = 1, out[8] = LogRate(up);
  }
  const GraphHost& ho = graph_.host(other);
  out[9] = b == other || (!hb.record.idc.empty() && hb.record.idc == ho.record.idc) ? 1 : 0;
  out[10] = b == other || SamePrefix(hb, ho) ? 1 : 0;
  out[11] = 1;
}

std::vector<HostIndex> FeatureBuilder::SampleNeighbours(HostIndex v, HostIndex c, HostIndex p,
                                                        int k) const {
  const uint64_t base = Mix(seed_ ^ Mix(graph_.host(v).id_hash));
  std::vector<std::pair<uint64_t, HostIndex>> scored;
  for (const GraphEdge& e : graph_.edges(v)) {
    if (IsPair(v, e.other, c, p)) continue;
    // An edge left with nothing (its only transfers were the hidden pair's) is no neighbour.
    if (e.rtt_ns == 0 && e.from_other.pieces == 0 && e.to_other.pieces == 0) continue;
    scored.emplace_back(Mix(base ^ graph_.host(e.other).id_hash), e.other);
  }
  const size_t keep = std::min<size_t>(scored.size(), static_cast<size_t>(k));
  std::partial_sort(scored.begin(), scored.begin() + static_cast<ptrdiff_t>(keep), scored.end(),
                    [](const auto& x, const auto& y) {
                      return x.first != y.first ? x.first < y.first
                                                : Value(x.second) < Value(y.second);
                    });
  std::vector<HostIndex> out;
  out.reserve(keep);
  for (size_t i = 0; i < keep; ++i) out.push_back(scored[i].second);
  return out;
}

void FeatureBuilder::Append(HostIndex child, HostIndex parent, InputBatch* batch) const {
  std::array<float*, kNumInputs> at{};
  for (int i = 0; i < kNumInputs; ++i) {
    auto& d = batch->data[i];
    const size_t old = d.size();
    d.resize(old + static_cast<size_t>(InputSize(i)), 0.0f);
    at[i] = d.data() + old;
  }
  const HostIndex c = child, p = parent;
  for (int side = 0; side < 2; ++side) {
    const HostIndex v = side == 0 ? child : parent;
    const HostIndex other = side == 0 ? parent : child;
    HostFeatures(v, c, p, at[0] + side * kHostFeatures);
    const auto hop1 = SampleNeighbours(v, c, p, kHop1);
    for (size_t j = 0; j < hop1.size(); ++j) {
      const size_t slot1 = static_cast<size_t>(side) * kHop1 + j;
      const HostIndex u = hop1[j];
      HostFeatures(u, c, p, at[1] + slot1 * kHostFeatures);
      EdgeFeatures(v, u, c, p, other, at[2] + slot1 * kEdgeFeatures);
      at[3][slot1] = 1;
      const auto hop2 = SampleNeighbours(u, c, p, kHop2);
      for (size_t k = 0; k < hop2.size(); ++k) {
        const size_t slot2 = slot1 * kHop2 + k;
        HostFeatures(hop2[k], c, p, at[4] + slot2 * kHostFeatures);
        EdgeFeatures(u, hop2[k], c, p, other, at[5] + slot2 * kEdgeFeatures);
        at[6][slot2] = 1;
      }
    }
  }
  EdgeFeatures(child, parent, c, p, parent, at[7]);
  // The pair's own transfers are hidden whatever EdgeFeatures found: slots 5-8 stay 0.
  ++batch->batch;
}

}  // namespace df::learning
