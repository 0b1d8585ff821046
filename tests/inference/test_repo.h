// Model repositories for the inference tests: small TorchScript models built in C++ and written
// the way the trainer publishes (a complete version directory renamed into place).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "inference/model_builder.h"

namespace df::inference::testing {

// "scale": OUTPUT__0 = INPUT__0 * k, FP32 [4] with batching up to 8. Version v uses k = v, so
// every answer says which version computed it.
inline std::string ScaleConfig(const std::string& extra = "") {
  return "name: \"scale\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 8\n"
         "input [ { name: \"INPUT__0\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n"
         "output [ { name: \"OUTPUT__0\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n" +
         extra;
}

// forward(x) = x * k; fails inside torch (an impossible reshape) when the input sums over 1000.
inline ScriptSpec ScaleScript(float k) {
  ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = k;
  spec.source =
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    if bool(x.sum() > 1000.0):\n"
      "        return x.reshape(7, -1)\n"
      "    return x * self.k\n";
  return spec;
}

// Writes `spec` as <repo>/<model>/<version>/model.pt: built in a hidden directory beside it,
// then renamed into place, as the trainer publishes.
inline void PublishVersion(const std::string& repo, const std::string& model, int64_t version,
                           const ScriptSpec& spec) {
  namespace fs = std::filesystem;
  const std::string staging = repo + "/" + model + "/.staging-" + std::to_string(version);
  fs::create_directories(staging);
  Status s = SaveScript(spec, staging + "/model.pt");
  ASSERT_TRUE(s.ok()) << s.ToString();
  fs::rename(staging, repo + "/" + model + "/" + std::to_string(version));
}

inline void WriteConfig(const std::string& repo, const std::string& model,
                        const std::string& text) {
  Status s = WriteFileAtomically(repo + "/" + model + "/config.pbtxt", text);
  ASSERT_TRUE(s.ok()) << s.ToString();
}

// Polls `done` every 20 ms until it holds or `timeout` passes; returns its last value.
inline bool WaitFor(const std::function<bool()>& done,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return done();
}

}  // namespace df::inference::testing
