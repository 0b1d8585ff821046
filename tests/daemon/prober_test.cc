// The daemon side of assigned latency probes: a Prober against an in-test scheduler that serves
// only SyncProbes, with real listening sockets on loopback as targets.
#include "daemon/prober.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include <filesystem>

#include "common/auth.h"
#include "common/net.h"
#include "daemon/daemon.h"

namespace df {
namespace {

namespace sv1 = df::scheduler::v1;
using namespace std::chrono_literals;

constexpr char kSelf[] = "self-host";
constexpr char kToken[] = "0123456789abcdef-prober-test";

// What the scheduler saw on one SyncProbes stream.
struct SeenRound {
  std::string host_id;  // of the ProbeStarted
  std::vector<sv1::Probe> finished;
  std::vector<sv1::FailedProbe> failed;
  int finished_messages = 0;
  int failed_messages = 0;
  bool clean_end = false;  // the prober half-closed after its reports
  std::chrono::steady_clock::time_point started;

  std::optional<sv1::Probe> FinishedFor(const std::string& id) const {
    for (const auto& p : finished)
      if (p.host_id() == id) return p;
    return std::nullopt;
  }
  std::optional<sv1::FailedProbe> FailedFor(const std::string& id) const {
    for (const auto& f : failed)
      if (f.host_id() == id) return f;
    return std::nullopt;
  }
};

// A scheduler reduced to SyncProbes: answers ProbeStarted with `hosts` and records the reports.
class FakeScheduler final : public sv1::Scheduler::Service {
 public:
  explicit FakeScheduler(std::vector<sv1::Host> hosts, AuthToken token = AuthToken())
      : hosts_(std::move(hosts)), token_(std::move(token)) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
  }
  ~FakeScheduler() override { server_->Shutdown(std::chrono::system_clock::now()); }

  // While true, a stream gets no answer: it is held until the prober goes away.
  void set_hang(bool hang) {
    std::lock_guard l(mu_);
    hang_ = hang;
  }

  // The first `n` AnnounceHost calls fail (the scheduler is not ready yet).
  void FailAnnounces(int n) {
    std::lock_guard l(mu_);
    announces_to_fail_ = n;
  }

  grpc::Status AnnounceHost(grpc::ServerContext*, const sv1::AnnounceHostRequest*,
                            sv1::AnnounceHostResponse*) override {
    std::lock_guard l(mu_);
    if (announces_to_fail_ > 0) {
      --announces_to_fail_;
      events_.push_back("announce-failed");
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "not yet");
    }
    events_.push_back("announce");
    return grpc::Status::OK;
  }

  // "announce", "announce-failed" and "probe", in the order they arrived.
  std::vector<std::string> events() {
    std::lock_guard l(mu_);
    return events_;
  }

  grpc::Status SyncProbes(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<sv1::SyncProbesResponse, sv1::SyncProbesRequest>* stream) override {
    if (grpc::Status auth = token_.Check(*ctx); !auth.ok()) {
      std::lock_guard l(mu_);
      ++rejected_;
      cv_.notify_all();
      return auth;
    }
    SeenRound round;
    round.started = std::chrono::steady_clock::now();
    sv1::SyncProbesRequest req;
    if (!stream->Read(&req) || !req.has_probe_started()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "want ProbeStarted first");
    }
    round.host_id = req.host_id();
    bool hang;
    {
      std::lock_guard l(mu_);
      hang = hang_;
      ++started_;
      events_.push_back("probe");
      cv_.notify_all();
    }
    if (hang) {
      while (stream->Read(&req)) {
      }
      return grpc::Status::CANCELLED;
    }
    sv1::SyncProbesResponse resp;
    for (const auto& h : hosts_) *resp.add_hosts() = h;
    stream->Write(resp);
    while (stream->Read(&req)) {
      if (req.has_probe_finished()) {
        ++round.finished_messages;
        for (const auto& p : req.probe_finished().probes()) round.finished.push_back(p);
      } else if (req.has_probe_failed()) {
        ++round.failed_messages;
        for (const auto& f : req.probe_failed().probes()) round.failed.push_back(f);
      }
    }
    round.clean_end = !ctx->IsCancelled();
    std::lock_guard l(mu_);
    rounds_.push_back(std::move(round));
    cv_.notify_all();
    return grpc::Status::OK;
  }

  // Waits (bounded) until `n` rounds completed; returns them.
  std::vector<SeenRound> WaitRounds(size_t n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, timeout, [&] { return rounds_.size() >= n; });
    return rounds_;
  }
  bool WaitStarted(int n, std::chrono::milliseconds timeout = 10s) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, timeout, [&] { return started_ >= n; });
  }
  int rejected() {
    std::lock_guard l(mu_);
    return rejected_;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  const std::vector<sv1::Host> hosts_;
  const AuthToken token_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool hang_ = false;
  int started_ = 0;
  int rejected_ = 0;
  int announces_to_fail_ = 0;
  std::vector<std::string> events_;
  std::vector<SeenRound> rounds_;
};

sv1::Host HostAt(const std::string& id, const std::string& ip, int port) {
  sv1::Host h;
  h.set_id(id);
  h.set_ip(ip);
  h.set_piece_port(port);
  return h;
}

// A listening TCP socket on `ip` (never accepted from: the kernel completes handshakes).
struct Listener {
  explicit Listener(const std::string& ip) : ip(ip) {
    auto fd = ListenTcp(ip, 0, &port);
    EXPECT_TRUE(fd.ok()) << fd.status().ToString();
    if (fd.ok()) this->fd = std::move(fd).value();
  }
  std::string ip;
  uint16_t port = 0;
  UniqueFd fd;
};

// A port bound but not listening: connects to it are refused, and nobody else can take it.
struct ClosedPort {
  explicit ClosedPort(const std::string& ip) {
    fd.Reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
    EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  uint16_t port = 0;
  UniqueFd fd;
};

ProberOptions Options(uint64_t interval_ms) {
  ProberOptions o;
  o.host_id = kSelf;
  o.interval_ms = interval_ms;
  o.timeout_ms = 1000;
  o.first_round_max_delay_ms = 0;
  return o;
}

double Metric(prometheus::Registry& registry, const std::string& name, const std::string& result) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      for (const auto& label : m.label) {
        if (label.name == "result" && label.value == result) return m.counter.value;
      }
    }
  }
  return -1;
}

class ProberTest : public ::testing::Test {
 protected:
  const ControlAuth no_token_;
  Listener a_{"127.0.0.2"};
  Listener b_{"127.0.0.3"};
  ClosedPort closed_{"127.0.0.4"};
  std::vector<sv1::Host> Targets() const {
    return {HostAt("host-a", a_.ip, a_.port), HostAt("host-b", b_.ip, b_.port),
            HostAt("host-closed", "127.0.0.4", closed_.port)};
  }
};

TEST_F(ProberTest, ReportsRttsOfListeningHostsAndFailsTheClosedOneThenRunsAgain) {
  FakeScheduler scheduler(Targets());
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  Prober prober(Options(200), &client, nullptr);
  prober.Start();
  auto rounds = scheduler.WaitRounds(2);
  ASSERT_GE(rounds.size(), 2u) << "the prober runs again after the interval";
  const SeenRound& r = rounds[0];
  EXPECT_EQ(r.host_id, kSelf);
  ASSERT_TRUE(r.FinishedFor("host-a")) << "listening host reported";
  ASSERT_TRUE(r.FinishedFor("host-b"));
  EXPECT_GT(r.FinishedFor("host-a")->rtt_ns(), 0);
  EXPECT_GT(r.FinishedFor("host-b")->rtt_ns(), 0);
  EXPECT_LT(r.FinishedFor("host-a")->rtt_ns(), 1'000'000'000) << "loopback: well under 1 s";
  EXPECT_GT(r.FinishedFor("host-a")->created_unix_ms(), 0);
  EXPECT_EQ(r.finished.size(), 2u);
  ASSERT_TRUE(r.FailedFor("host-closed")) << "the closed port is a failed probe";
  EXPECT_NE(r.FailedFor("host-closed")->description().find("refused"), std::string::npos)
      << r.FailedFor("host-closed")->description();
  EXPECT_EQ(r.failed.size(), 1u);
  EXPECT_EQ(r.finished_messages, 1) << "one ProbeFinished per round";
  EXPECT_EQ(r.failed_messages, 1) << "one ProbeFailed per round";
  EXPECT_TRUE(r.clean_end) << "the prober half-closes, it does not cancel";
  // The second round comes one interval (+-10%) after the first ended.
  EXPECT_GE(rounds[1].started - rounds[0].started, 180ms);
  EXPECT_GE(prober.rounds(), 1u) << "the first round ended before the second began";
}

TEST_F(ProberTest, NeverProbesItselfAndReportsInvalidTargetsWithAReason) {
  auto targets = Targets();
  targets.push_back(HostAt(kSelf, a_.ip, a_.port));
  targets.push_back(HostAt("host-a", b_.ip, b_.port));  // a duplicate id: probed once
  targets.push_back(HostAt("by-name", "localhost", a_.port));
  targets.push_back(HostAt("port-0", a_.ip, 0));
  targets.push_back(HostAt("port-big", a_.ip, 70000));
  targets.push_back(HostAt("", a_.ip, a_.port));  // no id to report it under: dropped
  FakeScheduler scheduler(targets);
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  Prober prober(Options(60'000), &client, nullptr);
  ProbeRound sent;
  ASSERT_TRUE(prober.RunRound(&sent).ok());
  auto rounds = scheduler.WaitRounds(1);
  ASSERT_EQ(rounds.size(), 1u);
  const SeenRound& r = rounds[0];
  EXPECT_FALSE(r.FinishedFor(kSelf) || r.FailedFor(kSelf)) << "never itself";
  EXPECT_EQ(r.finished.size(), 2u);
  for (const char* id : {"by-name", "port-0", "port-big"}) {
    ASSERT_TRUE(r.FailedFor(id)) << id;
    EXPECT_NE(r.FailedFor(id)->description().find("invalid target"), std::string::npos)
        << r.FailedFor(id)->description();
  }
  EXPECT_EQ(r.failed.size(), 4u);  // the three invalid ones and the closed port
  EXPECT_EQ(sent.finished.size(), r.finished.size()) << "RunRound returns what it reported";
}

TEST_F(ProberTest, TakesAtMostMaxTargetsAndSkipsEmptyMessages) {
  std::vector<sv1::Host> many;
  for (size_t i = 0; i < kMaxProbeTargets + 8; ++i) {
    many.push_back(HostAt("host-" + std::to_string(i), a_.ip, a_.port));
  }
  FakeScheduler scheduler(many);
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  prometheus::Registry registry;
  auto options = Options(60'000);
  options.handshakes = 1;
  Prober prober(options, &client, &registry);
  ASSERT_TRUE(prober.RunRound().ok());
  auto r = scheduler.WaitRounds(1).at(0);
  EXPECT_EQ(r.finished.size(), kMaxProbeTargets);
  EXPECT_EQ(r.failed_messages, 0) << "no ProbeFailed when nothing failed";
  EXPECT_EQ(Metric(registry, "df_daemon_probes_total", "ok"), kMaxProbeTargets);
  EXPECT_EQ(Metric(registry, "df_daemon_probes_total", "failed"), 0);
  EXPECT_EQ(Metric(registry, "df_daemon_probe_rounds_total", "ok"), 1);
}

TEST_F(ProberTest, NothingToProbeIsACleanRoundWithNoReports) {
  FakeScheduler scheduler({});
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  Prober prober(Options(60'000), &client, nullptr);
  ASSERT_TRUE(prober.RunRound().ok());
  auto r = scheduler.WaitRounds(1).at(0);
  EXPECT_EQ(r.finished_messages + r.failed_messages, 0);
  EXPECT_TRUE(r.clean_end);
}

TEST_F(ProberTest, AttachesTheTokenWhenConfigured) {
  auto token = AuthToken::FromString(kToken);
  ASSERT_TRUE(token.ok());
  FakeScheduler scheduler(Targets(), token.value());
  const ControlAuth auth(token.value());
  SchedulerClient with_token(scheduler.address(), &auth, nullptr);
  Prober prober(Options(60'000), &with_token, nullptr);
  ASSERT_TRUE(prober.RunRound().ok());
  EXPECT_EQ(scheduler.WaitRounds(1).size(), 1u);
  EXPECT_EQ(scheduler.rejected(), 0);

  ControlAuth none;
  SchedulerClient without(scheduler.address(), &none, nullptr);
  Prober unauthenticated(Options(60'000), &without, nullptr);
  EXPECT_EQ(unauthenticated.RunRound().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(scheduler.rejected(), 1) << "the scheduler checked the token and refused";
}

TEST_F(ProberTest, AFailingSchedulerCountsAFailedRoundAndTheLoopGoesOn) {
  ClosedPort no_scheduler("127.0.0.1");
  SchedulerClient client("127.0.0.1:" + std::to_string(no_scheduler.port), &no_token_, nullptr);
  prometheus::Registry registry;
  // ready() is asked before every round: it tells the test when the next one begins.
  std::mutex mu;
  std::condition_variable cv;
  int asked = 0;
  auto options = Options(100);
  options.ready = [&] {
    std::lock_guard l(mu);
    ++asked;
    cv.notify_all();
    return true;
  };
  Prober prober(options, &client, &registry);
  EXPECT_FALSE(prober.RunRound().ok());
  EXPECT_EQ(Metric(registry, "df_daemon_probe_rounds_total", "failed"), 1);
  prober.Start();
  {
    std::unique_lock l(mu);
    EXPECT_TRUE(cv.wait_for(l, 10s, [&] { return asked >= 3; })) << "retries every interval";
  }
  prober.Stop();
  EXPECT_GE(prober.rounds(), 3u);
}

TEST_F(ProberTest, ShutdownIsPromptWithALongInterval) {
  FakeScheduler scheduler(Targets());
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  auto options = Options(3'600'000);
  options.first_round_max_delay_ms = 10'000;
  Prober prober(options, &client, nullptr);
  prober.Start();
  std::this_thread::sleep_for(50ms);
  const auto start = std::chrono::steady_clock::now();
  prober.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

TEST_F(ProberTest, ShutdownCancelsARoundTheSchedulerNeverAnswers) {
  FakeScheduler scheduler(Targets());
  scheduler.set_hang(true);
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  Prober prober(Options(200), &client, nullptr);
  prober.Start();
  ASSERT_TRUE(scheduler.WaitStarted(1));
  const auto start = std::chrono::steady_clock::now();
  prober.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST_F(ProberTest, WaitsUntilReady) {
  FakeScheduler scheduler(Targets());
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  std::atomic<bool> ready{false};
  auto options = Options(200);
  options.ready = [&] { return ready.load(); };
  Prober prober(options, &client, nullptr);
  prober.Start();
  EXPECT_TRUE(scheduler.WaitRounds(1, 500ms).empty()) << "no round before the host is announced";
  ready = true;
  EXPECT_EQ(scheduler.WaitRounds(1, 5s).size(), 1u);
}

// TCP payload bytes and segments of this process's connections to 127.0.0.1:`port` (the gRPC
// channel to the scheduler), from TCP_INFO.
struct WireCount {
  uint64_t bytes_out = 0, bytes_in = 0, segs_out = 0, segs_in = 0;
};
WireCount CountWire(int port) {
  WireCount w;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    int fd = std::atoi(e.path().filename().c_str());
    // gRPC's sockets are IPv6 ones talking to v4-mapped addresses.
    sockaddr_in6 peer{};
    socklen_t len = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;
    const bool v4 = peer.sin6_family == AF_INET, v6 = peer.sin6_family == AF_INET6;
    if (!(v4 || v6) || ntohs(peer.sin6_port) != port) continue;  // sin_port is at the same offset
    tcp_info info{};
    len = sizeof info;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) continue;
    w.bytes_out += info.tcpi_bytes_acked;
    w.bytes_in += info.tcpi_bytes_received;
    w.segs_out += info.tcpi_segs_out;
    w.segs_in += info.tcpi_segs_in;
  }
  return w;
}

// The figure of docs/measurement.md: what one round with 5 targets costs on the control channel
// once it is connected (the second round of a channel), with realistic host ids.
TEST_F(ProberTest, WireBytesOfARoundWithFiveTargets) {
  std::vector<sv1::Host> five;
  for (int i = 1; i <= 5; ++i) {
    five.push_back(HostAt("worker-node-004" + std::to_string(i) + "-10.12.34.6" + std::to_string(i),
                          a_.ip, a_.port));
  }
  FakeScheduler scheduler(five);
  SchedulerClient client(scheduler.address(), &no_token_, nullptr);
  auto options = Options(60'000);
  options.host_id = "worker-node-0042-10.12.34.56";
  Prober prober(options, &client, nullptr);
  ASSERT_TRUE(prober.RunRound().ok());  // connects the channel
  const int port = std::stoi(scheduler.address().substr(scheduler.address().find(':') + 1));
  WireCount before = CountWire(port);
  ProbeRound sent;
  ASSERT_TRUE(prober.RunRound(&sent).ok());
  ASSERT_EQ(sent.finished.size(), 5u);
  scheduler.WaitRounds(2);
  std::this_thread::sleep_for(100ms);  // let the last ACKs land before reading the counters
  WireCount after = CountWire(port);
  const uint64_t out = after.bytes_out - before.bytes_out, in = after.bytes_in - before.bytes_in;
  const uint64_t segs = (after.segs_out - before.segs_out) + (after.segs_in - before.segs_in);
  // Serialized sizes of the messages themselves.
  sv1::SyncProbesRequest started, finished;
  started.set_host_id(options.host_id);
  started.mutable_probe_started();
  finished.set_host_id(options.host_id);
  for (const auto& p : sent.finished) *finished.mutable_probe_finished()->add_probes() = p;
  sv1::SyncProbesResponse response;
  for (const auto& h : five) *response.add_hosts() = h;
  const size_t messages =
      started.ByteSizeLong() + finished.ByteSizeLong() + response.ByteSizeLong();
  std::printf(
      "probe round, 5 targets: messages %zu B (started %zu, response %zu, finished %zu); "
      "TCP payload %llu B out + %llu B in; %llu segments (%llu B of IPv4+TCP headers at 52 B)\n",
      messages, started.ByteSizeLong(), response.ByteSizeLong(), finished.ByteSizeLong(),
      static_cast<unsigned long long>(out), static_cast<unsigned long long>(in),
      static_cast<unsigned long long>(segs), static_cast<unsigned long long>(segs * 52));
  RecordProperty("payload_bytes", std::to_string(out + in));
  if (out + in == 0) GTEST_SKIP() << "TCP_INFO byte counters unavailable";
  EXPECT_GT(out + in, messages) << "framing adds to the messages";
  EXPECT_LT(out + in, 4096u) << "a round stays small";
}

struct TempDir {
  TempDir() {
    char t[] = "/tmp/dfprober-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

// A daemon on loopback with free ports under `dir`, announcing every 100 ms to `scheduler`.
DaemonConfig LocalDaemonConfig(const std::string& dir, const std::string& scheduler) {
  DaemonConfig c;
  c.data_dir = dir + "/data";
  c.sock = dir + "/d.sock";
  c.ip = c.listen_ip = "127.0.0.1";
  c.grpc_port = c.piece_port = c.metrics_port = c.proxy_port = 0;
  c.scheduler = scheduler;
  c.announce_interval_ms = 100;
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  return c;
}

// The daemon owns one prober: it probes only once the scheduler acknowledged its host, and its
// shutdown does not wait for the interval.
TEST_F(ProberTest, DaemonProbesAfterItsHostIsAnnouncedAndStopsPromptly) {
  FakeScheduler scheduler(Targets());
  scheduler.FailAnnounces(3);
  TempDir dir;
  DaemonConfig c = LocalDaemonConfig(dir.path, scheduler.address());
  c.probe_interval_ms = 200;
  c.probe_timeout_ms = 500;
  {
    Daemon daemon(c);
    ASSERT_TRUE(daemon.Start().ok());
    auto rounds = scheduler.WaitRounds(2);
    ASSERT_GE(rounds.size(), 2u);
    EXPECT_TRUE(rounds[0].FinishedFor("host-a"));
    EXPECT_TRUE(rounds[0].FailedFor("host-closed"));
    auto events = scheduler.events();
    auto first_probe = std::find(events.begin(), events.end(), "probe");
    auto first_announce = std::find(events.begin(), events.end(), "announce");
    EXPECT_LT(first_announce, first_probe) << "no probe before the host is announced";
    const auto start = std::chrono::steady_clock::now();
    daemon.Shutdown();
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  }
}

TEST_F(ProberTest, DaemonWithProbeIntervalZeroNeverProbes) {
  FakeScheduler scheduler(Targets());
  TempDir dir;
  DaemonConfig c = LocalDaemonConfig(dir.path, scheduler.address());
  c.probe_interval_ms = 0;
  {
    Daemon daemon(c);
    ASSERT_TRUE(daemon.Start().ok());
    EXPECT_FALSE(scheduler.WaitStarted(1, 600ms));
  }
}

}  // namespace
}  // namespace df
