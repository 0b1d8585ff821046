// Configuration of dfinference: defaults, then a YAML file (--config), then flags. The YAML key
// is the flag's name in snake_case (--poll-interval is poll_interval); unknown keys are errors.
// Durations take "500ms", "5s", "1m" or bare seconds; sizes "4MiB" or bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace df::inference {

struct InferenceConfig {
  std::string repo;                        // model repository root (required)
  std::string listen = "127.0.0.1:8001";   // gRPC (KServe v2) address
  std::string metrics = "127.0.0.1:8004";  // /metrics and /healthz; "" disables
  uint64_t poll_interval_ms = 5'000;       // how often the repository is rescanned
  uint32_t threads = 1;                    // libtorch intra-op threads per forward
  uint32_t rpc_threads = 8;                // most gRPC calls served at once
  uint64_t max_request_size = 4ull << 20;  // largest ModelInfer request accepted, bytes
  std::string log_level = "info";
  std::string log_file;  // "" = stderr
};

// Option names in snake_case, in the order of InferenceConfig.
const std::vector<std::string>& OptionNames();

// Sets option `name` (snake_case or kebab-case) from text. InvalidArgument naming the option for
// an unknown name or a value that does not parse or is out of range.
Status SetOption(InferenceConfig& config, const std::string& name, const std::string& value);

// Applies the YAML mapping in file `path` on top of `base`. NotFound for an unreadable file,
// InvalidArgument naming the file (and key) for bad YAML, unknown keys or bad values.
Result<InferenceConfig> LoadConfigFile(const std::string& path, InferenceConfig base);

// InvalidArgument when `repo` is empty or a value is out of range.
Status ValidateConfig(const InferenceConfig& config);

}  // namespace df::inference
