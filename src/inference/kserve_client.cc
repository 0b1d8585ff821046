#include "inference/kserve_client.h"

#include <grpcpp/grpcpp.h>

#include <cstring>

#include "grpc_service.grpc.pb.h"
#include "inference/half.h"

namespace df::inference {
namespace {

Status FromGrpc(const grpc::Status& s, const std::string& call) {
  std::string message = call + ": " + s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::OK:
      return Status::Ok();
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return InvalidArgument(message);
    case grpc::StatusCode::NOT_FOUND:
      return NotFound(message);
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return Unavailable(message);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return {StatusCode::kDeadlineExceeded, message};
    case grpc::StatusCode::CANCELLED:
      return {StatusCode::kCancelled, message};
    default:
      return Internal(message);
  }
}

// Reads one FP32 output of `response` (index `i`), raw or typed.
Result<Fp32Tensor> ReadOutput(const ::inference::ModelInferResponse& response, int i) {
  const auto& out = response.outputs(i);
  Fp32Tensor t{out.name(), {out.shape().begin(), out.shape().end()}, {}};
  if (out.datatype() != "FP32") {
    return Internal("ModelInfer: output " + out.name() + " is " + out.datatype() + ", not FP32");
  }
  int64_t count = ElementCount(t.shape);
  if (count < 0) return Internal("ModelInfer: output " + out.name() + " has a bad shape");
  if (response.raw_output_contents_size() > 0) {
    if (i >= response.raw_output_contents_size()) {
      return Internal("ModelInfer: no raw contents for output " + out.name());
    }
    const std::string& raw = response.raw_output_contents(i);
    if (raw.size() / sizeof(float) != static_cast<uint64_t>(count) ||
        raw.size() % sizeof(float) != 0) {
      return Internal("ModelInfer: output " + out.name() + " has " + std::to_string(raw.size()) +
                      " bytes for " + std::to_string(count) + " elements");
    }
    t.data.resize(count);
    if (count > 0) std::memcpy(t.data.data(), raw.data(), raw.size());
    return t;
  }
  const auto& typed = out.contents().fp32_contents();
  if (typed.size() != count) {
    return Internal("ModelInfer: output " + out.name() + " has " + std::to_string(typed.size()) +
                    " values for " + std::to_string(count) + " elements");
  }
  t.data.assign(typed.begin(), typed.end());
  return t;
}

}  // namespace

int64_t ElementCount(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(count, d, &count)) return -1;
  }
  return count;
}

class KServeClient::Stub {
 public:
  explicit Stub(std::shared_ptr<grpc::Channel> channel)
      : stub(::inference::GRPCInferenceService::NewStub(std::move(channel))) {}
  std::unique_ptr<::inference::GRPCInferenceService::Stub> stub;
};

KServeClient::KServeClient(const std::string& target)
    : KServeClient(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())) {}

KServeClient::KServeClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(std::make_unique<Stub>(std::move(channel))) {}

KServeClient::~KServeClient() = default;

Result<bool> KServeClient::ServerLive(Deadline deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  ::inference::ServerLiveRequest request;
  ::inference::ServerLiveResponse response;
  grpc::Status s = stub_->stub->ServerLive(&ctx, request, &response);
  if (!s.ok()) return FromGrpc(s, "ServerLive");
  return response.live();
}

Result<bool> KServeClient::ModelReady(const std::string& model, Deadline deadline,
                                      const std::string& version) {
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  ::inference::ModelReadyRequest request;
  request.set_name(model);
  request.set_version(version);
  ::inference::ModelReadyResponse response;
  grpc::Status s = stub_->stub->ModelReady(&ctx, request, &response);
  if (!s.ok()) return FromGrpc(s, "ModelReady " + model);
  return response.ready();
}

void AppendRawInput(const Fp32Tensor& in, ::inference::ModelInferRequest* request) {
  auto* tensor = request->add_inputs();
  tensor->set_name(in.name);
  for (int64_t d : in.shape) tensor->add_shape(d);
  std::string* raw = request->add_raw_input_contents();
  if (in.send_as_fp16) {
    tensor->set_datatype("FP16");
    raw->resize(in.data.size() * sizeof(uint16_t));
    FloatsToHalves(in.data,
                   std::span<uint16_t>(reinterpret_cast<uint16_t*>(raw->data()), in.data.size()));
  } else {
    tensor->set_datatype("FP32");
    raw->assign(reinterpret_cast<const char*>(in.data.data()), in.data.size() * sizeof(float));
  }
}

Result<std::vector<Fp32Tensor>> KServeClient::Infer(const std::string& model,
                                                    const std::vector<Fp32Tensor>& inputs,
                                                    Deadline deadline, const std::string& version,
                                                    std::string* served_version) {
  ::inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_model_version(version);
  for (const Fp32Tensor& in : inputs) {
    int64_t count = ElementCount(in.shape);
    if (count < 0 || static_cast<uint64_t>(count) != in.data.size()) {
      return InvalidArgument("ModelInfer " + model + ": input " + in.name + " has " +
                             std::to_string(in.data.size()) + " values for its shape");
    }
    AppendRawInput(in, &request);
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(deadline);
  ::inference::ModelInferResponse response;
  grpc::Status s = stub_->stub->ModelInfer(&ctx, request, &response);
  if (!s.ok()) return FromGrpc(s, "ModelInfer " + model);
  if (served_version) *served_version = response.model_version();
  std::vector<Fp32Tensor> outputs;
  outputs.reserve(response.outputs_size());
  for (int i = 0; i < response.outputs_size(); ++i) {
    auto out = ReadOutput(response, i);
    if (!out.ok()) return out.status();
    outputs.push_back(std::move(out).value());
  }
  return outputs;
}

}  // namespace df::inference
