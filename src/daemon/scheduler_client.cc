#include "daemon/scheduler_client.h"

#include <algorithm>

#include "common/log.h"
#include "common/net.h"
#include "common/thread_name.h"
#include "daemon/config.h"

namespace df {

namespace sv1 = df::scheduler::v1;

SchedulerClient::SchedulerClient(std::string addresses, const ControlAuth* auth,
                                 std::function<void(sv1::Host*)> refresh)
    : addresses_(std::move(addresses)), auth_(auth), refresh_(std::move(refresh)) {
  auto parsed = ParseSchedulerAddresses(addresses_);
  std::vector<std::string> list =
      parsed.ok() ? parsed.value() : std::vector<std::string>{addresses_};
  for (auto& a : list) {
    auto e = std::make_unique<Endpoint>();
    e->address_ = a;
    e->channel_ = grpc::CreateChannel(a, auth_->ChannelCredentials());
    e->stub_ = sv1::Scheduler::NewStub(e->channel_);
    endpoints_.push_back(std::move(e));
  }
}

SchedulerClient::~SchedulerClient() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (host_id_.empty()) return;
  for (auto& e : endpoints_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    Prepare(&ctx);
    sv1::LeaveHostRequest req;
    req.set_host_id(host_id_);
    sv1::LeaveHostResponse resp;
    (void)e->stub_->LeaveHost(&ctx, req, &resp);
  }
}

const std::string& SchedulerClient::address() const { return addresses_; }

SchedulerClient::Endpoint& SchedulerClient::ForTask(const std::string& task_id) {
  Endpoint* best = nullptr;
  Endpoint* best_healthy = nullptr;
  uint64_t best_score = 0, best_healthy_score = 0;
  for (auto& e : endpoints_) {
    const uint64_t score = RendezvousScore(e->address_, task_id);
    if (!best || score > best_score) {
      best = e.get();
      best_score = score;
    }
    if (e->healthy() && (!best_healthy || score > best_healthy_score)) {
      best_healthy = e.get();
      best_healthy_score = score;
    }
  }
  return best_healthy ? *best_healthy : *best;
}

SchedulerClient::Endpoint& SchedulerClient::Any() {
  for (auto& e : endpoints_) {
    if (e->healthy()) return *e;
  }
  return *endpoints_.front();
}

void SchedulerClient::Start(uint64_t interval_ms) {
  thread_ = NamedThread("df-announce", [this, interval_ms] { Loop(interval_ms); });
}

void SchedulerClient::Announce(Endpoint& e, const sv1::AnnounceHostRequest& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  Prepare(&ctx);
  sv1::AnnounceHostResponse resp;
  grpc::Status s = e.stub_->AnnounceHost(&ctx, req, &resp);
  if (!s.ok() && e.was_ok_) {
    DF_LOG_WARN("announce host to scheduler {} failed: {}", e.address_, s.error_message());
  } else if (s.ok() && !e.was_ok_) {
    DF_LOG_INFO("announce host to scheduler {} recovered", e.address_);
  }
  e.was_ok_ = s.ok();
  e.healthy_.store(s.ok(), std::memory_order_release);
  if (s.ok()) announced_.store(true, std::memory_order_release);
}

void SchedulerClient::Loop(uint64_t interval_ms) {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    l.unlock();
    sv1::AnnounceHostRequest req;
    refresh_(req.mutable_host());
    host_id_ = req.host().id();
    for (auto& e : endpoints_) Announce(*e, req);
    l.lock();
    cv_.wait_for(l, std::chrono::milliseconds(interval_ms), [this] { return stop_; });
  }
}

}  // namespace df
