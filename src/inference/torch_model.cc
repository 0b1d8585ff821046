#include "inference/torch_model.h"

#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/subgraph_rewrite.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <optional>

#include "inference/datatype.h"
#include "inference/half.h"

namespace df::inference {
namespace {

using ::inference::DataType;

constexpr size_t kMaxErrorChars = 400;

c10::ScalarType TorchType(DataType type) {
  switch (type) {
    case ::inference::TYPE_BOOL:
      return torch::kBool;
    case ::inference::TYPE_UINT8:
      return torch::kByte;
    case ::inference::TYPE_INT8:
      return torch::kChar;
    case ::inference::TYPE_INT16:
      return torch::kShort;
    case ::inference::TYPE_INT32:
      return torch::kInt;
    case ::inference::TYPE_INT64:
      return torch::kLong;
    case ::inference::TYPE_FP16:
      return torch::kHalf;
    case ::inference::TYPE_BF16:
      return torch::kBFloat16;
    case ::inference::TYPE_FP64:
      return torch::kDouble;
    default:
      return torch::kFloat;
  }
}

// torch's message on one line, bounded: without the C++ backtrace, and for an error inside the
// TorchScript interpreter (a first line that says so, a TorchScript traceback, the error last)
// its first and last lines.
std::string ErrorText(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10 != nullptr ? c10->what_without_backtrace() : e.what();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t first_eol = text.find('\n');
  if (first_eol != std::string::npos) {
    std::string last = text.substr(text.rfind('\n') + 1);
    text = text.substr(0, first_eol) + " ... " + last;
  }
  if (text.size() > kMaxErrorChars) text.resize(kMaxErrorChars);
  return text;
}

template <typename From, typename To>
void CopyConverting(const google::protobuf::RepeatedField<From>& from, To* to) {
  for (int i = 0; i < from.size(); ++i) to[i] = static_cast<To>(from[i]);
}

template <typename T>
void CopySame(const google::protobuf::RepeatedField<T>& from, void* to) {
  if (!from.empty()) std::memcpy(to, from.data(), from.size() * sizeof(T));
}

// Fills `t` (of `type`, contiguous) from typed contents already checked against its size.
void FillTyped(DataType type, const ::inference::InferTensorContents& c, torch::Tensor& t) {
  switch (type) {
    case ::inference::TYPE_BOOL:
      return CopyConverting(c.bool_contents(), t.data_ptr<bool>());
    case ::inference::TYPE_UINT8:
      return CopyConverting(c.uint_contents(), t.data_ptr<uint8_t>());
    case ::inference::TYPE_INT8:
      return CopyConverting(c.int_contents(), t.data_ptr<int8_t>());
    case ::inference::TYPE_INT16:
      return CopyConverting(c.int_contents(), t.data_ptr<int16_t>());
    case ::inference::TYPE_INT32:
      return CopySame(c.int_contents(), t.data_ptr());
    case ::inference::TYPE_INT64:
      return CopySame(c.int64_contents(), t.data_ptr());
    case ::inference::TYPE_FP64:
      return CopySame(c.fp64_contents(), t.data_ptr());
    default:
      return CopySame(c.fp32_contents(), t.data_ptr());
  }
}

// `widen_fp16`: an FP16 input is handed to forward() as FP32 (TorchModel::widens_fp16).
torch::Tensor MakeInput(const InputView& view, bool widen_fp16) {
  if (widen_fp16 && view.type == ::inference::TYPE_FP16 && view.raw != nullptr) {
    torch::Tensor t = torch::empty(view.shape, torch::TensorOptions().dtype(torch::kFloat));
    const auto n = static_cast<size_t>(view.element_count);
    HalvesToFloats(
        std::span<const uint16_t>(reinterpret_cast<const uint16_t*>(view.raw->data()), n),
        std::span<float>(t.data_ptr<float>(), n));
    return t;
  }
  torch::Tensor t = torch::empty(view.shape, torch::TensorOptions().dtype(TorchType(view.type)));
  if (view.raw != nullptr) {
    if (!view.raw->empty()) std::memcpy(t.data_ptr(), view.raw->data(), view.raw->size());
  } else {
    FillTyped(view.type, *view.contents, t);
  }
  return t;
}

// The tensors forward() returned: one tensor, or a tuple or list of tensors.
Result<std::vector<torch::Tensor>> ResultTensors(const c10::IValue& result) {
  std::vector<torch::Tensor> tensors;
  if (result.isTensor()) {
    tensors.push_back(result.toTensor());
  } else if (result.isTuple()) {
    for (const auto& e : result.toTupleRef().elements()) {
      if (!e.isTensor()) return Internal("forward returned a tuple with a non-tensor element");
      tensors.push_back(e.toTensor());
    }
  } else if (result.isTensorList()) {
    for (const torch::Tensor& t : result.toTensorVector()) tensors.push_back(t);
  } else {
    return Internal("forward returned " + result.tagKind() + ", not tensors");
  }
  return tensors;
}

// Checks forward()'s output `t` against config output `out`.
Status CheckOutput(const ServingConfig& config, const ::inference::ModelOutput& out,
                   const torch::Tensor& t, int64_t batch_size) {
  const std::string what = "output " + out.name() + ": ";
  if (t.scalar_type() != TorchType(out.data_type())) {
    return Internal(what + "the model produced " + std::string(c10::toString(t.scalar_type())) +
                    ", the config says " + DatatypeName(out.data_type()));
  }
  const int offset = config.batching() ? 1 : 0;
  if (t.dim() != out.dims_size() + offset) {
    return Internal(what + "the model produced " + std::to_string(t.dim()) + " dims, the config " +
                    std::to_string(out.dims_size() + offset));
  }
  if (config.batching() && t.size(0) != batch_size) {
    return Internal(what + "batch dimension " + std::to_string(t.size(0)) + " for a batch of " +
                    std::to_string(batch_size));
  }
  for (int i = 0; i < out.dims_size(); ++i) {
    if (out.dims(i) != -1 && t.size(i + offset) != out.dims(i)) {
      return Internal(what + "dim " + std::to_string(i + offset) + " is " +
                      std::to_string(t.size(i + offset)) + ", the config says " +
                      std::to_string(out.dims(i)));
    }
  }
  return Status::Ok();
}

OutputTensor Serialize(int config_index, const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  OutputTensor out;
  out.config_index = config_index;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.raw.assign(static_cast<const char*>(c.data_ptr()), c.nbytes());
  return out;
}

}  // namespace

struct TorchModel::Module {
  // forward() is not const in the API; calls on one module from many threads are safe.
  mutable torch::jit::Module plain;
  // The same model with its linear layers on oneDNN (UseOneDnn), when that gives the same
  // answers; null otherwise. Tried first; a call it fails is run again on `plain`.
  mutable std::optional<torch::jit::Module> fast;
  // FP16 inputs are converted to FP32 here (F16C) and handed to forward() as FP32: set when the
  // model gives the same test answers that way (it converts them first itself, as the bandwidth
  // model does; libtorch's own conversion on the CPU is scalar and costs more than the forward's
  // products).
  bool widen_fp16 = false;
  // Median forward times of both copies on a typical batch, measured at load (0 = not timed:
  // the rewrite did not apply or disagreed).
  double plain_forward_ms = 0;
  double onednn_forward_ms = 0;

  // forward(inputs) with the outputs checked against `config`; `wanted` config output indices
  // are serialized in that order.
  Result<std::vector<OutputTensor>> Forward(const ServingConfig& config,
                                            const std::vector<c10::IValue>& inputs,
                                            int64_t batch_size,
                                            const std::vector<int>& wanted) const {
    c10::InferenceMode guard;
    c10::IValue result;
    if (fast.has_value()) {
      try {
        result = fast->forward(inputs);
      } catch (const std::exception&) {
        result = plain.forward(inputs);
      }
    } else {
      result = plain.forward(inputs);
    }
    return Outputs(config, result, batch_size, wanted);
  }

  static Result<std::vector<OutputTensor>> Outputs(const ServingConfig& config,
                                                   const c10::IValue& result, int64_t batch_size,
                                                   const std::vector<int>& wanted) {
    auto tensors = ResultTensors(result);
    if (!tensors.ok()) return tensors.status();
    if (tensors->size() != config.output_order.size()) {
      return Internal("forward returned " + std::to_string(tensors->size()) +
                      " tensors, the config has " + std::to_string(config.output_order.size()) +
                      " outputs");
    }
    std::vector<int> position(config.output_order.size());  // config index -> forward position
    for (size_t i = 0; i < config.output_order.size(); ++i) position[config.output_order[i]] = i;
    std::vector<OutputTensor> outputs;
    outputs.reserve(wanted.size());
    for (int index : wanted) {
      const torch::Tensor& t = (*tensors)[position[index]];
      DF_RETURN_IF_ERROR(CheckOutput(config, config.config.output(index), t, batch_size));
      outputs.push_back(Serialize(index, t));
    }
    return outputs;
  }
};

TorchModel::TorchModel(std::shared_ptr<const ServingConfig> config, int64_t version,
                       std::unique_ptr<Module> module)
    : config_(std::move(config)), version_(version), module_(std::move(module)) {}

TorchModel::~TorchModel() = default;

namespace {

// Inputs shaped like the config's (`batch` rows, capped by max_batch_size; -1 dims as 1), in
// forward() order: uniform [0, 1) for floating types, zeros otherwise (valid indices).
std::vector<c10::IValue> RandomInputs(const ServingConfig& config, int batch) {
  std::vector<c10::IValue> inputs;
  for (int index : config.input_order) {
    const auto& in = config.config.input(index);
    std::vector<int64_t> shape;
    if (config.batching()) shape.push_back(std::min(batch, config.config.max_batch_size()));
    for (int64_t d : in.dims()) shape.push_back(d == -1 ? 1 : d);
    auto options = torch::TensorOptions().dtype(TorchType(in.data_type()));
    inputs.emplace_back(torch::isFloatingType(TorchType(in.data_type()))
                            ? torch::rand(shape, options)
                            : torch::zeros(shape, options));
  }
  return inputs;
}

// The inputs of the test forwards at load: 2 rows.
constexpr int kTestBatch = 2;
// The inputs the two copies of the module are timed on: the batch size the scheduler's `ml`
// evaluator typically sends.
constexpr int kTimingBatch = 64;

std::vector<int> AllOutputs(const ServingConfig& config) {
  std::vector<int> all(config.config.output_size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return all;
}

// Test forwards run at load: the first checks the module; the others let TorchScript's
// profiling executor specialise before the first request.
constexpr int kWarmupForwards = 3;

// Debian's libtorch calls the reference BLAS (netlib libblas3) for aten::linear and
// aten::matmul: a [64, 592] x [592, 64] product takes ~2 ms there, ~0.2 ms through oneDNN
// (which libtorch also links). This rewrites forward() (with its callees inlined) so that every
// linear and 2-D matmul goes through aten::mkldnn_linear. Only used when a test forward gives
// the same answers as the plain module (Load), and a call that fails on it is retried on the
// plain module, so it can only change speed.
void UseOneDnn(torch::jit::Module& module) {
  auto graph = module.get_method("forward").graph();
  torch::jit::Inline(*graph);
  torch::jit::SubgraphRewriter rewriter;
  rewriter.RegisterRewritePattern(R"(
    graph(%x, %w, %b):
      %y = aten::linear(%x, %w, %b)
      return (%y))",
                                  R"(
    graph(%x, %w, %b):
      %none : NoneType = prim::Constant()
      %xm = aten::to_mkldnn(%x, %none)
      %ym = aten::mkldnn_linear(%xm, %w, %b)
      %y = aten::to_dense(%ym, %none)
      return (%y))");
  rewriter.RegisterRewritePattern(R"(
    graph(%x, %w):
      %y = aten::matmul(%x, %w)
      return (%y))",
                                  R"(
    graph(%x, %w):
      %none : NoneType = prim::Constant()
      %format : int = prim::Constant[value=0]()
      %wt = aten::t(%w)
      %wc = aten::contiguous(%wt, %format)
      %xm = aten::to_mkldnn(%x, %none)
      %ym = aten::mkldnn_linear(%xm, %wc, %none)
      %y = aten::to_dense(%ym, %none)
      return (%y))");
  rewriter.runOnGraph(graph);
}

// Whether `a` and `b` are the same outputs up to float rounding.
bool SameOutputs(const std::vector<OutputTensor>& a, const std::vector<OutputTensor>& b,
                 const ServingConfig& config) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].shape != b[i].shape || a[i].raw.size() != b[i].raw.size()) return false;
    auto type = TorchType(config.config.output(a[i].config_index).data_type());
    auto options = torch::TensorOptions().dtype(type);
    auto ta = torch::from_blob(const_cast<char*>(a[i].raw.data()), a[i].shape, options);
    auto tb = torch::from_blob(const_cast<char*>(b[i].raw.data()), b[i].shape, options);
    if (!torch::isFloatingType(type) ? !torch::equal(ta, tb)
                                     : !torch::allclose(ta, tb, 1e-4, 1e-5)) {
      return false;
    }
  }
  return true;
}

// Median wall time of up to `rounds` forwards of `module` on `inputs`, in seconds; it stops
// early (after at least one) once they have taken a second, so that a heavy model loads in
// bounded time.
double MedianForwardSeconds(torch::jit::Module& module, const std::vector<c10::IValue>& inputs,
                            int rounds) {
  std::vector<double> seconds;
  double total = 0;
  for (int i = 0; i < rounds && total < 1.0; ++i) {
    c10::InferenceMode guard;
    const auto start = std::chrono::steady_clock::now();
    module.forward(inputs);
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    total += seconds.back();
  }
  auto middle = seconds.begin() + static_cast<ptrdiff_t>(seconds.size() / 2);
  std::nth_element(seconds.begin(), middle, seconds.end());
  return *middle;
}

bool HasHalfTensor(const std::vector<c10::IValue>& inputs) {
  return std::any_of(inputs.begin(), inputs.end(), [](const c10::IValue& v) {
    return v.isTensor() && v.toTensor().scalar_type() == torch::kHalf;
  });
}

// `inputs` with every FP16 tensor converted to FP32.
std::vector<c10::IValue> Widened(const std::vector<c10::IValue>& inputs) {
  std::vector<c10::IValue> out;
  for (const c10::IValue& v : inputs) {
    out.emplace_back(v.isTensor() && v.toTensor().scalar_type() == torch::kHalf
                         ? c10::IValue(v.toTensor().to(torch::kFloat))
                         : v);
  }
  return out;
}

// Forwards timed per copy when choosing between the two (medians compared).
constexpr int kTimedForwards = 15;

// Runs the test forwards on `module->plain` (their error when they fail), then tries the oneDNN
// rewrite on a second copy loaded from `path` and keeps it only when it agrees and is faster on
// a typical batch. Which is faster depends on the BLAS libtorch finds: Debian's reference BLAS
// (libblas3) is several times slower than oneDNN for these products, OpenBLAS
// (libopenblas0-serial) is faster than the rewrite, whose layout conversions cost as much as the
// products.
Status CheckAndSpeedUp(const ServingConfig& config, const std::string& path,
                       TorchModel::Module* module) {
  std::vector<c10::IValue> inputs = RandomInputs(config, kTestBatch);
  const std::vector<int> all = AllOutputs(config);
  const int64_t batch =
      config.batching() ? std::min(kTestBatch, config.config.max_batch_size()) : 0;
  Result<std::vector<OutputTensor>> expected = Internal("no test forward");
  for (int i = 0; i < kWarmupForwards; ++i) {
    try {
      c10::InferenceMode guard;
      expected = TorchModel::Module::Outputs(config, module->plain.forward(inputs), batch, all);
    } catch (const std::exception& e) {
      expected = Internal("forward: " + ErrorText(e));
    }
    if (!expected.ok()) return expected.status();
  }
  std::vector<c10::IValue> timing = RandomInputs(config, kTimingBatch);
  if (HasHalfTensor(inputs)) {
    try {
      c10::InferenceMode guard;
      auto got =
          TorchModel::Module::Outputs(config, module->plain.forward(Widened(inputs)), batch, all);
      module->widen_fp16 = got.ok() && SameOutputs(expected.value(), got.value(), config);
    } catch (const std::exception&) {
      // The model wants FP16 tensors: it gets them.
    }
    if (module->widen_fp16) {
      inputs = Widened(inputs);
      timing = Widened(timing);
    }
  }
  try {
    torch::jit::Module fast = torch::jit::load(path, torch::kCPU);
    fast.eval();
    UseOneDnn(fast);
    for (int i = 0; i < kWarmupForwards; ++i) {
      c10::InferenceMode guard;
      auto got = TorchModel::Module::Outputs(config, fast.forward(inputs), batch, all);
      if (!got.ok() || !SameOutputs(expected.value(), got.value(), config)) return Status::Ok();
    }
    MedianForwardSeconds(module->plain, timing, kWarmupForwards);  // first calls of this shape
    MedianForwardSeconds(fast, timing, kWarmupForwards);
    const double plain_s = MedianForwardSeconds(module->plain, timing, kTimedForwards);
    const double fast_s = MedianForwardSeconds(fast, timing, kTimedForwards);
    module->plain_forward_ms = plain_s * 1e3;
    module->onednn_forward_ms = fast_s * 1e3;
    if (fast_s >= plain_s) return Status::Ok();
    module->fast = std::move(fast);
  } catch (const std::exception&) {
    // The rewrite does not fit this model: the plain module serves alone.
  }
  return Status::Ok();
}

}  // namespace

Result<std::shared_ptr<const TorchModel>> TorchModel::Load(
    std::shared_ptr<const ServingConfig> config, int64_t version, const std::string& path) {
  auto module = std::make_unique<Module>();
  try {
    module->plain = torch::jit::load(path, torch::kCPU);
    module->plain.eval();
  } catch (const std::exception& e) {
    return Internal("load " + path + ": " + ErrorText(e));
  }
  Status checked = CheckAndSpeedUp(*config, path, module.get());
  if (!checked.ok()) return Internal("test forward of " + path + ": " + checked.message());
  return std::shared_ptr<const TorchModel>(
      new TorchModel(std::move(config), version, std::move(module)));
}

bool TorchModel::accelerated() const { return module_->fast.has_value(); }

bool TorchModel::widens_fp16() const { return module_->widen_fp16; }

double TorchModel::plain_forward_ms() const { return module_->plain_forward_ms; }

double TorchModel::onednn_forward_ms() const { return module_->onednn_forward_ms; }

Result<std::vector<OutputTensor>> TorchModel::Run(const CheckedRequest& request) const {
  try {
    std::vector<c10::IValue> inputs;
    inputs.reserve(request.inputs.size());
    for (const InputView& view : request.inputs) {
      inputs.emplace_back(MakeInput(view, module_->widen_fp16));
    }
    return module_->Forward(*config_, inputs, request.batch_size, request.outputs);
  } catch (const std::exception& e) {
    return Internal("forward: " + ErrorText(e));
  }
}

void SetTorchThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
}

}  // namespace df::inference
