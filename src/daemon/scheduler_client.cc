#include "daemon/scheduler_client.h"

#include "common/log.h"

namespace df {

namespace sv1 = df::scheduler::v1;

SchedulerClient::SchedulerClient(std::string address, const ControlAuth* auth,
                                 std::function<void(sv1::Host*)> refresh)
    : address_(std::move(address)),
      auth_(auth),
      refresh_(std::move(refresh)),
      channel_(grpc::CreateChannel(address_, auth_->ChannelCredentials())),
      stub_(sv1::Scheduler::NewStub(channel_)) {}

SchedulerClient::~SchedulerClient() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (!host_id_.empty()) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    Prepare(&ctx);
    sv1::LeaveHostRequest req;
    req.set_host_id(host_id_);
    sv1::LeaveHostResponse resp;
    (void)stub_->LeaveHost(&ctx, req, &resp);
  }
}

void SchedulerClient::Start(uint64_t interval_ms) {
  thread_ = std::thread([this, interval_ms] { Loop(interval_ms); });
}

void SchedulerClient::Loop(uint64_t interval_ms) {
  bool was_ok = true;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    l.unlock();
    sv1::AnnounceHostRequest req;
    refresh_(req.mutable_host());
    host_id_ = req.host().id();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    Prepare(&ctx);
    sv1::AnnounceHostResponse resp;
    grpc::Status s = stub_->AnnounceHost(&ctx, req, &resp);
    if (!s.ok() && was_ok) {
      DF_LOG_WARN("announce host to scheduler {} failed: {}", address_, s.error_message());
    } else if (s.ok() && !was_ok) {
      DF_LOG_INFO("announce host to scheduler {} recovered", address_);
    }
    was_ok = s.ok();
    if (s.ok()) announced_.store(true, std::memory_order_release);
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(interval_ms), [this] { return stop_; });
  }
}

}  // namespace df
