// dfdaemon's gRPC services: DfdaemonDownload (local API on a unix socket, used by dfget) and
// DfdaemonUpload (TCP, used by children for availability streams and by the scheduler to
// trigger a seed download). Both are thin: they validate input and call TaskManager/PieceStore.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/task_spec.h"
#include "daemon/availability_streams.h"
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

// What the local API's daemon-wide calls (status, stop, gc) need from the Daemon. Every member
// may be empty: the call then answers UNIMPLEMENTED (tests that build a bare service).
struct DaemonControl {
  std::function<void(df::dfdaemon::v1::DaemonStatus*)> fill_status;
  std::function<void()> request_stop;  // returns at once; the daemon shuts down afterwards
  GcPolicy gc_policy;
};

// Thread-safe; `manager`, `store`, `trust` and `control` outlive the service. StatTask,
// DeleteTask (and UploadService::SyncPieces) refuse a task id that is not 64 lowercase hex
// digits with INVALID_ARGUMENT before they look it up; an unknown one is NOT_FOUND.
// The local API is the user's (a unix socket of mode sock_mode): it may list, delete, import
// and export tasks and stop the daemon. Still, bad input never crashes it: ImportTask bounds
// what it accepts by the spec's layout and never opens a path it is given.
// Finishes a unary call of the callback API answered inline with `status`.
inline grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx,
                                        const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// The unary calls run on gRPC's callback API, inline and short: a client that never reads the
// answer holds no thread. Download and ImportTask stream on the synchronous server, whose
// threads the daemon caps (daemon.cc).
using DownloadServiceBase = df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_StatTask<
    df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_DeleteTask<
        df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_ListTasks<
            df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_GarbageCollect<
                df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_GetDaemonStatus<
                    df::dfdaemon::v1::DfdaemonDownload::WithCallbackMethod_StopDaemon<
                        df::dfdaemon::v1::DfdaemonDownload::Service>>>>>>;

class DownloadService final : public DownloadServiceBase {
 public:
  DownloadService(TaskManager* manager, PieceStore* store, const ServiceTrust* trust,
                  const DaemonControl* control = nullptr)
      : manager_(manager), store_(store), trust_(trust), control_(control) {}

  grpc::Status Download(grpc::ServerContext* ctx, const df::dfdaemon::v1::DownloadRequest* req,
                        grpc::ServerWriter<df::dfdaemon::v1::DownloadResponse>* writer) override;
  grpc::ServerUnaryReactor* StatTask(grpc::CallbackServerContext* ctx,
                                     const df::dfdaemon::v1::StatTaskRequest* req,
                                     df::dfdaemon::v1::StatTaskResponse* resp) override {
    return Answer(ctx, DoStatTask(req, resp));
  }
  grpc::ServerUnaryReactor* DeleteTask(grpc::CallbackServerContext* ctx,
                                       const df::dfdaemon::v1::DeleteTaskRequest* req,
                                       df::dfdaemon::v1::DeleteTaskResponse*) override {
    return Answer(ctx, DoDeleteTask(req));
  }
  // Every task of the store, with whether a download of it runs now.
  grpc::ServerUnaryReactor* ListTasks(grpc::CallbackServerContext* ctx,
                                      const df::dfdaemon::v1::ListTasksRequest*,
                                      df::dfdaemon::v1::ListTasksResponse* resp) override {
    return Answer(ctx, DoListTasks(resp));
  }
  // Records a file the client streams as a finished task of the spec in its header (see the
  // proto). INVALID_ARGUMENT for a bad spec, a missing header, or bytes that do not add up to
  // content_length; DATA_LOSS for a digest mismatch (nothing is kept); FAILED_PRECONDITION
  // while a download of the task runs. A task already finished here is left as it is.
  grpc::Status ImportTask(grpc::ServerContext* ctx,
                          grpc::ServerReader<df::dfdaemon::v1::ImportTaskRequest>* reader,
                          df::dfdaemon::v1::ImportTaskResponse* resp) override;
  // Runs the store's GC now with the daemon's policy.
  grpc::ServerUnaryReactor* GarbageCollect(
      grpc::CallbackServerContext* ctx, const df::dfdaemon::v1::GarbageCollectRequest*,
      df::dfdaemon::v1::GarbageCollectResponse* resp) override {
    return Answer(ctx, DoGarbageCollect(resp));
  }
  grpc::ServerUnaryReactor* GetDaemonStatus(grpc::CallbackServerContext* ctx,
                                            const df::dfdaemon::v1::GetDaemonStatusRequest*,
                                            df::dfdaemon::v1::DaemonStatus* resp) override {
    return Answer(ctx, DoGetDaemonStatus(resp));
  }
  grpc::ServerUnaryReactor* StopDaemon(grpc::CallbackServerContext* ctx,
                                       const df::dfdaemon::v1::StopDaemonRequest*,
                                       df::dfdaemon::v1::StopDaemonResponse* resp) override {
    return Answer(ctx, DoStopDaemon(resp));
  }

 private:
  grpc::Status DoStatTask(const df::dfdaemon::v1::StatTaskRequest* req,
                          df::dfdaemon::v1::StatTaskResponse* resp);
  grpc::Status DoDeleteTask(const df::dfdaemon::v1::DeleteTaskRequest* req);
  grpc::Status DoListTasks(df::dfdaemon::v1::ListTasksResponse* resp);
  grpc::Status DoGarbageCollect(df::dfdaemon::v1::GarbageCollectResponse* resp);
  grpc::Status DoGetDaemonStatus(df::dfdaemon::v1::DaemonStatus* resp);
  grpc::Status DoStopDaemon(df::dfdaemon::v1::StopDaemonResponse* resp);
  // Reads the import's bytes into `storage` at their offsets and returns the pieces' CRC32Cs,
  // checking `digest` (if any) over them.
  Result<std::vector<uint32_t>> ReceiveImport(
      grpc::ServerReader<df::dfdaemon::v1::ImportTaskRequest>* reader, TaskStorage& storage,
      const PieceLayout& layout, const std::string& digest);

  TaskManager* const manager_;
  PieceStore* const store_;
  const ServiceTrust* const trust_;
  const DaemonControl* const control_;
};

// Thread-safe; `manager`, `store` and `trust` outlive the service. Every RPC is checked against
// the trust settings before its request is read (docs/security.md). SyncPieces runs on gRPC's
// callback API (availability_streams.h): an open stream holds no thread.
class UploadService final
    : public df::dfdaemon::v1::DfdaemonUpload::WithCallbackMethod_SyncPieces<
          df::dfdaemon::v1::DfdaemonUpload::WithCallbackMethod_TriggerDownloadTask<
              df::dfdaemon::v1::DfdaemonUpload::Service>> {
 public:
  // `max_streams`: availability streams open at once; more are refused (RESOURCE_EXHAUSTED).
  UploadService(TaskManager* manager, PieceStore* store, const ServiceTrust* trust,
                size_t max_streams = AvailabilityStreams::kDefaultMaxStreams)
      : manager_(manager), trust_(trust), streams_(manager, store, max_streams) {}

  // Streams the availability of the task until it is done here (OK), the child goes away
  // (CANCELLED) or nothing more will come (NOT_FOUND, UNAVAILABLE), each with its reason.
  grpc::ServerWriteReactor<df::dfdaemon::v1::PieceAvailability>* SyncPieces(
      grpc::CallbackServerContext* ctx, const df::dfdaemon::v1::SyncPiecesRequest* req) override;
  // Answered inline: checks the caller, validates the spec, starts the seed's download.
  grpc::ServerUnaryReactor* TriggerDownloadTask(
      grpc::CallbackServerContext* ctx, const df::dfdaemon::v1::TriggerDownloadTaskRequest* req,
      df::dfdaemon::v1::TriggerDownloadTaskResponse*) override {
    return Answer(ctx, DoTriggerDownloadTask(ctx, req));
  }

  // Ends every availability stream (UNAVAILABLE) and refuses new ones: call before the server's
  // Shutdown, so that it does not wait for its deadline on streams that would never end.
  void StopStreams() { streams_.Stop(); }
  // Availability streams open now.
  size_t open_streams() const { return streams_.open(); }

 private:
  // OK when the caller may trigger a seed download (see ServiceTrust).
  grpc::Status CheckTrigger(const grpc::ServerContextBase& ctx) const;
  grpc::Status DoTriggerDownloadTask(const grpc::ServerContextBase* ctx,
                                     const df::dfdaemon::v1::TriggerDownloadTaskRequest* req);

  TaskManager* const manager_;
  const ServiceTrust* const trust_;
  AvailabilityStreams streams_;
};

// Maps a Status to the API's error category.
df::dfdaemon::v1::ErrorCode ErrorCodeOf(const Status& s);

}  // namespace df
