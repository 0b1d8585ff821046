#include "bench/local_cluster.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <thread>

namespace df::bench {

namespace dv1 = df::dfdaemon::v1;

LocalCluster::LocalCluster(ClusterOptions options) : options_(std::move(options)) {}

LocalCluster::~LocalCluster() {
  // Peers first, so that nothing is left asking the seed or the scheduler.
  peers_.clear();
  seed_.reset();
  scheduler_.Stop();
  origin_.reset();
}

Status LocalCluster::Start() {
  std::error_code ec;
  for (const char* sub : {"origin", "out", "logs"}) {
    std::filesystem::create_directories(options_.work_dir + "/" + sub, ec);
    if (ec) return IoError("create " + options_.work_dir + "/" + sub + ": " + ec.message());
  }
  origin_ = std::make_unique<NginxOrigin>(OriginRoot(), options_.origin_limit_rate);
  if (!origin_->ok()) return Unavailable("nginx origin did not start (is nginx installed?)");

  scheduler_port_ = FreePort();
  scheduler_metrics_port_ = FreePort();
  std::vector<std::string> argv = {options_.bin_dir + "/scheduler/dfscheduler",
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(scheduler_port_),
                                   "--metrics",
                                   "127.0.0.1:" + std::to_string(scheduler_metrics_port_),
                                   "--evaluator",
                                   options_.evaluator,
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), options_.scheduler_args.begin(), options_.scheduler_args.end());
  scheduler_ = Process::Start(argv, options_.work_dir + "/logs/dfscheduler.log");
  if (!WaitForTcp(scheduler_port_, 10000))
    return Unavailable("dfscheduler did not start (see logs/dfscheduler.log)");

  seed_ = std::make_unique<Daemon>();
  DF_RETURN_IF_ERROR(StartDaemon("seed", true, seed_.get()));
  for (int i = 0; i < options_.peers; ++i) DF_RETURN_IF_ERROR(AddPeer());
  // Give every daemon one announce interval to register its host with the scheduler.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  return Status::Ok();
}

Status LocalCluster::AddPeer() {
  auto d = std::make_unique<Daemon>();
  DF_RETURN_IF_ERROR(StartDaemon("peer" + std::to_string(peers_.size()), false, d.get()));
  peers_.push_back(std::move(d));
  return Status::Ok();
}

Status LocalCluster::StartDaemon(const std::string& name, bool seed, Daemon* d) {
  d->name = name;
  d->sock = options_.work_dir + "/" + name + ".sock";
  std::vector<std::string> argv =
      DaemonArgv(options_.bin_dir, name, options_.work_dir, scheduler_port_);
  argv.insert(argv.end(), {"--log-level", "warn"});
  if (seed) argv.push_back("--seed");
  argv.insert(argv.end(), options_.daemon_args.begin(), options_.daemon_args.end());
  d->process = Process::Start(argv, options_.work_dir + "/logs/" + name + ".log");
  if (!WaitForUnixSocket(d->sock, 10000)) {
    return Unavailable(name + " did not start (see logs/" + name + ".log)");
  }
  d->api = dv1::DfdaemonDownload::NewStub(
      grpc::CreateChannel("unix:" + d->sock, grpc::InsecureChannelCredentials()));
  return Status::Ok();
}

PeerResult LocalCluster::Download(int i, const std::string& url, uint64_t piece_length) {
  Daemon* d = peers_[static_cast<size_t>(i)].get();
  PeerResult r;
  r.name = d->name;
  r.output_path = options_.work_dir + "/out/" + d->name + ".bin";
  dv1::DownloadRequest req;
  req.set_url(url);
  req.set_output_path(r.output_path);
  req.set_piece_length(piece_length);
  grpc::ClientContext ctx;
  auto start = std::chrono::steady_clock::now();
  auto reader = d->api->Download(&ctx, req);
  dv1::DownloadResponse resp, last;
  while (reader->Read(&resp)) last = resp;
  grpc::Status s = reader->Finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.bytes_from_origin = last.bytes_from_origin();
  r.bytes_from_peers = last.bytes_from_peers();
  r.ok = s.ok() && last.state() == dv1::DOWNLOAD_STATE_SUCCEEDED;
  if (!s.ok())
    r.error = s.error_message();
  else if (!r.ok)
    r.error = last.error_message();
  return r;
}

dv1::DfdaemonDownload::Stub* LocalCluster::Api(int i) {
  return i < 0 ? seed_->api.get() : peers_[static_cast<size_t>(i)]->api.get();
}

void LocalCluster::KillPeer(int i) {
  Process& p = peers_[static_cast<size_t>(i)]->process;
  p.Kill(SIGKILL);
  p.Wait(5000);
}

}  // namespace df::bench
