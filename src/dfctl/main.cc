// dfctl: operator commands against a dfscheduler's SchedulerAdmin service.
//
//   dfctl preheat IMAGE [--platform linux/amd64] [--username U --password P] [--plain-http]
//                 [--scheduler HOST:PORT[,HOST:PORT...]] [--auth-token-file F | --tls-cert C
//                 --tls-key K --tls-ca A] [--wait] [--timeout SECONDS]
//
// With several schedulers (the list the daemons are given), the preheat goes to the first one
// that answers; its seed registers each blob's task with the scheduler the daemons hash the task
// to, so --wait asks every scheduler and a blob is done once one of them has a finished peer.
//
// Exit status: 0 done; 1 the scheduler refused or failed the call (its message on stderr);
// 2 bad flags, or token or TLS files that cannot be used; 3 some blob was not preheated
// (skipped, or not finished by a seed within --timeout with --wait).
#include <CLI/CLI.hpp>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/auth.h"
#include "common/net.h"
#include "common/version.h"
#include "scheduler.grpc.pb.h"
#include "scheduler_admin.grpc.pb.h"

namespace {

namespace v1 = df::scheduler::v1;

struct PreheatFlags {
  std::string image;
  std::string platform = "linux/amd64";
  std::string username;
  std::string password;
  bool plain_http = false;
  std::string scheduler = "127.0.0.1:8002";  // or a comma list
  std::string token_file;
  df::TlsFiles tls;
  bool wait = false;
  int timeout_seconds = 600;
};

// True once a peer of the task (the seed) finished it; false while not, or when the scheduler
// cannot say (the caller polls again).
bool SeedFinished(v1::Scheduler::Stub& stub, const df::ControlAuth& auth,
                  const std::string& task_id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auth.Attach(&ctx);
  v1::StatTaskRequest req;
  req.set_task_id(task_id);
  v1::StatTaskResponse res;
  grpc::Status s = stub.StatTask(&ctx, req, &res);
  return s.ok() && res.finished_peer_count() > 0;
}

// Polls the schedulers until every preheated task has a finished peer on one of them or the
// timeout passes; prints the ones that did not finish. True when all did.
bool WaitForSeeds(const std::vector<std::shared_ptr<grpc::Channel>>& channels,
                  const df::ControlAuth& auth, const v1::PreheatImageResponse& res,
                  int timeout_seconds) {
  std::vector<std::unique_ptr<v1::Scheduler::Stub>> stubs;
  for (const auto& channel : channels) stubs.push_back(v1::Scheduler::NewStub(channel));
  auto finished = [&](const std::string& id) {
    for (auto& stub : stubs) {
      if (SeedFinished(*stub, auth, id)) return true;
    }
    return false;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds);
  std::vector<std::string> pending;
  for (const auto& b : res.blobs()) {
    if (b.state().rfind("skipped", 0) != 0) pending.push_back(b.task_id());
  }
  while (!pending.empty()) {
    std::erase_if(pending, finished);
    if (pending.empty() || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (const auto& id : pending) {
    std::fprintf(stderr, "dfctl: task %s not finished by a seed within %d s\n", id.c_str(),
                 timeout_seconds);
  }
  return pending.empty();
}

int Preheat(const PreheatFlags& f) {
  auto auth = df::ControlAuth::Load(f.token_file, f.tls);
  if (!auth.ok()) {
    std::fprintf(stderr, "dfctl: %s\n", auth.status().ToString().c_str());
    return 2;
  }
  auto addresses = df::ParseSchedulerAddresses(f.scheduler);
  if (!addresses.ok()) {
    std::fprintf(stderr, "dfctl: --%s\n", addresses.status().message().c_str());
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (const std::string& a : addresses.value()) {
    channels.push_back(grpc::CreateChannel(a, auth.value().ChannelCredentials()));
  }
  v1::PreheatImageRequest req;
  req.set_image(f.image);
  req.set_platform(f.platform);
  req.set_username(f.username);
  req.set_password(f.password);
  req.set_plain_http(f.plain_http);
  // The first scheduler that answers does the preheat: one that is down (UNAVAILABLE) or does
  // not answer in time passes the call to the next; any other answer is final.
  v1::PreheatImageResponse res;
  grpc::Status s;
  for (size_t i = 0; i < channels.size(); ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
    auth.value().Attach(&ctx);
    s = v1::SchedulerAdmin::NewStub(channels[i])->PreheatImage(&ctx, req, &res);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE &&
        s.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      break;
    }
    if (i + 1 < channels.size()) {
      std::fprintf(stderr, "dfctl: scheduler %s: %s; trying %s\n", addresses.value()[i].c_str(),
                   s.error_message().c_str(), addresses.value()[i + 1].c_str());
    }
  }
  if (!s.ok()) {
    std::fprintf(stderr, "dfctl: preheat %s: %s\n", f.image.c_str(), s.error_message().c_str());
    return 1;
  }
  std::printf("image %s/%s manifest %s\n", res.registry().c_str(), res.repository().c_str(),
              res.manifest_digest().c_str());
  bool all = true;
  for (const auto& b : res.blobs()) {
    std::printf("%s %lld %s\n", b.digest().c_str(), static_cast<long long>(b.size()),
                b.state().c_str());
    all = all && b.state().rfind("skipped", 0) != 0;
  }
  std::fflush(stdout);
  if (f.wait && !WaitForSeeds(channels, auth.value(), res, f.timeout_seconds)) return 3;
  if (f.wait && all) std::printf("every blob is on a seed peer\n");
  return all ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dfctl: operator commands for a Dragonfly-like cluster"};
  app.set_version_flag("--version", df::VersionLine("dfctl"));
  app.require_subcommand(1);
  PreheatFlags f;
  CLI::App* preheat = app.add_subcommand(
      "preheat", "have seed peers fetch every layer of an OCI image before the first node asks");
  preheat->add_option("image", f.image, "[registry[:port]/]repository[:tag][@sha256:<hex>]")
      ->required();
  preheat->add_option("--platform", f.platform, "os/arch[/variant] chosen from an image index")
      ->capture_default_str();
  preheat->add_option("--username", f.username, "registry user (Basic or token service)");
  preheat->add_option("--password", f.password,
                      "registry password (or the DFCTL_PASSWORD environment variable)");
  preheat->add_flag("--plain-http", f.plain_http, "the registry speaks HTTP, not HTTPS");
  preheat
      ->add_option("--scheduler", f.scheduler,
                   "dfscheduler HOST:PORT, or the daemons' comma list of them")
      ->capture_default_str();
  preheat->add_option("--auth-token-file", f.token_file, "the cluster's shared token");
  preheat->add_option("--tls-cert", f.tls.cert_file, "mutual TLS: this client's certificate");
  preheat->add_option("--tls-key", f.tls.key_file, "mutual TLS: its private key");
  preheat->add_option("--tls-ca", f.tls.ca_file, "mutual TLS: the cluster's CA");
  preheat->add_flag("--wait", f.wait, "wait until a seed peer finished every blob");
  preheat->add_option("--timeout", f.timeout_seconds, "longest --wait, seconds")
      ->capture_default_str()
      ->check(CLI::Range(1, 86400));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help and --version are not errors
  }
  if (f.password.empty()) {
    if (const char* env = std::getenv("DFCTL_PASSWORD")) f.password = env;
  }
  return Preheat(f);
}
