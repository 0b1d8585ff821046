// tls_bench: the cost of mutual TLS on the control plane (issue 14). Runs the same load against
// an in-process scheduler without TLS and with it, in the same run, and prints both and the
// ratio (bench/tls_cost.sh makes the certificates and runs it).
//
// The load, per mode: --peers peers, each on its own channel (its own TCP connection, so its
// own TLS handshake, as real daemons have), driven by --threads threads:
//   1. connect: AnnounceHost on a fresh channel (TCP connect + handshake + one unary RPC);
//   2. announce: each peer opens an AnnouncePeer stream, registers, waits for its parents, reports
//      --pieces finished pieces and closes the stream.
// A seed peer registered first makes every peer get the seed as parent. CPU is the process's
// (clients and server together: both ends of every handshake and message are in this process).
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/version.h"
#include "common/ids.h"
#include "common/tls.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/server.h"

namespace {

namespace v1 = df::scheduler::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr char kTaskUrl[] = "http://origin/tls-bench.bin";

struct Options {
  int peers = 500;
  int threads = 8;
  int pieces = 20;
  int rounds = 1;
  df::TlsFiles tls;
};

const std::string& TaskIdOfBench() {
  static const std::string id = df::TaskId(df::TaskIdInput{kTaskUrl, "", "", 0, {}});
  return id;
}

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(u.ru_utime) + sec(u.ru_stime);
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

v1::AnnouncePeerRequest Message(const std::string& host_id, const std::string& peer_id) {
  v1::AnnouncePeerRequest r;
  r.set_host_id(host_id);
  r.set_task_id(TaskIdOfBench());
  r.set_peer_id(peer_id);
  return r;
}

v1::AnnouncePeerRequest Register(const std::string& host_id, const std::string& peer_id) {
  auto r = Message(host_id, peer_id);
  auto* reg = r.mutable_register_();
  reg->set_host_id(host_id);
  reg->set_peer_id(peer_id);
  reg->mutable_task()->set_task_id(TaskIdOfBench());
  reg->mutable_task()->set_url(kTaskUrl);
  reg->mutable_task()->set_content_length(-1);
  return r;
}

bool AnnounceHost(v1::Scheduler::Stub* stub, const std::string& id, v1::HostType type) {
  v1::AnnounceHostRequest req;
  v1::Host* h = req.mutable_host();
  h->set_id(id);
  h->set_hostname(id);
  h->set_ip("127.0.0.1");
  h->set_grpc_port(4000);
  h->set_piece_port(4005);
  h->set_type(type);
  h->set_concurrent_upload_limit(type == v1::HOST_TYPE_SEED ? 100000 : 16);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  v1::AnnounceHostResponse resp;
  return stub->AnnounceHost(&ctx, req, &resp).ok();
}

// A stub on its own TCP connection (a local subchannel pool: no sharing between channels).
std::unique_ptr<v1::Scheduler::Stub> NewStub(const std::string& address,
                                             const std::shared_ptr<grpc::ChannelCredentials>& c) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return v1::Scheduler::NewStub(grpc::CreateCustomChannel(address, c, args));
}

struct Phase {
  double wall_s = 0;
  double cpu_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  int failures = 0;
};

struct ModeResult {
  Phase connect;   // per peer: a new connection and one AnnounceHost
  Phase announce;  // per peer: register, first parents, --pieces reports, close
  int messages = 0;
};

// Runs `work(i)` for i in [0, n) on `threads` threads; `work` returns a latency in ms or < 0 for
// a failure. Fills `phase`.
template <typename Work>
void RunPhase(int n, int threads, Work work, Phase* phase) {
  std::vector<std::vector<double>> latency(static_cast<size_t>(threads));
  std::atomic<int> next{0}, failures{0};
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = next++; i < n; i = next++) {
        double ms = work(i);
        if (ms < 0)
          ++failures;
        else
          latency[static_cast<size_t>(t)].push_back(ms);
      }
    });
  }
  for (auto& th : pool) th.join();
  phase->wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  phase->cpu_s = CpuSeconds() - cpu0;
  std::vector<double> all;
  for (const auto& v : latency) all.insert(all.end(), v.begin(), v.end());
  phase->p50_ms = Percentile(all, 50);
  phase->p99_ms = Percentile(all, 99);
  phase->failures = failures;
}

// One peer's AnnouncePeer session; its latency is register -> first response.
double PeerSession(v1::Scheduler::Stub* stub, int i, int pieces) {
  const std::string host_id = "tls-bench-host-" + std::to_string(i);
  const std::string peer_id = "tls-bench-peer-" + std::to_string(i);
  grpc::ClientContext ctx;
  auto stream = stub->AnnouncePeer(&ctx);
  v1::AnnouncePeerResponse resp;
  const auto start = Clock::now();
  if (!stream->Write(Register(host_id, peer_id)) || !stream->Read(&resp)) return -1;
  const double latency = Ms(Clock::now() - start);
  std::string parent = resp.has_normal_task() && resp.normal_task().candidate_parents_size() > 0
                           ? resp.normal_task().candidate_parents(0).peer_id()
                           : "tls-bench-seed-peer";
  for (int n = 0; n < pieces; ++n) {
    auto m = Message(host_id, peer_id);
    auto* p = m.mutable_piece_finished();
    p->set_piece_number(static_cast<uint32_t>(n));
    p->set_parent_id(parent);
    p->set_length(4 << 20);
    p->set_cost_ns(20'000'000);
    if (!stream->Write(m)) return -1;
  }
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  return stream->Finish().ok() ? latency : -1;
}

// The whole load against a fresh in-process scheduler, with TLS when `tls` is enabled.
df::Result<ModeResult> RunMode(const Options& opt, const df::MutualTls& tls) {
  prometheus::Registry registry;
  df::scheduler::SchedulerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics = "";
  if (tls.enabled()) {
    config.tls_cert_file = opt.tls.cert_file;
    config.tls_key_file = opt.tls.key_file;
    config.tls_ca_file = opt.tls.ca_file;
  }
  auto server = df::scheduler::SchedulerServer::Start(config, registry);
  if (!server.ok()) return server.status();
  const std::string address = "127.0.0.1:" + std::to_string(server.value()->port());
  const auto creds = tls.ChannelCredentials();

  auto control = NewStub(address, creds);
  if (!AnnounceHost(control.get(), "tls-bench-seed-host", v1::HOST_TYPE_SEED)) {
    return df::Unavailable("cannot reach the scheduler at " + address);
  }
  grpc::ClientContext seed_ctx;
  auto seed = control->AnnouncePeer(&seed_ctx);
  v1::AnnouncePeerResponse r;
  if (!seed->Write(Register("tls-bench-seed-host", "tls-bench-seed-peer")) || !seed->Read(&r)) {
    return df::Unavailable("the seed peer did not register");
  }

  ModeResult result;
  std::vector<std::unique_ptr<v1::Scheduler::Stub>> stubs(static_cast<size_t>(opt.peers));
  RunPhase(
      opt.peers, opt.threads,
      [&](int i) {
        const auto start = Clock::now();
        stubs[static_cast<size_t>(i)] = NewStub(address, creds);
        bool ok = AnnounceHost(stubs[static_cast<size_t>(i)].get(),
                               "tls-bench-host-" + std::to_string(i), v1::HOST_TYPE_NORMAL);
        return ok ? Ms(Clock::now() - start) : -1.0;
      },
      &result.connect);
  RunPhase(
      opt.peers, opt.threads,
      [&](int i) { return PeerSession(stubs[static_cast<size_t>(i)].get(), i, opt.pieces); },
      &result.announce);
  result.messages = opt.peers * (opt.pieces + 1);
  seed->WritesDone();
  while (seed->Read(&r)) {
  }
  (void)seed->Finish();
  stubs.clear();
  server.value()->Shutdown();
  return result;
}

void Print(const char* mode, const ModeResult& m, const Options& opt) {
  std::printf(
      "%-5s connect+AnnounceHost: wall=%.2fs cpu=%.2fs cpu/connection=%.0fus p50=%.2fms "
      "p99=%.2fms failures=%d\n",
      mode, m.connect.wall_s, m.connect.cpu_s, m.connect.cpu_s * 1e6 / opt.peers, m.connect.p50_ms,
      m.connect.p99_ms, m.connect.failures);
  std::printf(
      "%-5s AnnouncePeer:         wall=%.2fs cpu=%.2fs cpu/message=%.1fus register p50=%.2fms "
      "p99=%.2fms failures=%d\n",
      mode, m.announce.wall_s, m.announce.cpu_s, m.announce.cpu_s * 1e6 / m.messages,
      m.announce.p50_ms, m.announce.p99_ms, m.announce.failures);
}

double Ratio(double a, double b) { return b > 0 ? a / b : 0; }

int Run(const Options& opt) {
  auto tls = df::MutualTls::Load(opt.tls);
  if (!tls.ok() || !tls.value().enabled()) {
    std::fprintf(stderr, "tls_bench: %s\n",
                 tls.ok() ? "--tls-cert, --tls-key and --tls-ca are required"
                          : tls.status().message().c_str());
    return 2;
  }
  std::printf("tls_bench: peers=%d threads=%d pieces/peer=%d rounds=%d cores=%u\n", opt.peers,
              opt.threads, opt.pieces, opt.rounds, std::thread::hardware_concurrency());
  ModeResult plain_sum, tls_sum;
  auto add = [](ModeResult* sum, const ModeResult& m) {
    sum->connect.cpu_s += m.connect.cpu_s;
    sum->connect.wall_s += m.connect.wall_s;
    sum->connect.p50_ms += m.connect.p50_ms;
    sum->announce.cpu_s += m.announce.cpu_s;
    sum->announce.wall_s += m.announce.wall_s;
    sum->announce.p50_ms += m.announce.p50_ms;
    sum->messages += m.messages;
  };
  int failures = 0;
  for (int round = 0; round < opt.rounds; ++round) {
    // Alternate the order so that neither mode always runs on a warmer process.
    for (bool with_tls :
         round % 2 == 0 ? std::vector<bool>{false, true} : std::vector<bool>{true, false}) {
      auto m = RunMode(opt, with_tls ? tls.value() : df::MutualTls());
      if (!m.ok()) {
        std::fprintf(stderr, "tls_bench: %s\n", m.status().message().c_str());
        return 1;
      }
      Print(with_tls ? "tls" : "plain", m.value(), opt);
      failures += m.value().connect.failures + m.value().announce.failures;
      add(with_tls ? &tls_sum : &plain_sum, m.value());
    }
  }
  std::printf(
      "ratio tls/plain (sums over rounds): cpu per connection=%.2f  connect p50=%.2f  "
      "cpu per AnnouncePeer message=%.2f  register p50=%.2f  total cpu=%.2f\n",
      Ratio(tls_sum.connect.cpu_s, plain_sum.connect.cpu_s),
      Ratio(tls_sum.connect.p50_ms, plain_sum.connect.p50_ms),
      Ratio(tls_sum.announce.cpu_s, plain_sum.announce.cpu_s),
      Ratio(tls_sum.announce.p50_ms, plain_sum.announce.p50_ms),
      Ratio(tls_sum.connect.cpu_s + tls_sum.announce.cpu_s,
            plain_sum.connect.cpu_s + plain_sum.announce.cpu_s));
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tls_bench: control-plane load with and without mutual TLS, same run"};
  app.set_version_flag("--version", df::VersionLine("tls_bench"));
  Options opt;
  app.add_option("--peers", opt.peers, "peers, each on its own connection")
      ->check(CLI::Range(1, 100000));
  app.add_option("--threads", opt.threads, "client threads")->check(CLI::Range(1, 256));
  app.add_option("--pieces", opt.pieces, "piece reports per peer")->check(CLI::Range(0, 100000));
  app.add_option("--rounds", opt.rounds, "plain/tls rounds (order alternates)")
      ->check(CLI::Range(1, 100));
  app.add_option("--tls-cert", opt.tls.cert_file, "PEM certificate (IP SAN 127.0.0.1)")->required();
  app.add_option("--tls-key", opt.tls.key_file, "its PEM key")->required();
  app.add_option("--tls-ca", opt.tls.ca_file, "the PEM CA that signed it")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "tls_bench: %s (see --help)\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  return Run(opt);
}
