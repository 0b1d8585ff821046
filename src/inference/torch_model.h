// One loaded version of a model: a TorchScript module (libtorch, CPU) with the config it was
// loaded under. The only place that includes libtorch, behind this torch-free header.
//
// Loading checks the module the way a request would use it: a test forward (batch 2, or 1 when
// max_batch_size is 1; -1 dims as 1; uniform [0, 1) floats, zero integers) must return as many
// tensors as the config has outputs, each of the config's data type and shape. A version that
// fails is never served. A second copy of the module with its linear layers routed to oneDNN
// (torch_model.cc, UseOneDnn) serves instead when it gives the same test answers and its forward
// is faster on a batch of 64 rows (timed at load: it is with Debian's reference BLAS, it is not
// with OpenBLAS).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "inference/infer_request.h"
#include "inference/model_config.h"

namespace df::inference {

// An output ready for the wire: raw little-endian bytes, row-major.
struct OutputTensor {
  int config_index = 0;  // into config.output()
  std::vector<int64_t> shape;
  std::string raw;
};

// Immutable after Load; Run may be called from any number of threads at once (TorchScript's
// forward is reentrant; each call runs under c10::InferenceMode).
class TorchModel {
 public:
  // Loads TorchScript `path` as `version` of the model configured by `config` and checks it
  // (above). Internal with the reason (torch's message, or which output disagrees with the
  // config) when the file is missing, corrupt, not TorchScript, or does not fit the config.
  // Never throws.
  static Result<std::shared_ptr<const TorchModel>> Load(std::shared_ptr<const ServingConfig> config,
                                                        int64_t version, const std::string& path);
  ~TorchModel();
  TorchModel(const TorchModel&) = delete;
  TorchModel& operator=(const TorchModel&) = delete;

  // Runs forward() on `request` (checked against config() by CheckInferRequest) and returns the
  // requested outputs in request.outputs order. Internal when forward throws (the message is
  // torch's first line) or returns something the config does not describe. Never throws.
  Result<std::vector<OutputTensor>> Run(const CheckedRequest& request) const;

  int64_t version() const { return version_; }
  const ServingConfig& config() const { return *config_; }
  // Whether the oneDNN copy of the module serves (else the module as loaded).
  bool accelerated() const;
  // Whether FP16 inputs reach forward() as FP32, converted by dfinference with the CPU's F16C
  // instructions: chosen at load when the model gives the same test answers that way (a model
  // that converts its FP16 inputs to FP32 first, as the bandwidth model does). libtorch's own
  // conversion on the CPU costs more than that model's matrix products.
  bool widens_fp16() const;
  // Median forward time at load of the module as loaded and of its oneDNN copy, on a batch of
  // 64 rows (capped by max_batch_size); 0 when the copy was not timed.
  double plain_forward_ms() const;
  double onednn_forward_ms() const;

  struct Module;  // the TorchScript modules (opaque; torch_model.cc)

 private:
  TorchModel(std::shared_ptr<const ServingConfig> config, int64_t version,
             std::unique_ptr<Module> module);

  const std::shared_ptr<const ServingConfig> config_;
  const int64_t version_;
  const std::unique_ptr<Module> module_;
};

// Sets libtorch's intra-op threads (torch::set_num_threads); call once before serving.
void SetTorchThreads(int threads);

}  // namespace df::inference
