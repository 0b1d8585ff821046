#include "inference/service.h"

#include <chrono>

#include "inference/datatype.h"
#include "inference/infer_request.h"

namespace df::inference {
namespace {

grpc::Status ToGrpc(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, s.message()};
    case StatusCode::kUnavailable:
      return {grpc::StatusCode::UNAVAILABLE, s.message()};
    default:
      return {grpc::StatusCode::INTERNAL, s.message()};
  }
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    default:
      return "INTERNAL";
  }
}

const ModelState* FindModel(const RepositorySnapshot& snapshot, const std::string& name) {
  auto it = snapshot.models.find(name);
  return it == snapshot.models.end() ? nullptr : it->second.get();
}

// The loaded version `version` of `model` ("" = the newest): NotFound when `version` is not
// loaded, Unavailable when nothing is.
Result<std::shared_ptr<const TorchModel>> ResolveVersion(const ModelState& model,
                                                         const std::string& version) {
  if (version.empty()) {
    if (auto newest = model.Newest()) return newest;
    return Unavailable("model " + model.name + " has no version loaded" +
                       (model.reason.empty() ? "" : ": " + model.reason));
  }
  for (const auto& [v, loaded] : model.loaded) {
    if (std::to_string(v) == version) return loaded;
  }
  return NotFound("model " + model.name + " version '" + version + "' is not loaded");
}

Result<std::shared_ptr<const TorchModel>> Resolve(const RepositorySnapshot& snapshot,
                                                  const std::string& name,
                                                  const std::string& version) {
  const ModelState* model = FindModel(snapshot, name);
  if (model == nullptr) return NotFound("unknown model '" + name + "'");
  return ResolveVersion(*model, version);
}

template <typename Tensor>
void AddMetadata(const Tensor& t, bool batching,
                 ::inference::ModelMetadataResponse::TensorMetadata* out) {
  out->set_name(t.name());
  out->set_datatype(DatatypeName(t.data_type()));
  if (batching) out->add_shape(-1);
  for (int64_t d : t.dims()) out->add_shape(d);
}

bool EveryModelLoaded(const RepositorySnapshot& snapshot) {
  for (const auto& [name, model] : snapshot.models) {
    if (model->loaded.empty()) return false;
  }
  return true;
}

}  // namespace

grpc::Status InferenceService::ServerLive(grpc::ServerContext*,
                                          const ::inference::ServerLiveRequest*,
                                          ::inference::ServerLiveResponse* response) {
  response->set_live(true);
  return grpc::Status::OK;
}

grpc::Status InferenceService::ServerReady(grpc::ServerContext*,
                                           const ::inference::ServerReadyRequest*,
                                           ::inference::ServerReadyResponse* response) {
  auto snapshot = repository_.Snapshot();
  response->set_ready(snapshot->scanned && EveryModelLoaded(*snapshot));
  return grpc::Status::OK;
}

grpc::Status InferenceService::ServerMetadata(grpc::ServerContext*,
                                              const ::inference::ServerMetadataRequest*,
                                              ::inference::ServerMetadataResponse* response) {
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  response->add_extensions("model_configuration");
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelReady(grpc::ServerContext*,
                                          const ::inference::ModelReadyRequest* request,
                                          ::inference::ModelReadyResponse* response) {
  auto snapshot = repository_.Snapshot();
  response->set_ready(Resolve(*snapshot, request->name(), request->version()).ok());
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelMetadata(grpc::ServerContext*,
                                             const ::inference::ModelMetadataRequest* request,
                                             ::inference::ModelMetadataResponse* response) {
  auto snapshot = repository_.Snapshot();
  const ModelState* model = FindModel(*snapshot, request->name());
  if (model == nullptr) return ToGrpc(NotFound("unknown model '" + request->name() + "'"));
  std::shared_ptr<const ServingConfig> config = model->config;
  if (!request->version().empty() || model->Newest() != nullptr) {
    auto loaded = ResolveVersion(*model, request->version());
    if (!loaded.ok()) return ToGrpc(loaded.status());
    config = std::shared_ptr<const ServingConfig>(loaded.value(), &loaded.value()->config());
  }
  if (config == nullptr) return ToGrpc(Unavailable("model " + model->name + ": " + model->reason));
  response->set_name(model->name);
  response->set_platform(kPytorchPlatform);
  for (const auto& [v, loaded] : model->loaded) response->add_versions(std::to_string(v));
  for (const auto& in : config->config.input()) {
    AddMetadata(in, config->batching(), response->add_inputs());
  }
  for (const auto& out : config->config.output()) {
    AddMetadata(out, config->batching(), response->add_outputs());
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelConfig(grpc::ServerContext*,
                                           const ::inference::ModelConfigRequest* request,
                                           ::inference::ModelConfigResponse* response) {
  auto snapshot = repository_.Snapshot();
  const ModelState* model = FindModel(*snapshot, request->name());
  if (model == nullptr) return ToGrpc(NotFound("unknown model '" + request->name() + "'"));
  if (!request->version().empty() || model->Newest() != nullptr) {
    auto loaded = ResolveVersion(*model, request->version());
    if (!loaded.ok()) return ToGrpc(loaded.status());
    *response->mutable_config() = loaded.value()->config().config;
  } else if (model->config != nullptr) {
    *response->mutable_config() = model->config->config;
  } else {
    return ToGrpc(Unavailable("model " + model->name + ": " + model->reason));
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::Infer(const RepositorySnapshot& snapshot,
                                     const ::inference::ModelInferRequest& request,
                                     ::inference::ModelInferResponse& response) {
  auto model = Resolve(snapshot, request.model_name(), request.model_version());
  if (!model.ok()) return ToGrpc(model.status());
  const TorchModel& torch_model = *model.value();
  auto checked = CheckInferRequest(torch_model.config(), request);
  if (!checked.ok()) {
    return ToGrpc(
        InvalidArgument("model " + request.model_name() + ": " + checked.status().message()));
  }
  auto outputs = torch_model.Run(checked.value());
  if (!outputs.ok()) {
    return ToGrpc(Internal("model " + request.model_name() + " version " +
                           std::to_string(torch_model.version()) + ": " +
                           outputs.status().message()));
  }
  response.set_model_name(request.model_name());
  response.set_model_version(std::to_string(torch_model.version()));
  response.set_id(request.id());
  for (OutputTensor& out : outputs.value()) {
    const auto& config = torch_model.config().config.output(out.config_index);
    auto* tensor = response.add_outputs();
    tensor->set_name(config.name());
    tensor->set_datatype(DatatypeName(config.data_type()));
    for (int64_t d : out.shape) tensor->add_shape(d);
    *response.add_raw_output_contents() = std::move(out.raw);
  }
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelInfer(grpc::ServerContext*,
                                          const ::inference::ModelInferRequest* request,
                                          ::inference::ModelInferResponse* response) {
  auto start = std::chrono::steady_clock::now();
  auto snapshot = repository_.Snapshot();
  grpc::Status status = Infer(*snapshot, *request, *response);
  const std::string& label =
      FindModel(*snapshot, request->model_name()) ? request->model_name() : kUnknownModel;
  metrics_.CountRequest(label, CodeName(status.error_code()));
  if (status.ok()) {
    metrics_.ObserveLatency(
        label, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return status;
}

grpc::Status InferenceService::RepositoryIndex(grpc::ServerContext*,
                                               const ::inference::RepositoryIndexRequest* request,
                                               ::inference::RepositoryIndexResponse* response) {
  auto snapshot = repository_.Snapshot();
  for (const auto& [name, model] : snapshot->models) {
    for (const auto& [v, loaded] : model->loaded) {
      auto* entry = response->add_models();
      entry->set_name(name);
      entry->set_version(std::to_string(v));
      entry->set_state("READY");
    }
    if (request->ready()) continue;
    for (const auto& [v, reason] : model->failed) {
      if (model->loaded.count(v) != 0) continue;
      auto* entry = response->add_models();
      entry->set_name(name);
      entry->set_version(std::to_string(v));
      entry->set_state("UNAVAILABLE");
      entry->set_reason(reason);
    }
    if (model->loaded.empty()) {
      auto* entry = response->add_models();
      entry->set_name(name);
      entry->set_state("UNAVAILABLE");
      entry->set_reason(model->reason.empty() ? "no version loaded" : model->reason);
    }
  }
  return grpc::Status::OK;
}

}  // namespace df::inference
