#include "daemon/scheduler_session.h"

#include "common/log.h"
#include "common/thread_name.h"

namespace df {

namespace sv1 = df::scheduler::v1;

SchedulerSession::SchedulerSession(SchedulerClient* client, std::string task_id,
                                   std::string host_id, std::string peer_id, OnResponse on_response,
                                   OnEnd on_end)
    : client_(client),
      task_id_(std::move(task_id)),
      host_id_(std::move(host_id)),
      peer_id_(std::move(peer_id)),
      on_response_(std::move(on_response)),
      on_end_(std::move(on_end)) {}

SchedulerSession::~SchedulerSession() { Close(); }

void SchedulerSession::Stamp(sv1::AnnouncePeerRequest& req) const {
  req.set_host_id(host_id_);
  req.set_task_id(task_id_);
  req.set_peer_id(peer_id_);
}

void SchedulerSession::FinishStream() {
  std::unique_ptr<Stream> stream;
  std::unique_ptr<grpc::ClientContext> context;
  {
    std::lock_guard<std::mutex> wl(write_mu_);
    std::lock_guard<std::mutex> l(mu_);
    stream = std::move(stream_);
    context = std::move(context_);
  }
  // Its reader returned (the scheduler sent its status, or the call was cancelled) and no Send
  // can reach it any more: Finish returns at once and releases the call; the stream goes
  // before its context.
  if (stream) (void)stream->Finish();
}

bool SchedulerSession::Open(sv1::AnnouncePeerRequest registration) {
  if (reader_.joinable()) reader_.join();  // the previous stream ended: that is how we got here
  FinishStream();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_) return false;
  }
  auto context = std::make_unique<grpc::ClientContext>();
  client_->Prepare(context.get());
  // The task's scheduler: the same one for every peer of the task (scheduler_client.h).
  SchedulerClient::Endpoint& scheduler = client_->ForTask(task_id_);
  auto stream = scheduler.stub()->AnnouncePeer(context.get());
  Stamp(registration);
  if (!stream->Write(registration)) {
    grpc::Status s = stream->Finish();
    DF_LOG_WARN("register with scheduler {} failed: {}", scheduler.address(), s.error_message());
    scheduler.MarkFailed();
    std::lock_guard<std::mutex> l(mu_);
    endpoint_ = &scheduler;
    return false;
  }
  Stream* reader = stream.get();
  {
    std::lock_guard<std::mutex> wl(write_mu_);
    std::lock_guard<std::mutex> l(mu_);
    context_ = std::move(context);
    stream_ = std::move(stream);
    endpoint_ = &scheduler;
    open_ = true;
    reading_ = true;
  }
  reader_ = NamedThread("df-sched-read", [this, reader] { Read(reader); });
  return true;
}

void SchedulerSession::Read(Stream* stream) {
  sv1::AnnouncePeerResponse resp;
  while (stream->Read(&resp)) on_response_(resp);
  bool lost;
  {
    std::lock_guard<std::mutex> l(mu_);
    open_ = false;
    reading_ = false;
    lost = !closing_;
    cv_.notify_all();
  }
  if (lost) on_end_();
}

void SchedulerSession::Send(sv1::AnnouncePeerRequest& req) {
  Stamp(req);
  std::lock_guard<std::mutex> wl(write_mu_);
  if (stream_) (void)stream_->Write(req);
}

bool SchedulerSession::open() const {
  std::lock_guard<std::mutex> l(mu_);
  return open_;
}

std::string SchedulerSession::address() const {
  std::lock_guard<std::mutex> l(mu_);
  return endpoint_ ? endpoint_->address() : std::string();
}

void SchedulerSession::MarkSchedulerFailed() {
  std::lock_guard<std::mutex> l(mu_);
  if (endpoint_) endpoint_->MarkFailed();
}

void SchedulerSession::Close(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> wl(write_mu_);
    std::lock_guard<std::mutex> l(mu_);
    if (!closing_ && open_) (void)stream_->WritesDone();
    closing_ = true;
  }
  std::unique_lock<std::mutex> l(mu_);
  // The scheduler closes its side after WritesDone; cancel if it does not in time.
  cv_.wait_for(l, grace, [this] { return !reading_; });
  if (context_) context_->TryCancel();
  l.unlock();
  if (reader_.joinable()) reader_.join();
  FinishStream();
}

}  // namespace df
