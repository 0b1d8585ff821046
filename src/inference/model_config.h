// A model's configuration: `<repo>/<model>/config.pbtxt`, Triton's text format, parsed into the
// ModelConfig subset of proto/kserve/model_config.proto and checked against what dfinference
// serves (the PyTorch backend's conventions). Torch-free; pure functions, thread-safe.
//
// What a valid config says (the rest of Triton's fields are accepted and ignored):
//   platform: "pytorch_libtorch" (or backend: "pytorch"); `name`, when given, is the directory's;
//   max_batch_size >= 0: with N > 0 every input and output has a leading batch dimension of
//     1..N that `dims` does not list;
//   input [ { name, data_type, dims } ... ] and output [ ... ]: at least one each, unique names,
//     dims >= -1 (-1 = any size), a data type libtorch has (BOOL, UINT8, INT8, INT16, INT32,
//     INT64, FP16, BF16, FP32, FP64);
//   forward() takes the inputs in the order of their `__<index>` suffix when every input name
//     has one and the indices are 0..N-1 (INPUT__0, INPUT__1, ...), else in config order; the
//     same rule maps the elements of the tuple forward() returns to the outputs;
//   version_policy: latest { num_versions } (default 1), all {} or specific { versions }.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model_config.pb.h"

namespace df::inference {

inline constexpr char kPytorchPlatform[] = "pytorch_libtorch";
inline constexpr char kPytorchBackend[] = "pytorch";
inline constexpr char kDefaultModelFilename[] = "model.pt";
inline constexpr char kConfigFilename[] = "config.pbtxt";
// Largest rank of a tensor in a config (without the batch dimension).
inline constexpr int kMaxRank = 16;

// A validated config and what serving derives from it. Immutable once built.
struct ServingConfig {
  ::inference::ModelConfig config;
  std::vector<int> input_order;   // forward() argument i is config.input(input_order[i])
  std::vector<int> output_order;  // forward() result i is config.output(output_order[i])
  std::string model_filename;     // file inside a version directory, e.g. "model.pt"
  // Which versions to serve: the `max_versions` highest-numbered complete ones that load
  // (0 = all), restricted to `specific` when that is non-empty.
  uint32_t max_versions = 1;
  std::set<int64_t> specific;

  bool batching() const { return config.max_batch_size() > 0; }
};

// Parses Triton text format. Fields this subset does not know are skipped. InvalidArgument
// "<source>:<line>:<column>: <reason>" on a syntax error or a known field of the wrong type.
Result<::inference::ModelConfig> ParseModelConfig(std::string_view text, const std::string& source);

// Validates `config` for the model in directory `model_name` (rules above) and derives the
// orders. InvalidArgument naming the model and the offending field when it is not servable.
Result<ServingConfig> MakeServingConfig(::inference::ModelConfig config,
                                        const std::string& model_name);

}  // namespace df::inference
