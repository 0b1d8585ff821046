// The daemon's link to its scheduler: the gRPC stub, and a background loop that announces
// this host (identity, capacity, live upload load) every announce interval.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/auth.h"
#include "scheduler.grpc.pb.h"

namespace df {

// Thread-safe. Start() launches the announce loop; the destructor stops it (after LeaveHost).
class SchedulerClient {
 public:
  // `address` is "ip:port". `host` is filled in by `refresh` before each announce (live load).
  // `auth` (outlives the client) gives the channel its credentials (mutual TLS) and every call
  // its token.
  SchedulerClient(std::string address, const ControlAuth* auth,
                  std::function<void(df::scheduler::v1::Host*)> refresh);
  ~SchedulerClient();

  void Start(uint64_t interval_ms);
  df::scheduler::v1::Scheduler::Stub* stub() { return stub_.get(); }
  const std::string& address() const { return address_; }
  // True once an AnnounceHost succeeded: the scheduler knows this host (the prober waits for it).
  bool announced() const { return announced_.load(std::memory_order_acquire); }
  // Adds what every call to the scheduler carries (the auth token) to `context`.
  void Prepare(grpc::ClientContext* context) const { auth_->Attach(context); }

 private:
  void Loop(uint64_t interval_ms);

  const std::string address_;
  const ControlAuth* const auth_;
  std::function<void(df::scheduler::v1::Host*)> refresh_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<df::scheduler::v1::Scheduler::Stub> stub_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::atomic<bool> announced_{false};
  std::string host_id_;
  std::thread thread_;
};

}  // namespace df
