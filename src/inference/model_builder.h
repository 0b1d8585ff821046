// Writes TorchScript models and their Triton config, built in C++ (no Python): the test
// fixtures and the benchmark's stand-in for the trainer's model. Not thread-safe to call for the
// same path concurrently; otherwise thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace df::inference {

// A module with float parameters `params` (name, shape, filled with `fill` or, when fill is NaN,
// seeded normal values) and the TorchScript methods in `source` ("def forward(self, ...)").
struct ScriptSpec {
  std::vector<std::pair<std::string, std::vector<int64_t>>> params;
  std::string source;
  float fill = 0.0f;
  uint64_t seed = 1;
};

// Compiles `spec` and saves it to `path` (TorchScript zip). Internal with torch's message when
// the source does not compile or the file cannot be written.
Status SaveScript(const ScriptSpec& spec, const std::string& path);

// A 2-layer MLP over several FP32 inputs (INPUT__0..N-1, each [batch, dims...]): the inputs are
// flattened per row and concatenated, then Linear(hidden) + ReLU + Linear(outputs) gives
// OUTPUT__0 [batch, outputs].
struct MlpSpec {
  std::vector<std::vector<int64_t>> input_dims;  // without the batch dimension
  int64_t hidden = 64;
  int64_t outputs = 1;
  uint64_t seed = 1;
};

Status SaveMlp(const MlpSpec& spec, const std::string& path);

// The config.pbtxt (Triton text format) of an MlpSpec model called `name`.
std::string MlpConfig(const std::string& name, const MlpSpec& spec, int max_batch_size);

// Writes `text` to `path` atomically (temp file + rename), creating parent directories.
Status WriteFileAtomically(const std::string& path, const std::string& text);

}  // namespace df::inference
