// A client of the KServe v2 / Triton gRPC inference protocol (inference.GRPCInferenceService),
// for dfinference or a real Triton server alike. No libtorch: the scheduler's `ml` evaluator
// links this (target df_kserve_client) and nothing of the server.
//
// Tensors cross the wire in `raw_input_contents` / `raw_output_contents` (little-endian,
// row-major), the fastest form of the protocol: inputs as FP32, or FP16 where asked; outputs as
// FP32, and answers in typed `fp32_contents` are read too.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace grpc {
class Channel;
}
namespace inference {
class ModelInferRequest;
}

namespace df::inference {

// A named FP32 tensor: `data` holds the product of `shape` elements in row-major order.
struct Fp32Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
  // As an input: sent as FP16 (each value rounded to nearest even, half.h) instead of FP32, for
  // a model whose config declares the input TYPE_FP16. Half the bytes on the wire.
  bool send_as_fp16 = false;
};

// Thread-safe (a gRPC stub over one channel); cheap to share. Each call blocks its caller until
// the answer or the deadline.
class KServeClient {
 public:
  // `target` is "HOST:PORT" of the inference server; plaintext channel. The channel connects
  // lazily: constructing never fails or blocks.
  explicit KServeClient(const std::string& target);
  explicit KServeClient(std::shared_ptr<grpc::Channel> channel);
  ~KServeClient();
  KServeClient(const KServeClient&) = delete;
  KServeClient& operator=(const KServeClient&) = delete;

  using Deadline = std::chrono::system_clock::time_point;

  // True when the server answers ServerLive with live = true. Errors (all carry the gRPC
  // message): Unavailable when the server cannot be reached, DeadlineExceeded past `deadline`.
  Result<bool> ServerLive(Deadline deadline);

  // Whether `model` (at `version`; "" = the version the server picks) is ready for inference.
  // A model the server does not know reads as false on dfinference and as NotFound on servers
  // that answer so; the other errors are those of ServerLive.
  Result<bool> ModelReady(const std::string& model, Deadline deadline,
                          const std::string& version = "");

  // Runs `model` (at `version`; "" = the newest the server serves) on `inputs`, sent in
  // `raw_input_contents` in the given order as FP32, or as FP16 where `send_as_fp16` says so.
  // Returns every output the model produces, in the server's order, as FP32. Errors:
  // InvalidArgument for an input whose data size does not match its shape (checked before sending)
  // or a request the server refuses (INVALID_ARGUMENT: wrong names, shapes or batch size); NotFound
  // for an unknown model or version; Unavailable when the server is unreachable or the model not
  // loaded; DeadlineExceeded past `deadline`; Internal for a failure inside the model or an answer
  // that is not FP32 or whose size does not match its shape. `served_version`, when set, gets the
  // version the server says answered ("" when it does not say).
  Result<std::vector<Fp32Tensor>> Infer(const std::string& model,
                                        const std::vector<Fp32Tensor>& inputs, Deadline deadline,
                                        const std::string& version = "",
                                        std::string* served_version = nullptr);

 private:
  class Stub;
  std::unique_ptr<Stub> stub_;
};

// Appends `in` to `request` the way KServeClient::Infer sends it: name, shape and datatype (FP16
// when `in.send_as_fp16`, else FP32) in `inputs`, the values in `raw_input_contents`. The caller
// has checked that `in.data` holds ElementCount(in.shape) values.
void AppendRawInput(const Fp32Tensor& in, ::inference::ModelInferRequest* request);

// Product of `shape`'s dimensions; -1 when a dimension is negative or the product overflows
// int64.
int64_t ElementCount(const std::vector<int64_t>& shape);

}  // namespace df::inference
