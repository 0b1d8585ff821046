// The model's input contract: how a (child, parent) pair and a HostGraph become tensors. The
// trainer (src/trainer), dfinference (any TorchScript model with these inputs) and the
// scheduler's `ml` evaluator all build inputs with this one header; changing a constant here
// changes the model's signature (kFeatureVersion) and old versions no longer load as warm starts.
//
// Inputs travel as FP16 (feature version 3; FP32 before): the features are built as floats and
// rounded to half precision (round to nearest even) on the wire, which halves a request (a
// ModelInfer of 64 pairs is 386 KB instead of 773 KB); the model computes in FP32, and the
// trainer rounds its training and validation inputs the same way, so that it learns and is
// measured on the values served. The output is FP32. Tensors are row-major, batch dimension
// first. Inputs follow Triton's PyTorch backend naming (INPUT__<i>, OUTPUT__<i>); the shapes
// below omit the batch dimension B:
//
//   name       shape              meaning
//   INPUT__0   [2, F]             host features of the child (row 0) and the parent (row 1)
//   INPUT__1   [2, K1, F]         features of up to K1 sampled neighbours of each
//   INPUT__2   [2, K1, E]         features of the edge from the host to each of those neighbours
//   INPUT__3   [2, K1]            1 where a neighbour slot is filled, 0 where it is padding
//   INPUT__4   [2, K1, K2, F]     features of up to K2 sampled neighbours of each neighbour
//   INPUT__5   [2, K1, K2, E]     features of the edge from the neighbour to each of those
//   INPUT__6   [2, K1, K2]        1 where filled, 0 where padding
//   INPUT__7   [E]                features of the (child, parent) pair edge itself
//   OUTPUT__0  [1]                predicted bandwidth from parent to child, bytes/s (> 0)
//
// Host features (F = kHostFeatures), each a float:
//   [0, 8)   idc one-hot hash: slot Fnv1a32(idc) % 8 is 1; all 0 when the idc is empty
//   [8, 12)  location one-hot hash: slot Fnv1a32(location) % 4; all 0 when empty
//   12       1 for a seed host
//   13..16   LogRate of the announced upload, announced download, learned upload, learned
//            download rate (bytes/s; 0 when unknown)
//   17, 18   has observed uploads (1/0), LogRate of its mean observed upload bandwidth
//            (mean over the pairs it served of log bandwidth, exp'd)
//   19, 20   the same for its observed downloads
//   21, 22   log1p(#hosts it exchanged pieces with) / 4, log1p(#hosts it shares a probe with) / 4
//   23       1 (a real host; padding slots are all 0)
//
// Edge features (E = kEdgeFeatures) of the edge from host a to host b:
//   0        1 when a and b probed each other
//   1        LogRtt of the probed RTT (0 when not probed)
//   2        1 when both announce the same non-empty idc
//   3        1 when both announce the same non-empty location
//   4        1 when both addresses are in the same /24 (IPv4) or /64 (IPv6)
//   5, 6     a downloaded from b (1/0), LogRate of that bandwidth
//   7, 8     b downloaded from a (1/0), LogRate of that bandwidth
//   9        1 when b is the pair's *other end* or announces its non-empty idc
//   10       1 when b is in the same /24 (/64) as the pair's other end
//   11       1 (a real edge; padding slots are all 0)
// The pair's other end is the parent for the edges in the child's tree (INPUT__2/5 row 0) and
// the child for those in the parent's tree (row 1), and the parent for INPUT__7. Slots 9 and 10
// let the encoder tell, among what the child got from its neighbours, what came from the
// parent's rack: the neighbourhood says what the features of two hosts alone cannot.
//
// LogRate(x) = (ln x - 16) / 4 for x > 0 (ln 1 MB/s ≈ 13.8, ln 1 GB/s ≈ 20.7), 0 for x = 0.
// LogRtt(ns) = (ln(1 + ns / 1000) - 5) / 3.
//
// No leakage: the features of pair (c, p) never contain what c and p exchanged. Every transfer
// between c and p (both directions) is invisible while building the pair's inputs: in the pair
// edge (slots 5-8 are 0), in c's and p's observed-bandwidth and degree features wherever they
// appear, and p is never sampled as c's neighbour (nor c as p's). A probe between them is kept.
//
// Neighbour sampling is deterministic: the neighbours of host v kept are the (at most) K with the
// smallest SplitMix64(seed, v id hash, u id hash), so the same graph, pair and seed give the
// same inputs on every machine; kDefaultSamplingSeed is what the trainer and scheduler use.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "learning/host_graph.h"

namespace df::learning {

inline constexpr int kFeatureVersion = 3;
inline constexpr int kHostFeatures = 24;  // F
inline constexpr int kEdgeFeatures = 12;  // E
inline constexpr int kHop1 = 8;           // K1
inline constexpr int kHop2 = 4;           // K2
inline constexpr int kIdcBuckets = 8;
inline constexpr int kLocationBuckets = 4;
inline constexpr int kNumInputs = 8;
inline constexpr uint64_t kDefaultSamplingSeed = 0x5eed;

// Tensor names, Triton's PyTorch backend convention.
inline constexpr std::array<std::string_view, kNumInputs> kInputNames = {
    "INPUT__0", "INPUT__1", "INPUT__2", "INPUT__3", "INPUT__4", "INPUT__5", "INPUT__6", "INPUT__7"};
inline constexpr std::string_view kOutputName = "OUTPUT__0";
// The KServe v2 datatype of every input on the wire (config.pbtxt: TYPE_FP16), and of the output.
inline constexpr std::string_view kInputDatatype = "FP16";
inline constexpr std::string_view kOutputDatatype = "FP32";

// Shape of each input without the batch dimension.
std::vector<int64_t> InputShape(int input);
// Floats per sample of each input (the product of its shape).
int64_t InputSize(int input);

float LogRate(double bytes_per_sec);
float LogRtt(uint64_t rtt_ns);

// A batch of inputs: data[i] holds batch * InputSize(i) floats, sample after sample.
struct InputBatch {
  int64_t batch = 0;
  std::array<std::vector<float>, kNumInputs> data;
  void Reserve(int64_t samples);
  // Appends sample `index` of `other`.
  void AppendFrom(const InputBatch& other, int64_t index);
};

// Builds inputs from a HostGraph. Thread-safe (const); the graph must outlive it.
class FeatureBuilder {
 public:
  explicit FeatureBuilder(const HostGraph& graph, uint64_t seed = kDefaultSamplingSeed)
      : graph_(graph), seed_(seed) {}

  // Appends the inputs of pair (child, parent) to `batch`.
  void Append(HostIndex child, HostIndex parent, InputBatch* batch) const;

  // Pieces of the contract, exposed for tests: the host features of `v` with the transfers of
  // the unordered pair {c, p} hidden; the edge features of a -> b with the same pair hidden,
  // `other` being the pair's other end for the tree the edge is in.
  void HostFeatures(HostIndex v, HostIndex c, HostIndex p, float* out) const;
  void EdgeFeatures(HostIndex a, HostIndex b, HostIndex c, HostIndex p, HostIndex other,
                    float* out) const;
  // Up to k neighbours of v (never the other end of the pair {c, p} when v is one of them).
  std::vector<HostIndex> SampleNeighbours(HostIndex v, HostIndex c, HostIndex p, int k) const;

 private:
  const HostGraph& graph_;
  const uint64_t seed_;
};

}  // namespace df::learning
