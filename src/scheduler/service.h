// df.scheduler.v1.Scheduler over gRPC, with the callback API: an AnnouncePeer stream costs no
// thread while idle, so thousands of peers can hold their streams open.
//
// Error mapping: a first message that is not a valid register ends the stream with
// INVALID_ARGUMENT; a message for a peer the scheduler no longer knows ends it with NOT_FOUND
// (the peer should register again); AnnounceHost with an empty id is INVALID_ARGUMENT; StatTask
// for an unknown task is NOT_FOUND. Bad input never crashes the process.
//
// Trust: with a token configured every RPC without it is UNAUTHENTICATED before its request is
// looked at; with mutual TLS the handshake already refused clients without a certificate of the
// cluster's CA. With neither, a caller is known only by its address, which is what AnnounceHost
// and LeaveHost check (scheduler.h).
#pragma once

#include "common/auth.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/network_topology.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {

// Thread-safe (gRPC calls it from its own threads). `scheduler` is borrowed and must outlive the
// gRPC server this service is registered with (shut the server down first).
class SchedulerService final : public df::scheduler::v1::Scheduler::CallbackService {
 public:
  // `auth` (outlives the service) is checked on every RPC. `topology` (may be null: SyncProbes
  // is then UNIMPLEMENTED) is borrowed like `scheduler`.
  SchedulerService(Scheduler* scheduler, const ControlAuth* auth,
                   NetworkTopology* topology = nullptr, size_t probe_sample_size = 50)
      : scheduler_(*scheduler),
        auth_(*auth),
        topology_(topology),
        probe_sample_size_(probe_sample_size) {}

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
  // Latency probes (sync_probes.cc): one round per stream. ProbeStarted (first, once) is answered
  // with the hosts to probe; ProbeFinished / ProbeFailed report on those hosts only (reports on
  // hosts not assigned in this stream are ignored); the stream ends OK when the client
  // half-closes. NOT_FOUND when the host is not announced, PERMISSION_DENIED when an
  // unauthenticated caller is not at the host's address, INVALID_ARGUMENT for a message naming
  // another host or a second ProbeStarted, RESOURCE_EXHAUSTED past kMaxProbeMessages messages.
  // Messages of unknown type are ignored.
  static constexpr int kMaxProbeMessages = 16;
  grpc::ServerBidiReactor<df::scheduler::v1::SyncProbesRequest,
                          df::scheduler::v1::SyncProbesResponse>*
  SyncProbes(grpc::CallbackServerContext* context) override;

 private:
  // "" for an authenticated caller (token or client certificate); its address otherwise (see
  // scheduler.h).
  std::string CallerIp(const grpc::CallbackServerContext& context) const;

  Scheduler& scheduler_;
  const ControlAuth& auth_;
  NetworkTopology* const topology_;
  const size_t probe_sample_size_;
};

// Maps a Status to a gRPC status with the same meaning.
grpc::Status ToGrpcStatus(const Status& status);

}  // namespace df::scheduler
