// The daemon's link to its schedulers: one gRPC stub per scheduler, and a background loop that
// announces this host (identity, capacity, live upload load) to every one of them each announce
// interval.
//
// Several schedulers ("a:8002,b:8002,c:8002"): every task belongs to one of them, chosen by
// rendezvous hashing of the task id over the scheduler addresses (a hash that every daemon
// computes alike, so all peers of a task meet on one scheduler; a scheduler that leaves moves
// only its own tasks). A scheduler whose last announce or stream failed is skipped until an
// announce to it succeeds again: its tasks go to the next scheduler in the task's order, and
// come back when it does (the peers register again, telling what they hold).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/auth.h"
#include "common/status.h"
#include "scheduler.grpc.pb.h"

namespace df {

// Thread-safe. Start() launches the announce loop; the destructor stops it (after LeaveHost).
class SchedulerClient {
 public:
  // `addresses` is "ip:port" or a comma list of them (ParseSchedulerAddresses; an unparsable
  // list is taken as one address, which then fails to connect). `host` is filled in by
  // `refresh` before each announce (live load). `auth` (outlives the client) gives the channels
  // their credentials (mutual TLS) and every call its token.
  SchedulerClient(std::string addresses, const ControlAuth* auth,
                  std::function<void(df::scheduler::v1::Host*)> refresh);
  ~SchedulerClient();

  void Start(uint64_t interval_ms);

  // The scheduler of `task_id`: the first healthy one in the task's rendezvous order (the first
  // one when none is healthy). Stable while the set of healthy schedulers does not change.
  struct Endpoint;
  Endpoint& ForTask(const std::string& task_id);
  // Any healthy scheduler (the first one when none is): for calls that concern no task.
  Endpoint& Any();
  df::scheduler::v1::Scheduler::Stub* stub() { return Any().stub(); }
  const std::string& address() const;  // every address, as given

  // True once an AnnounceHost to some scheduler succeeded (the prober waits for it).
  bool announced() const { return announced_.load(std::memory_order_acquire); }
  // Adds what every call to the scheduler carries (the auth token) to `context`.
  void Prepare(grpc::ClientContext* context) const { auth_->Attach(context); }

  struct Endpoint {
    const std::string& address() const { return address_; }
    df::scheduler::v1::Scheduler::Stub* stub() { return stub_.get(); }
    bool healthy() const { return healthy_.load(std::memory_order_acquire); }
    // A stream or call to this scheduler failed: skip it until an announce succeeds again.
    void MarkFailed() { healthy_.store(false, std::memory_order_release); }

    std::string address_;
    std::shared_ptr<grpc::Channel> channel_;
    std::unique_ptr<df::scheduler::v1::Scheduler::Stub> stub_;
    std::atomic<bool> healthy_{true};
    bool was_ok_ = true;  // announce loop only: for one log line per change
  };

 private:
  void Loop(uint64_t interval_ms);
  void Announce(Endpoint& e, const df::scheduler::v1::AnnounceHostRequest& req);

  const std::string addresses_;
  const ControlAuth* const auth_;
  std::function<void(df::scheduler::v1::Host*)> refresh_;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;  // fixed after construction
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::atomic<bool> announced_{false};
  std::string host_id_;
  std::thread thread_;
};

}  // namespace df
