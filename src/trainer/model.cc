#include "trainer/model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace df::trainer {
namespace {

using learning::kEdgeFeatures;
using learning::kHostFeatures;

constexpr int H = BandwidthModel::kHidden;
constexpr int M = BandwidthModel::kMlpHidden;

torch::Tensor Agg(const torch::Tensor& x, const torch::Tensor& mask) {
  return (x * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, true).clamp_min(1.0);
}

// The TorchScript of Export(): the same math as Forward/Head, from the same parameters. Inputs
// arrive as FP16 (learning/features.h) and are computed on as FP32; FP32 inputs work as well.
constexpr const char* kGnnScript = R"JIT(
def agg(self, x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, True).clamp_min(1.0)

def layer1(self, x: Tensor, nx: Tensor, ne: Tensor, m: Tensor) -> Tensor:
    msg = torch.relu(torch.matmul(torch.cat([nx, ne], -1), self.l1_msg_w) + self.l1_msg_b)
    nb = self.agg(msg, m)
    return torch.relu(torch.matmul(x, self.l1_self_w) + torch.matmul(nb, self.l1_nb_w) + self.l1_b)

def forward(self, INPUT__0: Tensor, INPUT__1: Tensor, INPUT__2: Tensor, INPUT__3: Tensor,
            INPUT__4: Tensor, INPUT__5: Tensor, INPUT__6: Tensor, INPUT__7: Tensor) -> Tensor:
    INPUT__0 = INPUT__0.float()
    INPUT__1 = INPUT__1.float()
    INPUT__2 = INPUT__2.float()
    INPUT__3 = INPUT__3.float()
    INPUT__4 = INPUT__4.float()
    INPUT__5 = INPUT__5.float()
    INPUT__6 = INPUT__6.float()
    INPUT__7 = INPUT__7.float()
    h1v = self.layer1(INPUT__0, INPUT__1, INPUT__2, INPUT__3)
    h1u = self.layer1(INPUT__1, INPUT__4, INPUT__5, INPUT__6)
    msg = torch.relu(torch.matmul(torch.cat([h1u, INPUT__2], -1), self.l2_msg_w) + self.l2_msg_b)
    nb = self.agg(msg, INPUT__3)
    h2 = torch.relu(torch.matmul(h1v, self.l2_self_w) + torch.matmul(nb, self.l2_nb_w) + self.l2_b)
    z = torch.cat([h2[:, 0], h2[:, 1], INPUT__0[:, 0], INPUT__0[:, 1], INPUT__7], -1)
    y = torch.relu(torch.matmul(z, self.m1_w) + self.m1_b)
    y = torch.relu(torch.matmul(y, self.m2_w) + self.m2_b)
    y = torch.matmul(y, self.m3_w) + self.m3_b
    return torch.exp(y * self.y_std + self.y_mean)
)JIT";

constexpr const char* kMlpScript = R"JIT(
def forward(self, INPUT__0: Tensor, INPUT__1: Tensor, INPUT__2: Tensor, INPUT__3: Tensor,
            INPUT__4: Tensor, INPUT__5: Tensor, INPUT__6: Tensor, INPUT__7: Tensor) -> Tensor:
    INPUT__0 = INPUT__0.float()
    INPUT__7 = INPUT__7.float()
    z = torch.cat([INPUT__0[:, 0], INPUT__0[:, 1], INPUT__7], -1)
    y = torch.relu(torch.matmul(z, self.m1_w) + self.m1_b)
    y = torch.relu(torch.matmul(y, self.m2_w) + self.m2_b)
    y = torch.matmul(y, self.m3_w) + self.m3_b
    return torch.exp(y * self.y_std + self.y_mean)
)JIT";

}  // namespace

const char* ModelKindName(ModelKind kind) {
  return kind == ModelKind::kGnn ? "gnn" : "feature_mlp";
}

Inputs ToTensors(const learning::InputBatch& batch) {
  Inputs out;
  for (int i = 0; i < learning::kNumInputs; ++i) {
    std::vector<int64_t> shape = {batch.batch};
    for (int64_t d : learning::InputShape(i)) shape.push_back(d);
    // Rounded to the precision the inputs are served at (kInputDatatype), so that the models
    // learn and are measured on the values the scheduler sends.
    auto t = torch::from_blob(const_cast<float*>(batch.data[i].data()), shape, torch::kFloat32);
    out[i] =
        learning::kInputDatatype == "FP16" ? t.to(torch::kHalf).to(torch::kFloat32) : t.clone();
  }
  return out;
}

Inputs Slice(const Inputs& inputs, int64_t begin, int64_t end) {
  Inputs out;
  for (size_t i = 0; i < inputs.size(); ++i) out[i] = inputs[i].slice(0, begin, end);
  return out;
}

BandwidthModel::BandwidthModel(ModelKind kind, uint64_t seed) : kind_(kind) {
  auto gen = at::detail::createCPUGenerator(seed);
  auto init = [&](const std::string& name, std::vector<int64_t> shape, int64_t fan_in) {
    const double bound = std::sqrt(6.0 / static_cast<double>(fan_in)) / std::sqrt(2.0);
    params_[name] = (torch::rand(shape, gen) * 2 - 1).mul_(bound).requires_grad_(true);
  };
  auto zeros = [&](const std::string& name, int64_t n) {
    params_[name] = torch::zeros({n}).requires_grad_(true);
  };
  const int64_t f = kHostFeatures, e = kEdgeFeatures;
  int64_t head_in = 2 * f + e;
  if (kind == ModelKind::kGnn) {
    init("l1_msg_w", {f + e, H}, f + e);
    zeros("l1_msg_b", H);
    init("l1_self_w", {f, H}, f);
    init("l1_nb_w", {H, H}, H);
    zeros("l1_b", H);
    init("l2_msg_w", {H + e, H}, H + e);
    zeros("l2_msg_b", H);
    init("l2_self_w", {H, H}, H);
    init("l2_nb_w", {H, H}, H);
    zeros("l2_b", H);
    head_in += 2 * H;
  }
  init("m1_w", {head_in, M}, head_in);
  zeros("m1_b", M);
  init("m2_w", {M, H}, M);
  zeros("m2_b", H);
  init("m3_w", {H, 1}, H);
  zeros("m3_b", 1);
}

torch::Tensor BandwidthModel::Head(const torch::Tensor& z) const {
  auto y = torch::relu(torch::matmul(z, params_.at("m1_w")) + params_.at("m1_b"));
  y = torch::relu(torch::matmul(y, params_.at("m2_w")) + params_.at("m2_b"));
  return torch::matmul(y, params_.at("m3_w")) + params_.at("m3_b");
}

torch::Tensor BandwidthModel::Forward(const Inputs& in) const {
  using torch::indexing::Slice;
  const auto& x0 = in[0];
  if (kind_ == ModelKind::kFeatureMlp) {
    return Head(torch::cat({x0.select(1, 0), x0.select(1, 1), in[7]}, -1));
  }
  auto layer1 = [&](const torch::Tensor& x, const torch::Tensor& nx, const torch::Tensor& ne,
                    const torch::Tensor& m) {
    auto msg = torch::relu(torch::matmul(torch::cat({nx, ne}, -1), params_.at("l1_msg_w")) +
                           params_.at("l1_msg_b"));
    auto nb = Agg(msg, m);
    return torch::relu(torch::matmul(x, params_.at("l1_self_w")) +
                       torch::matmul(nb, params_.at("l1_nb_w")) + params_.at("l1_b"));
  };
  auto h1v = layer1(x0, in[1], in[2], in[3]);
  auto h1u = layer1(in[1], in[4], in[5], in[6]);
  auto msg = torch::relu(torch::matmul(torch::cat({h1u, in[2]}, -1), params_.at("l2_msg_w")) +
                         params_.at("l2_msg_b"));
  auto nb = Agg(msg, in[3]);
  auto h2 = torch::relu(torch::matmul(h1v, params_.at("l2_self_w")) +
                        torch::matmul(nb, params_.at("l2_nb_w")) + params_.at("l2_b"));
  return Head(
      torch::cat({h2.select(1, 0), h2.select(1, 1), x0.select(1, 0), x0.select(1, 1), in[7]}, -1));
}

torch::Tensor BandwidthModel::Predict(const Inputs& inputs) const {
  torch::NoGradGuard no_grad;
  return torch::exp(Forward(inputs) * y_std_ + y_mean_);
}

std::vector<torch::Tensor> BandwidthModel::Parameters() const {
  std::vector<torch::Tensor> out;
  for (const auto& [name, p] : params_) out.push_back(p);
  return out;
}

void BandwidthModel::SetTargetScale(double mean, double std) {
  y_mean_ = mean;
  y_std_ = std > 1e-6 ? std : 1.0;
}

torch::jit::Module BandwidthModel::Export() const {
  torch::jit::Module m(kind_ == ModelKind::kGnn ? "BandwidthGnn" : "BandwidthFeatureMlp");
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params_) m.register_parameter(name, p.detach().clone(), false);
  m.register_buffer("y_mean", torch::tensor({static_cast<float>(y_mean_)}));
  m.register_buffer("y_std", torch::tensor({static_cast<float>(y_std_)}));
  m.register_attribute("feature_version", c10::IntType::get(),
                       static_cast<int64_t>(learning::kFeatureVersion));
  m.register_attribute("model_kind", c10::StringType::get(), std::string(ModelKindName(kind_)));
  m.define(kind_ == ModelKind::kGnn ? kGnnScript : kMlpScript);
  m.eval();
  return m;
}

Status BandwidthModel::LoadFrom(const torch::jit::Module& module) {
  try {
    if (!module.hasattr("feature_version") || !module.hasattr("model_kind") ||
        module.attr("feature_version").toInt() != learning::kFeatureVersion ||
        module.attr("model_kind").toStringRef() != ModelKindName(kind_)) {
      return InvalidArgument("model of another kind or feature version");
    }
    std::map<std::string, torch::Tensor> loaded;
    for (const auto& p : module.named_parameters(false)) loaded[p.name] = p.value;
    for (const auto& [name, p] : params_) {
      auto it = loaded.find(name);
      if (it == loaded.end() || it->second.sizes() != p.sizes()) {
        return InvalidArgument("parameter " + name + " missing or of another shape");
      }
    }
    torch::NoGradGuard no_grad;
    for (auto& [name, p] : params_) p.copy_(loaded.at(name));
    SetTargetScale(module.attr("y_mean").toTensor().item<double>(),
                   module.attr("y_std").toTensor().item<double>());
    return Status::Ok();
  } catch (const c10::Error& e) {
    return InvalidArgument(std::string("unreadable model: ") + e.what_without_backtrace());
  }
}

}  // namespace df::trainer
