#include "inference/infer_request.h"

#include <limits>

#include "inference/datatype.h"

namespace df::inference {
namespace {

using ::inference::DataType;
using ::inference::InferTensorContents;
using InputTensor = ::inference::ModelInferRequest::InferInputTensor;

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string text = "[";
  for (int i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

// Checks `tensor`'s shape against `input`'s dims; sets view.shape, element_count and, when
// batching, `batch_size` (0 on entry = not yet known).
Status CheckShape(const ServingConfig& config, const ::inference::ModelInput& input,
                  const InputTensor& tensor, int64_t& batch_size, InputView& view) {
  const bool batching = config.batching();
  const int rank = input.dims_size() + (batching ? 1 : 0);
  const std::string what = "input " + input.name() + " shape " + ShapeText(tensor.shape());
  if (tensor.shape_size() != rank) {
    return InvalidArgument(what + ": want " + std::to_string(rank) + " dims");
  }
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    int64_t d = tensor.shape(i);
    if (d < 0) return InvalidArgument(what + ": negative dim");
    if (batching && i == 0) {
      if (d < 1 || d > config.config.max_batch_size()) {
        return InvalidArgument(what + ": batch size " + std::to_string(d) + " not in 1.." +
                               std::to_string(config.config.max_batch_size()));
      }
      if (batch_size != 0 && d != batch_size) {
        return InvalidArgument(what + ": batch size differs from the other inputs'");
      }
      batch_size = d;
    } else {
      int64_t want = input.dims(batching ? i - 1 : i);
      if (want != -1 && d != want) {
        return InvalidArgument(what + ": dim " + std::to_string(i) + " must be " +
                               std::to_string(want));
      }
    }
    if (__builtin_mul_overflow(count, d, &count)) return InvalidArgument(what + ": too large");
  }
  view.shape.assign(tensor.shape().begin(), tensor.shape().end());
  view.element_count = count;
  return Status::Ok();
}

// Number of values the typed contents carry for `type`; -1 when `type` must be raw.
int64_t TypedCount(DataType type, const InferTensorContents& c) {
  switch (type) {
    case ::inference::TYPE_BOOL:
      return c.bool_contents_size();
    case ::inference::TYPE_UINT8:
      return c.uint_contents_size();
    case ::inference::TYPE_INT8:
    case ::inference::TYPE_INT16:
    case ::inference::TYPE_INT32:
      return c.int_contents_size();
    case ::inference::TYPE_INT64:
      return c.int64_contents_size();
    case ::inference::TYPE_FP32:
      return c.fp32_contents_size();
    case ::inference::TYPE_FP64:
      return c.fp64_contents_size();
    default:
      return -1;
  }
}

// Values of INT8, INT16 and UINT8 tensors travel in 32-bit fields: each must fit its type.
bool TypedInRange(DataType type, const InferTensorContents& c) {
  int64_t lo = 0, hi = 0;
  switch (type) {
    case ::inference::TYPE_INT8:
      lo = std::numeric_limits<int8_t>::min(), hi = std::numeric_limits<int8_t>::max();
      break;
    case ::inference::TYPE_INT16:
      lo = std::numeric_limits<int16_t>::min(), hi = std::numeric_limits<int16_t>::max();
      break;
    case ::inference::TYPE_UINT8:
      for (uint32_t v : c.uint_contents()) {
        if (v > 255) return false;
      }
      return true;
    default:
      return true;
  }
  for (int32_t v : c.int_contents()) {
    if (v < lo || v > hi) return false;
  }
  return true;
}

Status CheckData(const ::inference::ModelInferRequest& request, int request_index,
                 const InputTensor& tensor, InputView& view) {
  const std::string what = "input " + tensor.name();
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw) {
    if (tensor.has_contents()) {
      return InvalidArgument(what + ": contents given with raw_input_contents");
    }
    const std::string& bytes = request.raw_input_contents(request_index);
    uint64_t want = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(view.element_count),
                               ElementSizeBytes(view.type), &want) ||
        bytes.size() != want) {
      return InvalidArgument(what + ": " + std::to_string(bytes.size()) +
                             " raw bytes do not match its shape and datatype");
    }
    view.raw = &bytes;
    return Status::Ok();
  }
  int64_t count = TypedCount(view.type, tensor.contents());
  if (count < 0) return InvalidArgument(what + ": " + tensor.datatype() + " must be sent raw");
  if (count != view.element_count) {
    return InvalidArgument(what + ": " + std::to_string(count) + " values for " +
                           std::to_string(view.element_count) + " elements");
  }
  if (!TypedInRange(view.type, tensor.contents())) {
    return InvalidArgument(what + ": a value is out of range for " + tensor.datatype());
  }
  view.contents = &tensor.contents();
  return Status::Ok();
}

int FindInput(const ::inference::ModelConfig& config, const std::string& name) {
  for (int i = 0; i < config.input_size(); ++i) {
    if (config.input(i).name() == name) return i;
  }
  return -1;
}

int FindOutput(const ::inference::ModelConfig& config, const std::string& name) {
  for (int i = 0; i < config.output_size(); ++i) {
    if (config.output(i).name() == name) return i;
  }
  return -1;
}

// Fills `by_config` (indexed by config input) from the request's inputs.
Status CheckInputs(const ServingConfig& config, const ::inference::ModelInferRequest& request,
                   std::vector<InputView>& by_config, int64_t& batch_size) {
  const auto& model = config.config;
  if (request.raw_input_contents_size() != 0 &&
      request.raw_input_contents_size() != request.inputs_size()) {
    return InvalidArgument(std::to_string(request.raw_input_contents_size()) +
                           " raw_input_contents for " + std::to_string(request.inputs_size()) +
                           " inputs");
  }
  std::vector<bool> seen(model.input_size(), false);
  for (int i = 0; i < request.inputs_size(); ++i) {
    const InputTensor& tensor = request.inputs(i);
    int index = FindInput(model, tensor.name());
    if (index < 0) return InvalidArgument("unknown input " + tensor.name());
    if (seen[index]) return InvalidArgument("input " + tensor.name() + " given twice");
    seen[index] = true;
    InputView& view = by_config[index];
    view.config_index = index;
    view.type = ParseDatatypeName(tensor.datatype());
    if (view.type != model.input(index).data_type()) {
      return InvalidArgument("input " + tensor.name() + ": datatype '" + tensor.datatype() +
                             "', the model takes " + DatatypeName(model.input(index).data_type()));
    }
    DF_RETURN_IF_ERROR(CheckShape(config, model.input(index), tensor, batch_size, view));
    DF_RETURN_IF_ERROR(CheckData(request, i, tensor, view));
  }
  for (int i = 0; i < model.input_size(); ++i) {
    if (!seen[i]) return InvalidArgument("missing input " + model.input(i).name());
  }
  return Status::Ok();
}

Result<std::vector<int>> CheckOutputs(const ServingConfig& config,
                                      const ::inference::ModelInferRequest& request) {
  std::vector<int> outputs;
  if (request.outputs_size() == 0) {
    for (int i = 0; i < config.config.output_size(); ++i) outputs.push_back(i);
    return outputs;
  }
  std::vector<bool> seen(config.config.output_size(), false);
  for (const auto& requested : request.outputs()) {
    int index = FindOutput(config.config, requested.name());
    if (index < 0) return InvalidArgument("unknown output " + requested.name());
    if (seen[index]) return InvalidArgument("output " + requested.name() + " requested twice");
    seen[index] = true;
    outputs.push_back(index);
  }
  return outputs;
}

}  // namespace

Result<CheckedRequest> CheckInferRequest(const ServingConfig& config,
                                         const ::inference::ModelInferRequest& request) {
  CheckedRequest checked;
  std::vector<InputView> by_config(config.config.input_size());
  DF_RETURN_IF_ERROR(CheckInputs(config, request, by_config, checked.batch_size));
  checked.inputs.reserve(by_config.size());
  for (int index : config.input_order) checked.inputs.push_back(std::move(by_config[index]));
  auto outputs = CheckOutputs(config, request);
  if (!outputs.ok()) return outputs.status();
  checked.outputs = std::move(outputs).value();
  return checked;
}

}  // namespace df::inference
