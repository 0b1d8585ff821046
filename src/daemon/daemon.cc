#include "daemon/daemon.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>

#include "common/grpc_limits.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/net.h"
#include "common/thread_name.h"
#include "common/version.h"
#include "daemon/piece_client.h"

namespace df {

namespace sv1 = df::scheduler::v1;

namespace {
// Threads of the local API's synchronous pool: the Download and ImportTask streams of local
// clients (dfget, dfcache) at once; more get RESOURCE_EXHAUSTED until one ends.
constexpr uint32_t kMaxLocalRpcThreads = 256;

// Opens (creating) `path` and takes an exclusive flock on it, held while the fd is open. The
// kernel drops it when the process dies, so a crash leaves no stale lock; the file itself stays
// (removing it would let two daemons lock two different inodes of one path).
Result<UniqueFd> TakeExclusiveLock(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return ErrnoStatus("open lock file " + path, errno);
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Unavailable("another dfdaemon holds " + path);
    return ErrnoStatus("lock " + path, errno);
  }
  return fd;
}

GcPolicy GcPolicyOf(const DaemonConfig& config) {
  GcPolicy policy;
  policy.task_ttl_ms = static_cast<int64_t>(config.task_ttl_ms);
  policy.disk_high_watermark = config.disk_high_watermark;
  policy.disk_low_watermark = config.disk_low_watermark;
  return policy;
}

}  // namespace

Daemon::Daemon(DaemonConfig config)
    : config_(std::move(config)), backends_(config_.origin_ca_file) {
  host_id_ = HostId(config_.hostname, config_.ip);
}

Daemon::~Daemon() { Shutdown(); }

Status Daemon::Start() {
  // Bad credentials are a configuration error: refuse them before touching storage or ports.
  DF_RETURN_IF_ERROR(LoadTrust());
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) return IoError("create data dir " + config_.data_dir + ": " + ec.message());
  // One daemon per data dir and per socket: concurrent auto-starts (several dfgets at once) race
  // here, and the losers exit before they touch the store or the socket.
  auto data_dir_lock = TakeExclusiveLock(config_.data_dir + "/dfdaemon.lock");
  if (!data_dir_lock.ok()) return data_dir_lock.status();
  data_dir_lock_ = std::move(data_dir_lock).value();
  auto sock_lock = TakeExclusiveLock(config_.sock + ".lock");
  if (!sock_lock.ok()) return sock_lock.status();
  sock_lock_ = std::move(sock_lock).value();
  auto store = PieceStore::Open(config_.data_dir);
  if (!store.ok()) return store.status();
  store_ = std::move(store.value());

  // The unix socket: refuse to steal it from a live daemon (one that predates the lock), remove
  // a stale one.
  {
    auto probe = grpc::CreateChannel("unix:" + config_.sock, grpc::InsecureChannelCredentials());
    if (::access(config_.sock.c_str(), F_OK) == 0) {
      if (probe->WaitForConnected(std::chrono::system_clock::now() +
                                  std::chrono::milliseconds(300))) {
        return Unavailable("another dfdaemon is serving " + config_.sock);
      }
      ::unlink(config_.sock.c_str());
    }
  }

  PieceServerOptions popts;
  popts.ip = config_.listen_ip;
  popts.port = config_.piece_port;
  popts.congestion_control = config_.congestion_control;
  popts.upload_rate_bytes_per_sec = config_.upload_rate_bytes_per_sec;
  popts.cut_through = config_.cut_through;
  popts.max_connections = std::max<uint32_t>(config_.concurrent_upload_limit * 4, 64);
  PieceStore* store_ptr = store_.get();
  piece_server_ = std::make_unique<PieceServer>(
      popts, [store_ptr](const std::string& id) { return store_ptr->FindTask(id); });
  DF_RETURN_IF_ERROR(piece_server_->Start());
  config_.piece_port = piece_server_->port();

  if (!config_.scheduler.empty()) {
    scheduler_ = std::make_unique<SchedulerClient>(config_.scheduler, &trust_.auth,
                                                   [this](sv1::Host* h) { FillHost(h); });
  }
  DaemonContext ctx{&config_, store_.get(), &backends_, scheduler_.get(), &trust_.auth, host_id_};
  ctx.endgame_duplicate_bytes = &series_.endgame_duplicate_bytes;
  ctx.piece_failures = &series_.piece_failures;
  ctx.back_to_source = &series_.back_to_source;
  manager_ = std::make_unique<TaskManager>(ctx);
  control_.fill_status = [this](df::dfdaemon::v1::DaemonStatus* st) { FillStatus(st); };
  control_.request_stop = [this] { RequestStop(); };
  control_.gc_policy = GcPolicyOf(config_);
  download_service_ =
      std::make_unique<DownloadService>(manager_.get(), store_.get(), &trust_, &control_);
  upload_service_ = std::make_unique<UploadService>(manager_.get(), store_.get(), &trust_);

  {
    grpc::ServerBuilder b;
    b.AddListeningPort("unix:" + config_.sock, grpc::InsecureServerCredentials());
    b.RegisterService(download_service_.get());
    // Download and ImportTask stream on the synchronous server, a thread each for as long as the
    // client takes to read or send; the unary calls run on the callback API and take none.
    grpc::ResourceQuota quota("dfdaemon-local");
    quota.SetMaxThreads(static_cast<int>(kMaxLocalRpcThreads));
    b.SetResourceQuota(quota);
    // bind(2) creates the socket with mode 0777 & ~umask: under umask 077 it is the owner's
    // alone from its first instant, then set to sock_mode. The umask is process-wide, but no
    // other thread creates files during this call.
    mode_t old_umask = ::umask(077);
    local_server_ = b.BuildAndStart();
    ::umask(old_umask);
    if (!local_server_) return Unavailable("cannot listen on unix socket " + config_.sock);
    owns_sock_ = true;
    if (::chmod(config_.sock.c_str(), config_.sock_mode) != 0) {
      return ErrnoStatus("chmod " + config_.sock, errno);
    }
  }
  {
    grpc::ServerBuilder b;
    int bound = 0;
    b.AddListeningPort(config_.listen_ip + ":" + std::to_string(config_.grpc_port),
                       trust_.auth.ServerCredentials(), &bound);
    b.RegisterService(upload_service_.get());
    // Every upload RPC runs on the callback API (services.h): a caller that never reads its
    // answer, or a child's open availability stream, holds no thread.
    ApplyServerLimits(b);
    upload_server_ = b.BuildAndStart();
    if (!upload_server_ || bound == 0) {
      return Unavailable("cannot listen on " + config_.listen_ip + ":" +
                         std::to_string(config_.grpc_port));
    }
    config_.grpc_port = static_cast<uint16_t>(bound);
  }

  if (config_.metrics_port != 0) {
    DF_RETURN_IF_ERROR(
        metrics_.Start(config_.listen_ip + ":" + std::to_string(config_.metrics_port)));
  }
  if (config_.proxy_port != 0) {
    mirror_ = std::make_unique<RegistryMirror>(config_, *manager_, *store_, backends_,
                                               &metrics_.registry());
    DF_RETURN_IF_ERROR(mirror_->Start());
  }
  // /healthz answers 503 with the reason when this peer cannot store what it downloads.
  metrics_.SetHealthCheck([dir = config_.data_dir]() -> std::string {
    if (::access(dir.c_str(), W_OK) != 0) return "data dir " + dir + " is not writable";
    struct statvfs fs {};
    if (::statvfs(dir.c_str(), &fs) == 0 && fs.f_bavail == 0) return "data dir " + dir + " is full";
    return "";
  });

  if (scheduler_) scheduler_->Start(config_.announce_interval_ms);
  StartProber();
  housekeeping_ = NamedThread("df-housekeep", [this] { Housekeeping(); });
  DF_LOG_INFO("dfdaemon started: host_id={} seed={} sock={} grpc={}:{} piece={}:{} scheduler={}",
              host_id_, config_.seed, config_.sock, config_.ip, config_.grpc_port, config_.ip,
              config_.piece_port, config_.scheduler.empty() ? "none" : config_.scheduler);
  return Status::Ok();
}

Status Daemon::LoadTrust() {
  trust_.url_policy.file_dirs = config_.allow_file_dirs;
  trust_.seed = config_.seed;
  auto auth =
      ControlAuth::Load(config_.auth_token_file,
                        TlsFiles{config_.tls_cert_file, config_.tls_key_file, config_.tls_ca_file});
  if (!auth.ok()) return auth.status();
  trust_.auth = std::move(auth).value();
  // Children and the scheduler dial this daemon at its advertised address: a certificate that
  // does not name it would make every one of their calls fail after start.
  DF_RETURN_IF_ERROR(trust_.auth.tls().CheckCoversIp(config_.ip));
  if (!trust_.auth.authenticates_callers()) {
    DF_LOG_WARN(
        "no auth_token_file and no TLS: control RPCs are not authenticated{} (see "
        "docs/security.md)",
        config_.seed ? "; seed triggers are accepted from the scheduler's address only" : "");
  }
  if (!config_.scheduler.empty()) {
    // Every scheduler of a --scheduler list may trigger this seed.
    auto addresses = ParseSchedulerAddresses(config_.scheduler);
    for (const auto& address : addresses.ok() ? addresses.value() : std::vector<std::string>{}) {
      for (auto& ip : ResolveHostIps(address)) trust_.scheduler_ips.push_back(std::move(ip));
    }
    if (trust_.scheduler_ips.empty()) {
      DF_LOG_WARN("scheduler {} does not resolve", config_.scheduler);
    }
  }
  return Status::Ok();
}

void Daemon::StartProber() {
  if (!scheduler_ || config_.probe_interval_ms == 0) return;
  ProberOptions o;
  o.host_id = host_id_;
  o.interval_ms = config_.probe_interval_ms;
  o.timeout_ms = config_.probe_timeout_ms;
  // The scheduler assigns probes to hosts it knows: wait for it to acknowledge this one.
  o.ready = [scheduler = scheduler_.get()] { return scheduler->announced(); };
  prober_ = std::make_unique<Prober>(std::move(o), scheduler_.get(), &metrics_.registry());
  prober_->Start();
}

void Daemon::FillHost(sv1::Host* h) {
  h->set_id(host_id_);
  h->set_hostname(config_.hostname);
  h->set_ip(config_.ip);
  h->set_grpc_port(config_.grpc_port);
  h->set_piece_port(config_.piece_port);
  h->set_type(config_.seed ? sv1::HOST_TYPE_SEED : sv1::HOST_TYPE_NORMAL);
  h->set_idc(config_.idc);
  h->set_location(config_.location);
  h->set_upload_rate_limit_bytes_per_sec(config_.upload_rate_bytes_per_sec);
  h->set_download_rate_limit_bytes_per_sec(config_.download_rate_bytes_per_sec);
  h->set_concurrent_upload_limit(config_.concurrent_upload_limit);
  h->set_concurrent_uploads(static_cast<uint32_t>(piece_server_->concurrent_uploads()));
  h->set_upload_success_count(piece_server_->pieces_uploaded());
  h->set_upload_failure_count(piece_server_->upload_failures());
}

void Daemon::FillStatus(df::dfdaemon::v1::DaemonStatus* st) {
  st->set_pid(static_cast<uint32_t>(::getpid()));
  st->set_version(VersionString());
  st->set_uptime_seconds(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                                   std::chrono::steady_clock::now() - started_at_)
                                                   .count()));
  st->set_sock(config_.sock);
  st->set_data_dir(config_.data_dir);
  st->set_log_file(config_.log_file);
  st->set_host_id(host_id_);
  st->set_ip(config_.ip);
  st->set_grpc_port(config_.grpc_port);
  st->set_piece_port(config_.piece_port);
  st->set_metrics_port(config_.metrics_port != 0 ? metrics_.port() : 0);
  st->set_proxy_port(mirror_ ? mirror_->port() : 0);
  st->set_registry_mirror(config_.registry_mirror);
  st->set_scheduler(config_.scheduler);
  st->set_seed(config_.seed);
  st->set_running_tasks(static_cast<uint32_t>(manager_->running()));
  st->set_cached_tasks(static_cast<uint32_t>(store_->ListTasks().size()));
}

void Daemon::UpdateTaskMetrics() {
  TaskCounters c = manager_->Counters();
  AdvanceCounter(series_.downloaded_from_peers, static_cast<double>(c.bytes_from_peers));
  AdvanceCounter(series_.downloaded_from_origin, static_cast<double>(c.bytes_from_origin));
  AdvanceCounter(series_.tasks_started, static_cast<double>(c.started));
  AdvanceCounter(series_.tasks_succeeded, static_cast<double>(c.succeeded));
  for (const auto& [reason, n] : c.failed_by_reason) {
    AdvanceCounter(series_.tasks_failed.Add({{"reason", reason}}), static_cast<double>(n));
  }
  series_.running_tasks.Set(static_cast<double>(manager_->running()));
  double stored = 0;
  for (const TaskMeta& m : store_->ListTasks()) {
    stored += m.content_length > 0 ? static_cast<double>(m.content_length) : 0;
  }
  series_.storage_bytes.Set(stored);
  for (size_t i = 0; i < kEvictionReasons; ++i) {
    const EvictionCount evicted = store_->evictions(static_cast<EvictionReason>(i));
    AdvanceCounter(*series_.evictions[i], static_cast<double>(evicted.tasks));
    AdvanceCounter(*series_.evicted_bytes[i], static_cast<double>(evicted.bytes));
  }
}

void Daemon::UpdatePieceMetrics() {
  const PieceServer& server = *piece_server_;
  AdvanceCounter(series_.uploaded_bytes, static_cast<double>(server.bytes_uploaded()));
  AdvanceCounter(series_.forwarded_pieces, static_cast<double>(server.pieces_forwarded()));
  series_.concurrent_uploads.Set(static_cast<double>(server.concurrent_uploads()));
  if (upload_service_) {
    series_.availability_streams.Set(static_cast<double>(upload_service_->open_streams()));
  }
  series_.server_connections.Set(static_cast<double>(server.active_connections()));
  series_.client_connections.Set(static_cast<double>(PieceClient::open_connections()));
  AdvanceCounter(series_.closed_protocol_error, static_cast<double>(server.protocol_errors()));
  AdvanceCounter(series_.closed_request_timeout, static_cast<double>(server.request_timeouts()));
  AdvanceCounter(series_.closed_evicted, static_cast<double>(server.evicted_connections()));
}

void Daemon::Housekeeping() {
  const GcPolicy policy = GcPolicyOf(config_);
  auto last_gc = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    cv_.wait_for(l, std::chrono::seconds(1));
    if (stop_) break;
    l.unlock();
    manager_->Reap();
    // Finished downloads are made durable here, off the path that places their output.
    if (auto synced = store_->SyncFinishedTasks(); !synced.ok()) {
      DF_LOG_WARN("sync finished tasks: {}", synced.status().ToString());
    }
    UpdatePieceMetrics();
    UpdateTaskMetrics();
    if (std::chrono::steady_clock::now() - last_gc >
        std::chrono::milliseconds(config_.gc_interval_ms)) {
      last_gc = std::chrono::steady_clock::now();
      auto n = store_->CollectGarbage(policy);
      if (!n.ok())
        DF_LOG_WARN("gc: {}", n.status().ToString());
      else if (n.value() > 0)
        DF_LOG_INFO("gc removed {} tasks", n.value());
    }
    l.lock();
  }
}

void Daemon::Wait() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [this] { return stop_; });
}

void Daemon::RequestStop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
}

void Daemon::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  RequestStop();
  metrics_.SetHealthy(false);
  if (housekeeping_.joinable()) housekeeping_.join();
  prober_.reset();  // cancels a round in flight (its RPC and handshakes) and joins
  // Servers stop before what they call into: no RPC may reach the task manager or the store
  // after they are gone. Running downloads are cancelled first so that Download RPCs waiting on
  // them return, letting the servers' Shutdown finish within its deadline.
  auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(2);
  // The mirror first: its handlers wait on tasks and would fetch from the registry for tasks
  // cancelled under them.
  if (mirror_) mirror_->Stop();
  mirror_.reset();
  if (manager_) manager_->CancelAll();
  if (upload_service_)
    upload_service_->StopStreams();  // children learn at once, not at the deadline
  if (local_server_) local_server_->Shutdown(deadline);
  if (upload_server_) upload_server_->Shutdown(deadline);
  local_server_.reset();
  upload_server_.reset();
  manager_.reset();  // joins the downloads' threads, closing their streams to parents
  if (store_) (void)store_->SyncFinishedTasks();  // what finished since the last housekeeping
  if (piece_server_) piece_server_->Stop();
  scheduler_.reset();  // LeaveHost
  if (owns_sock_) ::unlink(config_.sock.c_str());
}

}  // namespace df
