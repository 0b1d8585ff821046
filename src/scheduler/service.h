// df.scheduler.v1.Scheduler over gRPC, with the callback API: an AnnouncePeer stream costs no
// thread while idle, so thousands of peers can hold their streams open.
//
// Error mapping: a first message that is not a valid register ends the stream with
// INVALID_ARGUMENT; a message for a peer the scheduler no longer knows ends it with NOT_FOUND
// (the peer should register again); AnnounceHost with an empty id is INVALID_ARGUMENT; StatTask
// for an unknown task is NOT_FOUND. Bad input never crashes the process.
#pragma once

#include "scheduler.grpc.pb.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {

// Thread-safe (gRPC calls it from its own threads). `scheduler` is borrowed and must outlive the
// gRPC server this service is registered with (shut the server down first).
class SchedulerService final : public df::scheduler::v1::Scheduler::CallbackService {
 public:
  explicit SchedulerService(Scheduler* scheduler) : scheduler_(*scheduler) {}

  grpc::ServerUnaryReactor* AnnounceHost(
      grpc::CallbackServerContext* context, const df::scheduler::v1::AnnounceHostRequest* request,
      df::scheduler::v1::AnnounceHostResponse* response) override;
  grpc::ServerUnaryReactor* LeaveHost(grpc::CallbackServerContext* context,
                                      const df::scheduler::v1::LeaveHostRequest* request,
                                      df::scheduler::v1::LeaveHostResponse* response) override;
  grpc::ServerBidiReactor<df::scheduler::v1::AnnouncePeerRequest,
                          df::scheduler::v1::AnnouncePeerResponse>*
  AnnouncePeer(grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* StatTask(grpc::CallbackServerContext* context,
                                     const df::scheduler::v1::StatTaskRequest* request,
                                     df::scheduler::v1::StatTaskResponse* response) override;

 private:
  Scheduler& scheduler_;
};

// Maps a Status to a gRPC status with the same meaning.
grpc::Status ToGrpcStatus(const Status& status);

}  // namespace df::scheduler
