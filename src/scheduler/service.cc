#include "scheduler/service.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "common/log.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;

// One AnnouncePeer stream. gRPC drives reads and writes on its threads; the Scheduler pushes
// responses through Send from any thread. Lifetime: owned by shared_ptrs (the one in `self_`
// until gRPC calls OnDone, and the Scheduler's Peer::stream), so a late Send after the RPC ended
// finds a live object and returns false.
class AnnouncePeerStream final
    : public grpc::ServerBidiReactor<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>,
      public PeerStream {
 public:
  static AnnouncePeerStream* Start(Scheduler* scheduler) {
    auto stream = std::make_shared<AnnouncePeerStream>(scheduler);
    stream->self_ = stream;
    stream->StartRead(&stream->request_);
    return stream.get();
  }

  explicit AnnouncePeerStream(Scheduler* scheduler) : scheduler_(*scheduler) {}

  bool Send(const v1::AnnouncePeerResponse& response) override {
    std::lock_guard lock(mu_);
    if (done_ || finishing_) return false;
    if (queue_.size() >= kMaxQueuedResponses) {
      // A peer that does not read its stream must not grow the scheduler's memory: end it.
      finishing_ = true;
      final_status_ = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                   "peer reads its AnnouncePeer stream too slowly");
      // key_ belongs to the read chain: the ids come with its "announce stream ended" line.
      DF_LOG_WARN("ending an announce stream: its peer reads too slowly ({} responses queued)",
                  queue_.size());
      return false;
    }
    queue_.push_back(response);
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
    return true;
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the peer half-closed or went away
      ReportClosed("peer closed it");
      FinishWhenDrained(grpc::Status::OK);
      return;
    }
    Status status = key_ ? scheduler_.HandlePeerMessage(*key_, request_) : Register();
    if (!status.ok()) {
      if (key_) {
        DF_LOG_WARN("announce stream ended task_id={} peer_id={} reason=message refused: {}",
                    key_->task_id, key_->peer_id, status.ToString());
      } else {
        DF_LOG_INFO("announce stream ended before a register: {}", status.ToString());
      }
      ReportClosed("message refused");
      FinishWhenDrained(ToGrpcStatus(status));
      return;
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    queue_.pop_front();
    if (!ok) queue_.clear();  // the stream is broken; reads fail too and finish it
    if (!queue_.empty()) {
      StartWrite(&queue_.front());
      return;
    }
    writing_ = false;
    if (finishing_) FinishLocked();
  }

  void OnDone() override {
    ReportClosed("RPC over (cancelled or connection lost)");
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    self_.reset();  // may destroy this object when the Scheduler holds no reference
  }

 private:
  Status Register() {
    auto key = scheduler_.RegisterPeer(request_, self_);
    if (!key.ok()) return key.status();
    key_ = std::move(key).value();
    return Status::Ok();
  }

  // Tells the Scheduler once that this stream is over (the peer is Left unless it finished);
  // `reason` is logged (debug: one line per peer of every task).
  void ReportClosed(const char* reason) {
    if (!key_ || closed_reported_.exchange(true)) return;
    DF_LOG_DEBUG("announce stream ended task_id={} peer_id={} reason={}", key_->task_id,
                 key_->peer_id, reason);
    scheduler_.StreamClosed(*key_, this);
  }

  void FinishWhenDrained(grpc::Status status) {
    std::lock_guard lock(mu_);
    if (finishing_) return;
    finishing_ = true;
    final_status_ = std::move(status);
    if (!writing_) FinishLocked();
  }

  void FinishLocked() {
    if (finished_) return;
    finished_ = true;
    Finish(final_status_);  // OnDone is never run inline here, so holding mu_ is safe
  }

  static constexpr size_t kMaxQueuedResponses = 256;

  Scheduler& scheduler_;
  std::shared_ptr<AnnouncePeerStream> self_;  // released in OnDone
  // Touched only by gRPC's read chain (one reaction at a time).
  v1::AnnouncePeerRequest request_;
  std::optional<PeerKey> key_;
  std::atomic<bool> closed_reported_{false};

  std::mutex mu_;
  std::deque<v1::AnnouncePeerResponse> queue_;  // GUARDED_BY(mu_) front is being written
  bool writing_ = false;                        // GUARDED_BY(mu_)
  bool finishing_ = false;                      // GUARDED_BY(mu_) no more Sends accepted
  bool finished_ = false;                       // GUARDED_BY(mu_) Finish called
  bool done_ = false;                           // GUARDED_BY(mu_)
  grpc::Status final_status_;                   // GUARDED_BY(mu_)
};

}  // namespace

grpc::Status ToGrpcStatus(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, status.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, status.message()};
    case StatusCode::kUnavailable:
      return {grpc::StatusCode::UNAVAILABLE, status.message()};
    case StatusCode::kDeadlineExceeded:
      return {grpc::StatusCode::DEADLINE_EXCEEDED, status.message()};
    case StatusCode::kCancelled:
      return {grpc::StatusCode::CANCELLED, status.message()};
    case StatusCode::kPermissionDenied:
      return {grpc::StatusCode::PERMISSION_DENIED, status.message()};
    default:
      return {grpc::StatusCode::INTERNAL, status.message()};
  }
}

namespace {

// An AnnouncePeer stream refused before its first read (not authenticated): it ends at once.
class RejectedStream final
    : public grpc::ServerBidiReactor<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse> {
 public:
  explicit RejectedStream(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

std::string SchedulerService::CallerIp(const grpc::CallbackServerContext& context) const {
  if (auth_.authenticates_callers()) return "";  // authenticated by Check before this is called
  std::string ip = PeerIp(context.peer());
  // A transport without an address (in-process, unix socket) is local: treated as trusted.
  return ip;
}

grpc::ServerUnaryReactor* SchedulerService::AnnounceHost(grpc::CallbackServerContext* context,
                                                         const v1::AnnounceHostRequest* request,
                                                         v1::AnnounceHostResponse*) {
  auto* reactor = context->DefaultReactor();
  grpc::Status auth = auth_.Check(*context);
  reactor->Finish(auth.ok()
                      ? ToGrpcStatus(scheduler_.AnnounceHost(request->host(), CallerIp(*context)))
                      : auth);
  return reactor;
}

grpc::ServerUnaryReactor* SchedulerService::LeaveHost(grpc::CallbackServerContext* context,
                                                      const v1::LeaveHostRequest* request,
                                                      v1::LeaveHostResponse*) {
  auto* reactor = context->DefaultReactor();
  grpc::Status auth = auth_.Check(*context);
  reactor->Finish(auth.ok()
                      ? ToGrpcStatus(scheduler_.LeaveHost(request->host_id(), CallerIp(*context)))
                      : auth);
  return reactor;
}

grpc::ServerBidiReactor<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>*
SchedulerService::AnnouncePeer(grpc::CallbackServerContext* context) {
  grpc::Status auth = auth_.Check(*context);
  if (!auth.ok()) return new RejectedStream(auth);  // deletes itself in OnDone
  return AnnouncePeerStream::Start(&scheduler_);
}

grpc::ServerUnaryReactor* SchedulerService::StatTask(grpc::CallbackServerContext* context,
                                                     const v1::StatTaskRequest* request,
                                                     v1::StatTaskResponse* response) {
  auto* reactor = context->DefaultReactor();
  grpc::Status auth = auth_.Check(*context);
  if (!auth.ok()) {
    reactor->Finish(auth);
    return reactor;
  }
  auto stat = scheduler_.StatTask(request->task_id());
  if (stat.ok()) *response = std::move(stat).value();
  reactor->Finish(ToGrpcStatus(stat.status()));
  return reactor;
}

}  // namespace df::scheduler
