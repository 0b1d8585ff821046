// The bandwidth models of the learning loop, in libtorch, and their export as TorchScript.
//
// Both kinds take the inputs of learning/features.h (INPUT__0..INPUT__7) and predict, for each
// (child, parent) pair of the batch, the log of its bandwidth, standardised with the training
// labels' mean and standard deviation (y_mean, y_std):
//
//   kGnn        GraphSAGE, 2 layers, mean aggregation over the sampled neighbours of messages
//               computed from each neighbour and its edge (a one-layer ReLU message function,
//               so that an edge's features can gate what its neighbour says):
//                 agg(X, M)  = sum_k X_k M_k / max(1, sum_k M_k)
//                 h1(v)      = relu(x_v W1s + agg(relu([x_u, e_vu] W1m + b1m), m) W1n + b1)
//                 h2(v)      = relu(h1(v) W2s + agg(relu([h1(u), e_vu] W2m + b2m), m) W2n + b2)
//               then an MLP over [h2(child), h2(parent), x_child, x_parent, e_pair]
//   kFeatureMlp the same MLP over [x_child, x_parent, e_pair] only (no neighbours): baseline (b)
//
// Export() builds a torch::jit::Module whose TorchScript forward(INPUT__0, ..., INPUT__7)
// recomputes the same math from the registered parameters and returns OUTPUT__0 [B, 1] =
// exp(y_mean + y_std * out), bytes/s: loadable by torch::jit::load, dfinference and Triton's
// PyTorch backend. Attributes `feature_version` and `model_kind` tell a loader what it holds.
//
// Thread-compatible: one thread trains a model at a time.
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <array>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "learning/features.h"

namespace df::trainer {

enum class ModelKind { kGnn, kFeatureMlp };
const char* ModelKindName(ModelKind kind);  // "gnn", "feature_mlp"

using Inputs = std::array<torch::Tensor, learning::kNumInputs>;

// The inputs of a learning::InputBatch as tensors [batch, shape...] (copied, and rounded to the
// precision they travel at: learning::kInputDatatype).
Inputs ToTensors(const learning::InputBatch& batch);
// Rows [begin, end) of every input.
Inputs Slice(const Inputs& inputs, int64_t begin, int64_t end);

class BandwidthModel {
 public:
  static constexpr int kHidden = 32;     // GraphSAGE layer width
  static constexpr int kMlpHidden = 64;  // first MLP layer; the second has kHidden

  // Parameters initialised (Kaiming-uniform-like) from `seed`.
  BandwidthModel(ModelKind kind, uint64_t seed);

  ModelKind kind() const { return kind_; }
  // Standardised log-bandwidth predictions [B, 1] (autograd-tracked while training).
  torch::Tensor Forward(const Inputs& inputs) const;
  // Bandwidth in bytes/s [B, 1], without gradients.
  torch::Tensor Predict(const Inputs& inputs) const;

  std::vector<torch::Tensor> Parameters() const;
  void SetTargetScale(double mean, double std);
  double target_mean() const { return y_mean_; }
  double target_std() const { return y_std_; }

  // TorchScript module computing Predict (see above).
  torch::jit::Module Export() const;
  // Copies the parameters of an exported module of the same kind and shapes (a warm start).
  // InvalidArgument when the kind, feature version or any parameter's shape differs; the model
  // is then unchanged.
  Status LoadFrom(const torch::jit::Module& module);

 private:
  torch::Tensor Head(const torch::Tensor& z) const;

  ModelKind kind_;
  std::map<std::string, torch::Tensor> params_;  // ordered: the export's parameter order
  double y_mean_ = 16.0;
  double y_std_ = 2.0;
};

}  // namespace df::trainer
