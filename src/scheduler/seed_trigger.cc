#include "scheduler/seed_trigger.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

namespace df::scheduler {
namespace {

// Everything one asynchronous call needs to stay alive until its callback runs.
struct TriggerCall {
  grpc::ClientContext context;
  df::dfdaemon::v1::TriggerDownloadTaskRequest request;
  df::dfdaemon::v1::TriggerDownloadTaskResponse response;
};

}  // namespace

GrpcSeedTrigger::~GrpcSeedTrigger() {
  std::unique_lock lock(mu_);
  idle_.wait(lock, [this] { return in_flight_ == 0; });
}

df::dfdaemon::v1::DfdaemonUpload::Stub* GrpcSeedTrigger::StubFor(const std::string& address) {
  auto& stub = stubs_[address];
  if (!stub) {
    stub = df::dfdaemon::v1::DfdaemonUpload::NewStub(grpc::CreateChannel(
        address, auth_ ? auth_->ChannelCredentials() : grpc::InsecureChannelCredentials()));
  }
  return stub.get();
}

void GrpcSeedTrigger::CallDone() {
  std::lock_guard lock(mu_);
  if (--in_flight_ == 0) idle_.notify_all();
}

void GrpcSeedTrigger::Trigger(const df::scheduler::v1::Host& seed,
                              const df::scheduler::v1::TaskInfo& task, DoneCallback done) {
  const std::string address = seed.ip() + ":" + std::to_string(seed.grpc_port());
  auto call = std::make_shared<TriggerCall>();
  *call->request.mutable_task() = task;
  call->context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::milliseconds(timeout_ms_));
  if (auth_) auth_->Attach(&call->context);
  df::dfdaemon::v1::DfdaemonUpload::Stub* stub;
  {
    std::lock_guard lock(mu_);
    stub = StubFor(address);
    ++in_flight_;
  }
  std::string task_id = task.task_id();
  stub->async()->TriggerDownloadTask(
      &call->context, &call->request, &call->response,
      [this, call, task_id, address, done = std::move(done)](grpc::Status s) {
        Status status = s.ok() ? Status::Ok()
                               : Unavailable("trigger seed " + address + ": " + s.error_message());
        done(task_id, status);
        CallDone();
      });
}

}  // namespace df::scheduler
