// Checks a ModelInferRequest from the network against a model's config before anything is
// allocated for it. Torch-free; pure functions, thread-safe.
//
// A request is accepted when: it names every input of the config exactly once and nothing
// else; each input's datatype is the config's; its shape has the config's rank (+1 for the
// batch dimension when max_batch_size > 0), every fixed dim equals the config's, -1 dims are
// >= 0, and the batch dimension is 1..max_batch_size and the same for all inputs; the element
// count does not overflow; and its data is either raw (then every input is raw, one entry of
// raw_input_contents per input, each exactly count x element size bytes) or typed (the contents
// field of its type holds exactly count values, in range for INT8/INT16/UINT8; FP16 and BF16
// must be raw). Requested outputs, when listed, must be outputs of the config, each once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "grpc_service.pb.h"
#include "inference/model_config.h"

namespace df::inference {

// One checked input. Borrows from the request, which must outlive it.
struct InputView {
  int config_index = 0;  // into config.input()
  ::inference::DataType type = ::inference::TYPE_INVALID;
  std::vector<int64_t> shape;  // with the batch dimension when batching
  int64_t element_count = 0;
  const std::string* raw = nullptr;  // raw little-endian bytes, or null for typed
  const ::inference::InferTensorContents* contents = nullptr;  // typed values, or null for raw
};

// A checked request: inputs in forward() order, the outputs to answer.
struct CheckedRequest {
  std::vector<InputView> inputs;  // forward() argument order
  std::vector<int> outputs;       // config.output() indices, in the order to answer them
  int64_t batch_size = 0;         // 0 without batching
};

// Checks `request` (rules above) against `config`. InvalidArgument naming the input or output
// and what is wrong. The result borrows from `request`.
Result<CheckedRequest> CheckInferRequest(const ServingConfig& config,
                                         const ::inference::ModelInferRequest& request);

}  // namespace df::inference
