// SchedulerService::SyncProbes: the scheduler side of one latency probe round (service.h).
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/log.h"
#include "scheduler/service.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;

using Reactor = grpc::ServerBidiReactor<v1::SyncProbesRequest, v1::SyncProbesResponse>;

// One SyncProbes stream. gRPC runs at most one read reaction and one write reaction at a time,
// possibly concurrently: the write/finish state is under mu_. Deletes itself in OnDone.
class SyncProbesStream final : public Reactor {
 public:
  SyncProbesStream(Scheduler* scheduler, NetworkTopology* topology, std::string caller_ip,
                   size_t sample_size)
      : scheduler_(*scheduler),
        topology_(*topology),
        caller_ip_(std::move(caller_ip)),
        sample_size_(sample_size) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or went away): the round is over
      FinishWhenWritten(grpc::Status::OK);
      return;
    }
    if (++messages_ > SchedulerService::kMaxProbeMessages) {
      FinishWhenWritten({grpc::StatusCode::RESOURCE_EXHAUSTED, "too many SyncProbes messages"});
      return;
    }
    Status s = Handle();
    if (!s.ok()) {
      FinishWhenWritten(ToGrpcStatus(s));
      return;
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    if (final_status_) FinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  Status Handle() {
    if (host_id_.empty()) {
      host_id_ = request_.host_id();
    } else if (request_.host_id() != host_id_) {
      return InvalidArgument("sync probes: one stream reports for one host");
    }
    switch (request_.request_case()) {
      case v1::SyncProbesRequest::kProbeStarted:
        return OnStarted();
      case v1::SyncProbesRequest::kProbeFinished:
        OnFinished(request_.probe_finished());
        return Status::Ok();
      case v1::SyncProbesRequest::kProbeFailed:
        OnFailed(request_.probe_failed());
        return Status::Ok();
      default:
        return Status::Ok();  // unknown message: ignored (forward compatibility)
    }
  }

  Status OnStarted() {
    if (started_) return InvalidArgument("sync probes: one ProbeStarted per stream");
    started_ = true;
    auto candidates = scheduler_.ProbeCandidates(host_id_, caller_ip_, sample_size_);
    if (!candidates.ok()) return candidates.status();
    // Store I/O happens here, on this gRPC thread, never under the scheduler's mutex.
    for (auto& host : topology_.AssignTargets(host_id_, std::move(candidates).value())) {
      assigned_.insert(host.id());
      *response_.add_hosts() = std::move(host);
    }
    std::lock_guard lock(mu_);
    writing_ = true;
    StartWrite(&response_);
    return Status::Ok();
  }

  void OnFinished(const v1::ProbeFinished& m) {
    std::vector<v1::Probe> probes;
    for (const auto& p : m.probes()) {
      if (assigned_.contains(p.host_id())) probes.push_back(p);
      if (probes.size() == NetworkTopology::kMaxProbesPerMessage) break;
    }
    topology_.Record(host_id_, probes);
  }

  void OnFailed(const v1::ProbeFailed& m) {
    int taken = 0;
    for (const auto& f : m.probes()) {
      if (!assigned_.contains(f.host_id())) continue;
      topology_.RecordFailure(host_id_, f.host_id(), f.description());
      if (++taken == static_cast<int>(NetworkTopology::kMaxProbesPerMessage)) break;
    }
  }

  void FinishWhenWritten(grpc::Status status) {
    std::lock_guard lock(mu_);
    if (final_status_) return;
    final_status_ = std::move(status);
    if (!writing_) FinishLocked();
  }

  void FinishLocked() {
    if (finished_) return;
    finished_ = true;
    Finish(*final_status_);
  }

  Scheduler& scheduler_;
  NetworkTopology& topology_;
  const std::string caller_ip_;
  const size_t sample_size_;
  // Touched only by the read chain (one reaction at a time).
  v1::SyncProbesRequest request_;
  std::string host_id_;
  bool started_ = false;
  int messages_ = 0;
  std::unordered_set<std::string> assigned_;  // targets of this round: the only ones reported
  v1::SyncProbesResponse response_;           // written once, after OnStarted filled it

  std::mutex mu_;
  bool writing_ = false;                      // GUARDED_BY(mu_)
  std::optional<grpc::Status> final_status_;  // GUARDED_BY(mu_)
  bool finished_ = false;                     // GUARDED_BY(mu_)
};

class RejectedProbes final : public Reactor {
 public:
  explicit RejectedProbes(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

Reactor* SchedulerService::SyncProbes(grpc::CallbackServerContext* context) {
  grpc::Status auth = auth_.Check(*context);
  if (!auth.ok()) return new RejectedProbes(auth);
  if (topology_ == nullptr) {
    return new RejectedProbes({grpc::StatusCode::UNIMPLEMENTED, "latency probes are off"});
  }
  return new SyncProbesStream(&scheduler_, topology_, CallerIp(*context), probe_sample_size_);
}

}  // namespace df::scheduler
