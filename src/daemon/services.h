// dfdaemon's gRPC services: DfdaemonDownload (local API on a unix socket, used by dfget) and
// DfdaemonUpload (TCP, used by children for availability streams and by the scheduler to
// trigger a seed download). Both are thin: they validate input and call TaskManager/PieceStore.
#pragma once

#include "daemon/task_manager.h"
#include "dfdaemon.grpc.pb.h"

namespace df {

// Thread-safe; `manager` and `store` outlive the service.
class DownloadService final : public df::dfdaemon::v1::DfdaemonDownload::Service {
 public:
  DownloadService(TaskManager* manager, PieceStore* store) : manager_(manager), store_(store) {}

  grpc::Status Download(grpc::ServerContext* ctx, const df::dfdaemon::v1::DownloadRequest* req,
                        grpc::ServerWriter<df::dfdaemon::v1::DownloadResponse>* writer) override;
  grpc::Status StatTask(grpc::ServerContext* ctx, const df::dfdaemon::v1::StatTaskRequest* req,
                        df::dfdaemon::v1::StatTaskResponse* resp) override;
  grpc::Status DeleteTask(grpc::ServerContext* ctx, const df::dfdaemon::v1::DeleteTaskRequest* req,
                          df::dfdaemon::v1::DeleteTaskResponse* resp) override;

 private:
  TaskManager* const manager_;
  PieceStore* const store_;
};

class UploadService final : public df::dfdaemon::v1::DfdaemonUpload::Service {
 public:
  UploadService(TaskManager* manager, PieceStore* store) : manager_(manager), store_(store) {}

  grpc::Status SyncPieces(grpc::ServerContext* ctx, const df::dfdaemon::v1::SyncPiecesRequest* req,
                          grpc::ServerWriter<df::dfdaemon::v1::PieceAvailability>* writer) override;
  grpc::Status TriggerDownloadTask(grpc::ServerContext* ctx,
                                   const df::dfdaemon::v1::TriggerDownloadTaskRequest* req,
                                   df::dfdaemon::v1::TriggerDownloadTaskResponse* resp) override;

 private:
  TaskManager* const manager_;
  PieceStore* const store_;
};

// Maps a Status to the API's error category.
df::dfdaemon::v1::ErrorCode ErrorCodeOf(const Status& s);

}  // namespace df
