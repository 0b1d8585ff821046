// inference.GRPCInferenceService over a ModelRepository: the KServe v2 calls dfinference answers.
//
//   ServerLive      always live while the process serves.
//   ServerReady     ready once the first poll finished and every model in the repository has a
//                   loaded version.
//   ServerMetadata  name "dfinference", its version, extensions ["model_configuration"].
//   ModelReady      whether the model has the version loaded (version "" = any); false, not an
//                   error, for an unknown model.
//   ModelMetadata   the config of the version asked for (or of the newest loaded): platform,
//                   loaded versions, inputs and outputs with KServe datatypes and shapes (-1 for
//                   the batch dimension). NOT_FOUND for an unknown model or a version not loaded.
//   ModelConfig     that config, as Triton's ModelConfig message.
//   ModelInfer      resolves the version (the newest loaded for ""), checks the request
//                   (infer_request.h), runs forward and answers in raw_output_contents.
//                   NOT_FOUND: unknown model, or a version that is not loaded. UNAVAILABLE: the
//                   model has no version loaded. INVALID_ARGUMENT: the request does not fit the
//                   config. INTERNAL: forward failed or returned what the config does not say.
//   RepositoryIndex every model with each loaded version READY, each failed one UNAVAILABLE with
//                   its reason, and a model without any loaded version UNAVAILABLE (all but READY
//                   entries are left out when `ready` is set).
// Thread-safe: the gRPC server calls it from many threads. The repository and the metrics must
// outlive it.
#pragma once

#include "grpc_service.grpc.pb.h"
#include "inference/metrics.h"
#include "inference/model_repository.h"

namespace df::inference {

inline constexpr char kServerName[] = "dfinference";
inline constexpr char kServerVersion[] = "0.1.0";

class InferenceService final : public ::inference::GRPCInferenceService::Service {
 public:
  InferenceService(ModelRepository& repository, InferenceMetrics& metrics)
      : repository_(repository), metrics_(metrics) {}

  grpc::Status ServerLive(grpc::ServerContext*, const ::inference::ServerLiveRequest*,
                          ::inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext*, const ::inference::ServerReadyRequest*,
                           ::inference::ServerReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext*, const ::inference::ServerMetadataRequest*,
                              ::inference::ServerMetadataResponse* response) override;
  grpc::Status ModelReady(grpc::ServerContext*, const ::inference::ModelReadyRequest* request,
                          ::inference::ModelReadyResponse* response) override;
  grpc::Status ModelMetadata(grpc::ServerContext*, const ::inference::ModelMetadataRequest* request,
                             ::inference::ModelMetadataResponse* response) override;
  grpc::Status ModelConfig(grpc::ServerContext*, const ::inference::ModelConfigRequest* request,
                           ::inference::ModelConfigResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext*, const ::inference::ModelInferRequest* request,
                          ::inference::ModelInferResponse* response) override;
  grpc::Status RepositoryIndex(grpc::ServerContext*,
                               const ::inference::RepositoryIndexRequest* request,
                               ::inference::RepositoryIndexResponse* response) override;

 private:
  grpc::Status Infer(const RepositorySnapshot& snapshot,
                     const ::inference::ModelInferRequest& request,
                     ::inference::ModelInferResponse& response);

  ModelRepository& repository_;
  InferenceMetrics& metrics_;
};

}  // namespace df::inference
