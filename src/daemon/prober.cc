#include "daemon/prober.h"

#include <arpa/inet.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <set>

#include "common/log.h"
#include "common/net.h"
#include "common/thread_name.h"

namespace df {

namespace sv1 = df::scheduler::v1;

namespace {

// The SyncProbes exchange itself (ProbeStarted, the answer, the reports) gets this long on top of
// the worst case of the handshakes.
constexpr std::chrono::seconds kRpcBudget{10};
// While the scheduler has not acknowledged this host, a round is retried this often.
constexpr std::chrono::milliseconds kReadyRetry{1000};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsIpLiteral(const std::string& ip) {
  in6_addr buf;
  return inet_pton(AF_INET, ip.c_str(), &buf) == 1 || inet_pton(AF_INET6, ip.c_str(), &buf) == 1;
}

// Why `host` cannot be probed, or "" when it can.
std::string InvalidReason(const sv1::Host& host) {
  if (!IsIpLiteral(host.ip())) return "ip '" + host.ip().substr(0, 64) + "' is not an IP address";
  if (host.piece_port() <= 0 || host.piece_port() > 65535) {
    return "piece_port " + std::to_string(host.piece_port()) + " is out of range";
  }
  return "";
}

sv1::FailedProbe Failed(const std::string& host_id, std::string description) {
  sv1::FailedProbe f;
  f.set_host_id(host_id);
  f.set_description(std::move(description));
  return f;
}

}  // namespace

Prober::Prober(ProberOptions options, SchedulerClient* scheduler, prometheus::Registry* registry)
    : options_(std::move(options)),
      scheduler_(scheduler),
      stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      rng_(std::random_device{}()) {
  if (registry == nullptr) return;
  auto& probes = prometheus::BuildCounter()
                     .Name("df_daemon_probes_total")
                     .Help("Latency probes reported to the scheduler, by result (one per target)")
                     .Register(*registry);
  metrics_.probes_ok = &probes.Add({{"result", "ok"}});
  metrics_.probes_failed = &probes.Add({{"result", "failed"}});
  auto& rounds = prometheus::BuildCounter()
                     .Name("df_daemon_probe_rounds_total")
                     .Help("SyncProbes rounds, by outcome of the stream")
                     .Register(*registry);
  metrics_.rounds_ok = &rounds.Add({{"result", "ok"}});
  metrics_.rounds_failed = &rounds.Add({{"result", "failed"}});
  // 50 us .. ~1.6 s, doubling.
  metrics_.rtt_seconds =
      &prometheus::BuildHistogram()
           .Name("df_daemon_probe_rtt_seconds")
           .Help("Probed RTTs (TCP handshake time to a host's piece port)")
           .Register(*registry)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        5e-5, 1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 6.4e-3, 1.28e-2, 2.56e-2,
                        5.12e-2, 0.1024, 0.2048, 0.4096, 0.8192, 1.6384});
}

Prober::~Prober() { Stop(); }

void Prober::Start() {
  thread_ = NamedThread("df-prober", [this] { Loop(); });
}

void Prober::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    if (active_call_ != nullptr) active_call_->TryCancel();
  }
  cv_.notify_all();
  if (stop_fd_) {
    uint64_t one = 1;
    (void)!::write(stop_fd_.get(), &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t Prober::rounds() const {
  std::lock_guard<std::mutex> l(mu_);
  return rounds_;
}

bool Prober::WaitFor(std::chrono::milliseconds delay) {
  std::unique_lock<std::mutex> l(mu_);
  return !cv_.wait_for(l, delay, [this] { return stop_; });
}

std::chrono::milliseconds Prober::NextDelay(bool first) {
  const double interval = static_cast<double>(options_.interval_ms);
  if (first) {
    double max_delay = std::min(interval, static_cast<double>(options_.first_round_max_delay_ms));
    if (max_delay <= 0) return std::chrono::milliseconds(0);
    return std::chrono::milliseconds(
        static_cast<int64_t>(std::uniform_real_distribution<double>(0, max_delay)(rng_)));
  }
  return std::chrono::milliseconds(
      static_cast<int64_t>(interval * std::uniform_real_distribution<double>(0.9, 1.1)(rng_)));
}

void Prober::Loop() {
  bool was_ok = true;
  auto delay = NextDelay(/*first=*/true);
  while (WaitFor(delay)) {
    if (options_.ready && !options_.ready()) {
      delay = std::min(kReadyRetry, std::chrono::milliseconds(options_.interval_ms));
      continue;
    }
    Status s = RunRound();
    if (s.code() == StatusCode::kCancelled) break;
    if (!s.ok() && was_ok) {
      DF_LOG_WARN("probe round with scheduler {} failed (retrying every interval): {}",
                  scheduler_->address(), s.ToString());
    } else if (!s.ok()) {
      DF_LOG_DEBUG("probe round with scheduler {} failed again: {}", scheduler_->address(),
                   s.ToString());
    } else if (!was_ok) {
      DF_LOG_INFO("probe rounds with scheduler {} recovered", scheduler_->address());
    }
    was_ok = s.ok();
    delay = NextDelay(/*first=*/false);
  }
}

std::vector<Prober::Target> Prober::SelectTargets(const sv1::SyncProbesResponse& response,
                                                  ProbeRound* round) const {
  std::vector<Target> targets;
  std::set<std::string> seen;
  for (const sv1::Host& host : response.hosts()) {
    if (host.id().empty() || host.id() == options_.host_id || seen.count(host.id()) != 0) {
      continue;  // nothing to report it under, ourselves, or a duplicate
    }
    if (seen.size() == kMaxProbeTargets) {
      DF_LOG_DEBUG("scheduler sent {} hosts to probe, probing the first {}", response.hosts_size(),
                   kMaxProbeTargets);
      break;
    }
    seen.insert(host.id());
    if (std::string why = InvalidReason(host); !why.empty()) {
      round->failed.push_back(Failed(host.id(), "invalid target: " + why));
      continue;
    }
    targets.push_back({host.id(), host.ip(), host.piece_port()});
  }
  return targets;
}

void Prober::Measure(const std::vector<Target>& targets, ProbeRound* round) {
  TcpRttOptions rtt_options;
  rtt_options.handshakes = options_.handshakes;
  rtt_options.timeout_ms = static_cast<int>(options_.timeout_ms);
  rtt_options.spacing_ms = options_.handshake_spacing_ms;
  rtt_options.cancel_fd = stop_fd_.get();
  for (const Target& t : targets) {
    auto rtt = MeasureTcpRtt(t.ip, static_cast<uint16_t>(t.port), rtt_options);
    if (rtt.status().code() == StatusCode::kCancelled) return;
    if (!rtt.ok()) {
      round->failed.push_back(Failed(t.host_id, rtt.status().message()));
      continue;
    }
    sv1::Probe p;
    p.set_host_id(t.host_id);
    p.set_rtt_ns(rtt.value().count());
    p.set_created_unix_ms(NowUnixMs());
    round->finished.push_back(std::move(p));
  }
}

Status Prober::RunRound(ProbeRound* sent) {
  grpc::ClientContext ctx;
  scheduler_->Prepare(&ctx);
  const auto handshakes_worst = std::chrono::milliseconds(
      kMaxProbeTargets * static_cast<uint64_t>(std::max(options_.handshakes, 1)) *
      (options_.timeout_ms + static_cast<uint64_t>(options_.handshake_spacing_ms)));
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcBudget + handshakes_worst);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return Status(StatusCode::kCancelled, "prober stopped");
    active_call_ = &ctx;
  }
  ProbeRound round;
  Status s = Exchange(&ctx, &round);
  {
    std::lock_guard<std::mutex> l(mu_);
    active_call_ = nullptr;
    ++rounds_;
    if (stop_) s = Status(StatusCode::kCancelled, "prober stopped");
  }
  if (s.code() != StatusCode::kCancelled) Count(round, s.ok());
  if (sent != nullptr) *sent = std::move(round);
  return s;
}

Status Prober::Exchange(grpc::ClientContext* ctx, ProbeRound* round) {
  auto stream = scheduler_->stub()->SyncProbes(ctx);
  sv1::SyncProbesRequest req;
  req.set_host_id(options_.host_id);
  req.mutable_probe_started();
  sv1::SyncProbesResponse response;
  if (stream->Write(req) && stream->Read(&response)) {
    std::vector<Target> targets = SelectTargets(response, round);
    Measure(targets, round);
    bool ok = true;
    if (!round->finished.empty()) {
      req.Clear();
      req.set_host_id(options_.host_id);
      for (auto& p : round->finished) *req.mutable_probe_finished()->add_probes() = p;
      ok = stream->Write(req);
    }
    if (ok && !round->failed.empty()) {
      req.Clear();
      req.set_host_id(options_.host_id);
      for (auto& f : round->failed) *req.mutable_probe_failed()->add_probes() = f;
      ok = stream->Write(req);
    }
    if (ok) stream->WritesDone();
  }
  // Whatever the scheduler still sends is read and dropped, so that Finish() returns its status.
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  if (status.ok()) return Status::Ok();
  StatusCode code = StatusCode::kUnavailable;
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    code = StatusCode::kDeadlineExceeded;
  } else if (status.error_code() == grpc::StatusCode::CANCELLED) {
    code = StatusCode::kCancelled;
  } else if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
             status.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    code = StatusCode::kPermissionDenied;
  }
  return Status(code, "SyncProbes: " + status.error_message());
}

void Prober::Count(const ProbeRound& round, bool round_ok) {
  if (metrics_.probes_ok == nullptr) return;
  (round_ok ? metrics_.rounds_ok : metrics_.rounds_failed)->Increment();
  if (!round_ok) return;  // what a failed stream carried may not have reached the scheduler
  metrics_.probes_ok->Increment(static_cast<double>(round.finished.size()));
  metrics_.probes_failed->Increment(static_cast<double>(round.failed.size()));
  for (const auto& p : round.finished) {
    metrics_.rtt_seconds->Observe(static_cast<double>(p.rtt_ns()) * 1e-9);
  }
}

}  // namespace df
