#include "scheduler/admin_service.h"

#include "common/log.h"
#include "scheduler/service.h"

namespace df::scheduler {
namespace {

bool IsLoopback(const std::string& ip) { return ip.rfind("127.", 0) == 0 || ip == "::1"; }

std::string StateOf(const Result<Scheduler::PreheatOutcome>& outcome) {
  if (!outcome.ok()) return "skipped: " + outcome.status().message();
  return outcome.value() == Scheduler::PreheatOutcome::kTriggered ? "triggered" : "seeded";
}

}  // namespace

grpc::Status CheckAdminCaller(const ControlAuth& auth, const grpc::ServerContextBase& context) {
  if (grpc::Status s = auth.Check(context); !s.ok()) return s;
  if (auth.authenticates_callers()) return grpc::Status::OK;
  const std::string ip = PeerIp(context.peer());
  if (IsLoopback(ip)) return grpc::Status::OK;
  return {grpc::StatusCode::PERMISSION_DENIED,
          "admin calls need the cluster's token (auth_token_file) or mutual TLS; without "
          "either, only a caller on the scheduler's host may make them"};
}

Result<v1::PreheatImageResponse> PreheatImage(Scheduler& scheduler,
                                              const v1::PreheatImageRequest& request,
                                              int timeout_seconds,
                                              const std::vector<std::string>& allowed_hosts) {
  auto ref = oci::ParseImageReference(request.image());
  if (!ref.ok()) return ref.status();
  oci::ResolveOptions options;
  if (!request.platform().empty()) {
    auto platform = oci::ParsePlatform(request.platform());
    if (!platform.ok()) return platform.status();
    options.platform = platform.value();
  }
  options.credentials = {request.username(), request.password()};
  options.plain_http = request.plain_http();
  options.timeout_seconds = timeout_seconds;
  options.allowed_hosts = allowed_hosts;
  auto image = oci::ResolveImage(ref.value(), options);
  if (!image.ok()) return image.status();
  v1::PreheatImageResponse out;
  out.set_registry(image.value().endpoint);
  out.set_repository(image.value().repository);
  out.set_manifest_digest(image.value().manifest_digest);
  for (const oci::Descriptor& blob : image.value().blobs) {
    v1::TaskInfo info;
    info.set_url(image.value().BlobUrl(blob));
    info.set_digest(blob.digest);
    info.set_id_from_digest(true);
    info.mutable_request_headers()->insert(image.value().blob_headers.begin(),
                                           image.value().blob_headers.end());
    auto outcome = scheduler.PreheatTask(info);
    v1::PreheatedBlob* b = out.add_blobs();
    b->set_digest(blob.digest);
    b->set_size(blob.size);
    b->set_media_type(blob.media_type);
    b->set_task_id(blob.digest.substr(7));  // id_from_digest: the digest's hex
    b->set_state(StateOf(outcome));
  }
  DF_LOG_INFO("preheat image={} manifest={} blobs={}", request.image(),
              image.value().manifest_digest, out.blobs_size());
  return out;
}

AdminService::AdminService(Scheduler* scheduler, const ControlAuth* auth,
                           std::vector<std::string> preheat_hosts)
    : scheduler_(*scheduler),
      auth_(*auth),
      preheat_hosts_(std::move(preheat_hosts)),
      worker_([this] { Run(); }) {}

AdminService::~AdminService() { Stop(); }

void AdminService::Stop() {
  std::deque<Call> dropped;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    dropped.swap(queue_);
  }
  wake_.notify_all();
  for (Call& c : dropped) {
    c.reactor->Finish({grpc::StatusCode::UNAVAILABLE, "the scheduler is shutting down"});
  }
  if (worker_.joinable()) worker_.join();
}

grpc::ServerUnaryReactor* AdminService::PreheatImage(grpc::CallbackServerContext* context,
                                                     const v1::PreheatImageRequest* request,
                                                     v1::PreheatImageResponse* response) {
  auto* reactor = context->DefaultReactor();
  if (grpc::Status allowed = CheckAdminCaller(auth_, *context); !allowed.ok()) {
    DF_LOG_WARN("refused preheat from {}: {}", context->peer(), allowed.error_message());
    reactor->Finish(allowed);
    return reactor;
  }
  std::unique_lock lock(mu_);
  if (stopping_ || queue_.size() >= kMaxQueuedCalls) {
    lock.unlock();
    reactor->Finish({grpc::StatusCode::RESOURCE_EXHAUSTED,
                     "too many preheats waiting (or shutting down); retry later"});
    return reactor;
  }
  queue_.push_back({reactor, request, response});
  lock.unlock();
  wake_.notify_one();
  return reactor;
}

void AdminService::Run() {
  for (;;) {
    Call call;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      call = queue_.front();
      queue_.pop_front();
    }
    auto out = scheduler::PreheatImage(scheduler_, *call.request, 30, preheat_hosts_);
    if (out.ok()) *call.response = std::move(out).value();
    call.reactor->Finish(ToGrpcStatus(out.status()));
  }
}

}  // namespace df::scheduler
