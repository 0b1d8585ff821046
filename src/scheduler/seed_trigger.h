// Triggering a seed peer: the scheduler asks a seed host's dfdaemon to download a new task from
// the origin (df.dfdaemon.v1.DfdaemonUpload/TriggerDownloadTask). The seed's dfdaemon then
// registers its own peer for the task over AnnouncePeer like any peer.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/auth.h"
#include "common/status.h"
#include "dfdaemon.grpc.pb.h"

namespace df::scheduler {

class SeedTrigger {
 public:
  // Runs once per Trigger with the outcome; on any thread, possibly inline inside Trigger.
  using DoneCallback = std::function<void(const std::string& task_id, const Status& status)>;

  virtual ~SeedTrigger() = default;

  // Starts the trigger and returns at once (never blocks on the network). Must not be called
  // while holding a lock that `done` takes.
  virtual void Trigger(const df::scheduler::v1::Host& seed, const df::scheduler::v1::TaskInfo& task,
                       DoneCallback done) = 0;
};

// Calls TriggerDownloadTask on the seed host's ip:grpc_port with the gRPC callback API.
// Channels are cached per address. Thread-safe. The destructor waits for in-flight calls (each
// bounded by `timeout_ms`), so `done` callbacks never outlive this object.
class GrpcSeedTrigger : public SeedTrigger {
 public:
  // `auth` (null: none; outlives this object) gives every channel its credentials (mutual TLS)
  // and every call its token.
  explicit GrpcSeedTrigger(const ControlAuth* auth = nullptr, uint64_t timeout_ms = 5000)
      : auth_(auth), timeout_ms_(timeout_ms) {}
  ~GrpcSeedTrigger() override;

  void Trigger(const df::scheduler::v1::Host& seed, const df::scheduler::v1::TaskInfo& task,
               DoneCallback done) override;

 private:
  df::dfdaemon::v1::DfdaemonUpload::Stub* StubFor(const std::string& address);
  void CallDone();

  const ControlAuth* const auth_;
  const uint64_t timeout_ms_;
  std::mutex mu_;
  std::condition_variable idle_;
  int in_flight_ = 0;  // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<df::dfdaemon::v1::DfdaemonUpload::Stub>>
      stubs_;  // GUARDED_BY(mu_)
};

}  // namespace df::scheduler
