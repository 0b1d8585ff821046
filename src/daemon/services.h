// dfdaemon's gRPC services: DfdaemonDownload (local API on a unix socket, used by dfget) and
// DfdaemonUpload (TCP, used by children for availability streams and by the scheduler to
// trigger a seed download). Both are thin: they validate input and call TaskManager/PieceStore.
#pragma once

#include <string>
#include <vector>

#include "common/auth.h"
#include "common/task_spec.h"
#include "daemon/task_manager.h"
#include "dfdaemon.grpc.pb.h"

namespace df {

// What the services need to decide who may do what; outlives the services.
struct ServiceTrust {
  UrlPolicy url_policy;  // which URLs this daemon fetches
  ControlAuth auth;      // checked on every DfdaemonUpload RPC (token and/or mutual TLS)
  bool seed = false;     // only a seed accepts TriggerDownloadTask
  // Without a token or TLS, TriggerDownloadTask is accepted only from these addresses: the IPs
  // of the configured scheduler. Empty (no scheduler): nobody may trigger.
  std::vector<std::string> scheduler_ips;
};

// Request headers of a download (DownloadRequest, TriggerDownloadTask's TaskInfo) are sent to
// the origin as-is, so they are bounded like the origin's answers are (http_backend.cc).
constexpr size_t kMaxRequestHeaders = 256;
constexpr size_t kMaxRequestHeaderBytes = 64 * 1024;  // names and values summed

// OK when `headers` can be sent to an origin as they are: each name an HTTP token (RFC 9110),
// each value free of CR, LF and other control characters but tab (so that no header can add
// another header or end the request), within kMaxRequestHeaders and kMaxRequestHeaderBytes.
// InvalidArgument naming the first offending header otherwise.
Status ValidateRequestHeaders(const std::map<std::string, std::string>& headers);

// A TaskRequest for a spec whose id was computed (never taken from the wire).
TaskRequest RequestOf(const TaskSpec& spec, std::map<std::string, std::string> headers);

// Thread-safe; `manager` and `store` outlive the service. StatTask, DeleteTask (and
// UploadService::SyncPieces) refuse a task id that is not 64 lowercase hex digits with
// INVALID_ARGUMENT before they look it up; an unknown one is NOT_FOUND.
class DownloadService final : public df::dfdaemon::v1::DfdaemonDownload::Service {
 public:
  DownloadService(TaskManager* manager, PieceStore* store, const ServiceTrust* trust)
      : manager_(manager), store_(store), trust_(trust) {}

  grpc::Status Download(grpc::ServerContext* ctx, const df::dfdaemon::v1::DownloadRequest* req,
                        grpc::ServerWriter<df::dfdaemon::v1::DownloadResponse>* writer) override;
  grpc::Status StatTask(grpc::ServerContext* ctx, const df::dfdaemon::v1::StatTaskRequest* req,
                        df::dfdaemon::v1::StatTaskResponse* resp) override;
  grpc::Status DeleteTask(grpc::ServerContext* ctx, const df::dfdaemon::v1::DeleteTaskRequest* req,
                          df::dfdaemon::v1::DeleteTaskResponse* resp) override;

 private:
  TaskManager* const manager_;
  PieceStore* const store_;
  const ServiceTrust* const trust_;
};

// Thread-safe; `manager`, `store` and `trust` outlive the service. Every RPC is checked against
// the trust settings before its request is read (docs/security.md).
class UploadService final : public df::dfdaemon::v1::DfdaemonUpload::Service {
 public:
  UploadService(TaskManager* manager, PieceStore* store, const ServiceTrust* trust)
      : manager_(manager), store_(store), trust_(trust) {}

  grpc::Status SyncPieces(grpc::ServerContext* ctx, const df::dfdaemon::v1::SyncPiecesRequest* req,
                          grpc::ServerWriter<df::dfdaemon::v1::PieceAvailability>* writer) override;
  grpc::Status TriggerDownloadTask(grpc::ServerContext* ctx,
                                   const df::dfdaemon::v1::TriggerDownloadTaskRequest* req,
                                   df::dfdaemon::v1::TriggerDownloadTaskResponse* resp) override;

 private:
  // OK when the caller may trigger a seed download (see ServiceTrust).
  grpc::Status CheckTrigger(const grpc::ServerContext& ctx) const;

  TaskManager* const manager_;
  PieceStore* const store_;
  const ServiceTrust* const trust_;
};

// Maps a Status to the API's error category.
df::dfdaemon::v1::ErrorCode ErrorCodeOf(const Status& s);

}  // namespace df
