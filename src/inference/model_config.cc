#include "inference/model_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include "inference/datatype.h"

namespace df::inference {
namespace {

using ::inference::DataType;

// Keeps the first error (with its position) of a text-format parse.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    if (error.empty()) {
      error = std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
    }
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  std::string error;
};

bool TorchHasType(DataType type) {
  switch (type) {
    case ::inference::TYPE_BOOL:
    case ::inference::TYPE_UINT8:
    case ::inference::TYPE_INT8:
    case ::inference::TYPE_INT16:
    case ::inference::TYPE_INT32:
    case ::inference::TYPE_INT64:
    case ::inference::TYPE_FP16:
    case ::inference::TYPE_BF16:
    case ::inference::TYPE_FP32:
    case ::inference::TYPE_FP64:
      return true;
    default:
      return false;
  }
}

// The N of a "<name>__<N>" tensor name; nullopt without that suffix.
std::optional<int> TensorIndex(const std::string& name) {
  size_t sep = name.rfind("__");
  if (sep == std::string::npos || sep == 0 || sep + 2 == name.size()) return std::nullopt;
  int index = -1;
  const char* first = name.data() + sep + 2;
  const char* last = name.data() + name.size();
  auto [ptr, ec] = std::from_chars(first, last, index);
  if (ec != std::errc() || ptr != last || index < 0) return std::nullopt;
  return index;
}

// forward() order of `names`: by "__<index>" when the indices are exactly 0..N-1, else as given.
std::vector<int> ForwardOrder(const std::vector<std::string>& names) {
  std::vector<int> order(names.size());
  for (size_t i = 0; i < names.size(); ++i) order[i] = static_cast<int>(i);
  std::vector<int> by_index(names.size(), -1);
  for (size_t i = 0; i < names.size(); ++i) {
    std::optional<int> index = TensorIndex(names[i]);
    if (!index || *index >= static_cast<int>(names.size()) || by_index[*index] != -1) {
      return order;
    }
    by_index[*index] = static_cast<int>(i);
  }
  return by_index;
}

Status CheckTensor(const std::string& what, const std::string& name, DataType type,
                   const google::protobuf::RepeatedField<int64_t>& dims) {
  if (name.empty()) return InvalidArgument(what + " without a name");
  if (!TorchHasType(type)) {
    return InvalidArgument(what + " " + name + ": data_type " + DataType_Name(type) +
                           " is not served (libtorch has no such tensor type)");
  }
  if (dims.size() > kMaxRank) {
    return InvalidArgument(what + " " + name + ": more than " + std::to_string(kMaxRank) + " dims");
  }
  for (int64_t d : dims) {
    if (d < -1) return InvalidArgument(what + " " + name + ": dim " + std::to_string(d) + " < -1");
  }
  return Status::Ok();
}

template <typename Tensors>
Result<std::vector<std::string>> CheckTensors(const std::string& what, const Tensors& tensors) {
  if (tensors.empty()) return InvalidArgument("no " + what);
  std::vector<std::string> names;
  for (const auto& t : tensors) {
    DF_RETURN_IF_ERROR(CheckTensor(what, t.name(), t.data_type(), t.dims()));
    if (std::find(names.begin(), names.end(), t.name()) != names.end()) {
      return InvalidArgument(what + " " + t.name() + " appears twice");
    }
    names.push_back(t.name());
  }
  return names;
}

Status CheckPlatform(const ::inference::ModelConfig& config) {
  if (config.platform().empty() && config.backend().empty()) {
    return InvalidArgument("neither platform nor backend is set (want platform: \"" +
                           std::string(kPytorchPlatform) + "\")");
  }
  if (!config.platform().empty() && config.platform() != kPytorchPlatform) {
    return InvalidArgument("platform " + config.platform() + " is not served (only " +
                           kPytorchPlatform + ")");
  }
  if (!config.backend().empty() && config.backend() != kPytorchBackend) {
    return InvalidArgument("backend " + config.backend() + " is not served (only " +
                           kPytorchBackend + ")");
  }
  return Status::Ok();
}

Status ApplyVersionPolicy(const ::inference::ModelVersionPolicy& policy, ServingConfig& out) {
  switch (policy.policy_choice_case()) {
    case ::inference::ModelVersionPolicy::kLatest:
      out.max_versions = std::max<uint32_t>(1, policy.latest().num_versions());
      return Status::Ok();
    case ::inference::ModelVersionPolicy::kAll:
      out.max_versions = 0;
      return Status::Ok();
    case ::inference::ModelVersionPolicy::kSpecific:
      out.max_versions = 0;
      for (int64_t v : policy.specific().versions()) {
        if (v < 1) return InvalidArgument("version_policy: version " + std::to_string(v) + " < 1");
        out.specific.insert(v);
      }
      if (out.specific.empty()) return InvalidArgument("version_policy: specific without versions");
      return Status::Ok();
    case ::inference::ModelVersionPolicy::POLICY_CHOICE_NOT_SET:
      out.max_versions = 1;
      return Status::Ok();
  }
  return Status::Ok();
}

Status Validate(const std::string& model_name, ServingConfig& out) {
  ::inference::ModelConfig& config = out.config;
  if (config.name().empty()) config.set_name(model_name);
  if (config.name() != model_name) {
    return InvalidArgument("name " + config.name() + " is not the directory's");
  }
  DF_RETURN_IF_ERROR(CheckPlatform(config));
  if (config.max_batch_size() < 0) return InvalidArgument("max_batch_size < 0");
  auto inputs = CheckTensors("input", config.input());
  if (!inputs.ok()) return inputs.status();
  auto outputs = CheckTensors("output", config.output());
  if (!outputs.ok()) return outputs.status();
  out.input_order = ForwardOrder(inputs.value());
  out.output_order = ForwardOrder(outputs.value());
  out.model_filename = config.default_model_filename().empty() ? kDefaultModelFilename
                                                               : config.default_model_filename();
  if (out.model_filename.find('/') != std::string::npos || out.model_filename == "." ||
      out.model_filename == "..") {
    return InvalidArgument("default_model_filename must be a file name");
  }
  return ApplyVersionPolicy(config.version_policy(), out);
}

}  // namespace

Result<::inference::ModelConfig> ParseModelConfig(std::string_view text,
                                                  const std::string& source) {
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  parser.AllowUnknownField(true);
  ::inference::ModelConfig config;
  google::protobuf::io::ArrayInputStream input(text.data(), static_cast<int>(text.size()));
  if (text.size() > (1u << 20) || !parser.Parse(&input, &config)) {
    return InvalidArgument(source + ":" +
                           (errors.error.empty() ? std::string("too large") : errors.error));
  }
  return config;
}

Result<ServingConfig> MakeServingConfig(::inference::ModelConfig config,
                                        const std::string& model_name) {
  ServingConfig out;
  out.config = std::move(config);
  Status s = Validate(model_name, out);
  if (!s.ok()) return InvalidArgument("model " + model_name + ": " + s.message());
  return out;
}

}  // namespace df::inference
