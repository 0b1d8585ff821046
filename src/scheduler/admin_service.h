// The SchedulerAdmin gRPC service (proto/scheduler_admin.proto): operator calls, today image
// preheat (docs/oci.md, "Preheat").
//
// Who may call: with the cluster's token or mutual TLS configured, a caller that passes
// ControlAuth::Check (the same proof every control RPC needs); on a scheduler with neither, only
// a caller on the scheduler's own host (loopback), since the call makes the scheduler contact a
// registry and seed peers fetch from it.
//
// Threads: gRPC's callback threads only queue a call; one worker thread resolves images (network
// I/O bounded by timeouts) and finishes the calls, one at a time, with at most kMaxQueuedCalls
// waiting (more: RESOURCE_EXHAUSTED). Stop() fails the queued calls and joins the worker; call it
// before the gRPC server shuts down.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/oci_image.h"
#include "common/auth.h"
#include "scheduler/scheduler.h"
#include "scheduler_admin.grpc.pb.h"

namespace df::scheduler {

// OK when `context` may make admin calls (see above); UNAUTHENTICATED or PERMISSION_DENIED
// with the reason otherwise.
grpc::Status CheckAdminCaller(const ControlAuth& auth, const grpc::ServerContextBase& context);

// Resolves the request's image (oci_image.h) and preheats each of its blobs on `scheduler`: a
// task keyed by the blob's digest (TaskSpec::id_from_digest, as the daemons' registry mirror keys
// blob GETs) whose URL is the blob's URL at the registry and whose headers carry the
// authorization the registry asked for. Errors: InvalidArgument for a bad reference or platform,
// and those of ResolveImage. A blob the scheduler cannot preheat is reported in its state, not
// as an error of the call.
// `allowed_hosts`: the hosts it may contact (oci::ParseAllowedHosts; empty: any).
Result<v1::PreheatImageResponse> PreheatImage(Scheduler& scheduler,
                                              const v1::PreheatImageRequest& request,
                                              int timeout_seconds = 30,
                                              const std::vector<std::string>& allowed_hosts = {});

class AdminService final : public v1::SchedulerAdmin::CallbackService {
 public:
  static constexpr size_t kMaxQueuedCalls = 16;
  // Borrows both; they must outlive the service. Preheat contacts only `preheat_hosts`
  // (oci::ParseAllowedHosts; empty: any host).
  AdminService(Scheduler* scheduler, const ControlAuth* auth,
               std::vector<std::string> preheat_hosts = {});
  ~AdminService() override;  // Stop()

  void Stop();

  grpc::ServerUnaryReactor* PreheatImage(grpc::CallbackServerContext* context,
                                         const v1::PreheatImageRequest* request,
                                         v1::PreheatImageResponse* response) override;

 private:
  struct Call {
    grpc::ServerUnaryReactor* reactor = nullptr;
    const v1::PreheatImageRequest* request = nullptr;
    v1::PreheatImageResponse* response = nullptr;
  };
  void Run();

  Scheduler& scheduler_;
  const ControlAuth& auth_;
  const std::vector<std::string> preheat_hosts_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Call> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;   // GUARDED_BY(mu_)
  std::thread worker_;
};

}  // namespace df::scheduler
