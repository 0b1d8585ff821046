// Latency probes through a real SchedulerServer on loopback: SyncProbes rounds played the way
// dfdaemon's prober plays them (prober.cc), the "inspect it" HTTP API, and two schedulers on one
// real redis-server.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <prometheus/registry.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/fd.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/default_evaluator.h"
#include "scheduler/scheduler_api.h"
#include "scheduler/server.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;
using Json = nlohmann::json;

SchedulerConfig Config(const std::string& store = "memory") {
  SchedulerConfig c;
  c.listen = "127.0.0.1:0";
  c.metrics = "";
  c.store = store;
  return c;
}

struct Cluster {
  explicit Cluster(SchedulerConfig config = Config()) {
    auto s = SchedulerServer::Start(config, registry);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    server = std::move(s).value();
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server->port()),
                                  grpc::InsecureChannelCredentials());
    stub = v1::Scheduler::NewStub(channel);
  }
  ~Cluster() { server->Shutdown(100); }
  Scheduler& scheduler() { return server->scheduler(); }
  NetworkTopology& topology() { return server->network_topology(); }

  prometheus::Registry registry;
  std::unique_ptr<SchedulerServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Scheduler::Stub> stub;
};

v1::Host HostNamed(const std::string& id, const std::string& ip = "127.0.0.1") {
  v1::Host h;
  h.set_id(id);
  h.set_hostname("name-" + id);
  h.set_ip(ip);
  h.set_piece_port(4005);
  h.set_grpc_port(4000);
  return h;
}

// What one round of the scheduler told the host, and how the stream ended.
struct Round {
  grpc::Status status;
  std::vector<std::string> targets;
};

// One round as dfdaemon's prober plays it: ProbeStarted, read the targets, report an RTT for
// each (rtt_ns(target); 0 = report it failed instead), WritesDone, Finish.
Round PlayRound(v1::Scheduler::Stub* stub, const std::string& host_id,
                const std::function<int64_t(const std::string&)>& rtt_ns,
                const std::vector<v1::SyncProbesRequest>& extra = {}) {
  Round round;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  auto stream = stub->SyncProbes(&ctx);
  v1::SyncProbesRequest req;
  req.set_host_id(host_id);
  req.mutable_probe_started();
  v1::SyncProbesResponse resp;
  if (stream->Write(req) && stream->Read(&resp)) {
    v1::SyncProbesRequest finished, failed;
    finished.set_host_id(host_id);
    failed.set_host_id(host_id);
    for (const auto& h : resp.hosts()) {
      round.targets.push_back(h.id());
      if (int64_t rtt = rtt_ns(h.id()); rtt > 0) {
        auto* p = finished.mutable_probe_finished()->add_probes();
        p->set_host_id(h.id());
        p->set_rtt_ns(rtt);
        p->set_created_unix_ms(0);
      } else {
        auto* f = failed.mutable_probe_failed()->add_probes();
        f->set_host_id(h.id());
        f->set_description("connect: connection refused");
      }
    }
    bool ok = true;
    if (finished.probe_finished().probes_size() > 0) ok = stream->Write(finished);
    if (ok && failed.probe_failed().probes_size() > 0) ok = stream->Write(failed);
    for (const auto& m : extra) ok = ok && stream->Write(m);
    if (ok) stream->WritesDone();
  }
  while (stream->Read(&resp)) {
  }
  round.status = stream->Finish();
  return round;
}

int64_t FakeRtt(const std::string& dst) {
  return 100'000 + static_cast<int64_t>(std::hash<std::string>{}(dst) % 900'000);
}

// GET `path` on 127.0.0.1:port; the body of a 200 reply, "" otherwise.
std::string HttpGet(int port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "";
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return "";
  }
  std::string reply;
  char buf[65536];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, n);
  if (reply.rfind("HTTP/1.1 200", 0) != 0) return "";
  size_t body = reply.find("\r\n\r\n");
  return body == std::string::npos ? "" : reply.substr(body + 4);
}

Json GetJson(int port, const std::string& path) {
  return Json::parse(HttpGet(port, path), nullptr, /*allow_exceptions=*/false);
}

// 1,000 hosts announced to one scheduler with `store`, each playing one round per interval for 2
// intervals (4 client threads); every host must be probed, none asked for more than probe_count.
void ThousandHostsTwoIntervals(const std::string& store) {
  Cluster c(Config(store));
  constexpr int kHosts = 1000;
  std::vector<std::string> ids;
  for (int i = 0; i < kHosts; ++i) {
    ids.push_back("host-" + std::to_string(i));
    ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed(ids.back())).ok());
  }
  constexpr int kThreads = 4;
  std::atomic<size_t> over_limit{0}, failed_rounds{0}, self_targets{0};
  std::mutex mu;
  std::map<std::string, int> asked;  // how often each host was a target
  const auto start = std::chrono::steady_clock::now();
  for (int interval = 0; interval < 2; ++interval) {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < kHosts; i += kThreads) {
          Round r = PlayRound(c.stub.get(), ids[i], FakeRtt);
          if (!r.status.ok()) ++failed_rounds;
          if (r.targets.size() > 5) ++over_limit;
          std::lock_guard lock(mu);
          for (const auto& id : r.targets) {
            if (id == ids[i]) ++self_targets;
            ++asked[id];
          }
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(failed_rounds, 0u);
  EXPECT_EQ(over_limit, 0u);
  EXPECT_EQ(self_targets, 0u);
  std::set<std::string> probed_dst;
  for (const auto& e : c.topology().Edges()) probed_dst.insert(e.dst_host_id);
  size_t never = 0;
  for (const auto& id : ids) never += probed_dst.contains(id) ? 0 : 1;
  EXPECT_EQ(never, 0u) << "hosts never probed within 2 intervals";
  int most = 0;
  for (const auto& [id, n] : asked) most = std::max(most, n);
  std::printf(
      "[ figures ] %d hosts, %s store, 2 intervals: %d rounds in %.2f s = %.0f rounds/s over "
      "gRPC (%d client threads); each host probed %d..%d times (10 on average)\n",
      kHosts, store == "memory" ? "memory" : "redis", 2 * kHosts, seconds, 2 * kHosts / seconds,
      kThreads,
      asked.empty() ? 0
                    : std::min_element(asked.begin(), asked.end(),
                                       [](auto& a, auto& b) { return a.second < b.second; })
                          ->second,
      most);
}

TEST(SyncProbes, ThousandHostsAreAllProbedWithinTwoIntervalsAtMostProbeCountEach) {
  ThousandHostsTwoIntervals("memory");
}

TEST(SyncProbes, ThousandHostsOnRedisToo) {
  bench::RedisServer redis;
  ASSERT_TRUE(redis.ok());
  ThousandHostsTwoIntervals(redis.Url());
}

TEST(SyncProbes, RefusesUnknownHostsStrangersAndSecondRounds) {
  Cluster c;
  ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed("a")).ok());
  ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed("b")).ok());
  ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed("far", "10.9.8.7")).ok());
  EXPECT_EQ(PlayRound(c.stub.get(), "nobody", FakeRtt).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Unauthenticated, a caller may only probe as the host at its own address.
  EXPECT_EQ(PlayRound(c.stub.get(), "far", FakeRtt).status.error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  v1::SyncProbesRequest again;
  again.set_host_id("a");
  again.mutable_probe_started();
  EXPECT_EQ(PlayRound(c.stub.get(), "a", FakeRtt, {again}).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::SyncProbesRequest other;
  other.set_host_id("b");
  other.mutable_probe_finished();
  EXPECT_EQ(PlayRound(c.stub.get(), "a", FakeRtt, {other}).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(SyncProbes, OnlyAssignedTargetsAreRecordedAndUnknownMessagesIgnored) {
  Cluster c;
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed(id)).ok());
  }
  v1::SyncProbesRequest forged;
  forged.set_host_id("a");
  auto* p = forged.mutable_probe_finished()->add_probes();
  p->set_host_id("not-assigned");
  p->set_rtt_ns(5);
  v1::SyncProbesRequest empty;  // no message set: ignored
  empty.set_host_id("a");
  Round r = PlayRound(c.stub.get(), "a", FakeRtt, {forged, empty});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::set<std::string> targets(r.targets.begin(), r.targets.end());
  EXPECT_EQ(targets, (std::set<std::string>{"b", "c"}));
  std::set<std::string> dsts;
  for (const auto& e : c.topology().Edges()) dsts.insert(e.src_host_id + ">" + e.dst_host_id);
  EXPECT_EQ(dsts, (std::set<std::string>{"a>b", "a>c"}));
  EXPECT_EQ(c.topology().AverageRtt("a", "b"), FakeRtt("b"));
}

TEST(SyncProbes, AFailedProbeCountsAgainstTheTarget) {
  Cluster c;
  for (const char* id : {"a", "b", "down"}) {
    ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed(id)).ok());
  }
  auto rtt = [](const std::string& dst) -> int64_t { return dst == "down" ? 0 : 1000; };
  ASSERT_TRUE(PlayRound(c.stub.get(), "a", rtt).status.ok());
  ASSERT_TRUE(PlayRound(c.stub.get(), "b", rtt).status.ok());
  EXPECT_EQ(c.topology().ProbeFailures("down"), 2u);
  EXPECT_EQ(c.topology().ProbeFailures("b"), 0u);
  EXPECT_EQ(c.topology().AverageRtt("a", "down"), std::nullopt);
}

TEST(SyncProbes, AHostThatLeavesLosesItsProbesBothWays) {
  SchedulerConfig config = Config();
  config.host_ttl_ms = 300;
  Cluster c(config);
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed(id)).ok());
  }
  for (const char* id : {"a", "b", "c"}) {
    ASSERT_TRUE(PlayRound(c.stub.get(), id, FakeRtt).status.ok());
  }
  ASSERT_EQ(c.topology().Edges().size(), 6u);
  // LeaveHost over gRPC (from the host's own address).
  grpc::ClientContext ctx;
  v1::LeaveHostRequest leave;
  leave.set_host_id("a");
  v1::LeaveHostResponse left;
  ASSERT_TRUE(c.stub->LeaveHost(&ctx, leave, &left).ok());
  for (const auto& e : c.topology().Edges()) {
    EXPECT_NE(e.src_host_id, "a");
    EXPECT_NE(e.dst_host_id, "a");
  }
  EXPECT_EQ(c.topology().Edges().size(), 2u);
  // Host GC: c stops announcing; b keeps announcing.
  std::this_thread::sleep_for(400ms);
  ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed("b")).ok());
  Round r = PlayRound(c.stub.get(), "b", FakeRtt);
  ASSERT_TRUE(r.status.ok());
  EXPECT_TRUE(r.targets.empty()) << "a left and c is past its TTL: neither is a target";
  c.scheduler().CollectGarbage();
  EXPECT_TRUE(c.topology().Edges().empty());
  EXPECT_EQ(c.topology().AverageRtt("b", "c"), std::nullopt);
}

// Records what the scheduler tells an evaluator about candidates, then ranks like "default".
class SpyEvaluator final : public Evaluator {
 public:
  std::string_view name() const override { return "spy"; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override {
    std::lock_guard lock(mu_);
    if (candidates.size() > seen_.size()) seen_ = candidates;
    return DefaultEvaluator().Evaluate(child, candidates, task);
  }
  std::vector<ParentInfo> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<ParentInfo> seen_;  // the largest candidate list evaluated
};

class DroppingStream final : public PeerStream {
 public:
  bool Send(const v1::AnnouncePeerResponse&) override { return true; }
};

TEST(SyncProbes, EvaluatorsSeeTheProbedRttAndFailuresOfEachCandidate) {
  prometheus::Registry registry;
  SchedulerMetrics metrics(registry);
  auto spy_owned = std::make_unique<SpyEvaluator>();
  SpyEvaluator* spy = spy_owned.get();
  Scheduler scheduler(SchedulerConfig{}, std::move(spy_owned), nullptr, &metrics);
  auto store = NewStore("memory").value();
  NetworkTopology topology(store.get(), {});
  scheduler.SetNetworkTopology(&topology);
  for (const char* id : {"child", "near", "far"}) {
    ASSERT_TRUE(scheduler.AnnounceHost(HostNamed(id)).ok());
  }
  auto probe = [](const std::string& dst, int64_t rtt_ns) {
    v1::Probe p;
    p.set_host_id(dst);
    p.set_rtt_ns(rtt_ns);
    return p;
  };
  topology.Record("child", {probe("near", 100'000)});
  topology.Record("far", {probe("child", 20'000'000)});  // the reverse direction counts too
  topology.RecordFailure("near", "far", "timeout");

  const std::string url = "http://origin/probed";
  const std::string task_id = TaskId(TaskIdInput{url, "", "", 0, {}});
  for (const char* host : {"near", "far", "child"}) {  // near goes to the origin, far to near
    v1::AnnouncePeerRequest r;
    auto* reg = r.mutable_register_();
    reg->set_host_id(host);
    reg->set_peer_id(std::string(host) + "-peer");
    reg->mutable_task()->set_task_id(task_id);
    reg->mutable_task()->set_url(url);
    reg->mutable_task()->set_content_length(-1);
    ASSERT_TRUE(scheduler.RegisterPeer(r, std::make_shared<DroppingStream>()).ok());
  }
  std::map<std::string, ParentInfo> seen;
  for (const auto& p : spy->seen()) seen[p.peer_id] = p;
  ASSERT_EQ(seen.size(), 2u) << "the child's candidates: near-peer and far-peer";
  EXPECT_EQ(seen["near-peer"].rtt_ns, 100'000);
  EXPECT_EQ(seen["near-peer"].probe_failures, 0u);
  EXPECT_EQ(seen["far-peer"].rtt_ns, 20'000'000);
  EXPECT_EQ(seen["far-peer"].probe_failures, 1u);
}

TEST(SchedulerApi, ServesHostsProbesAndBandwidthAsJson) {
  Cluster c;
  MetricsServer metrics;
  ASSERT_TRUE(metrics.Start("127.0.0.1:0").ok());
  ASSERT_TRUE(RegisterSchedulerApi(metrics, c.scheduler(), c.topology()).ok());
  const std::string odd = "odd\"id\\\n\x01\u00e9";  // quote, backslash, controls, UTF-8
  v1::Host a = HostNamed("a");
  a.set_idc("idc-1");
  a.set_upload_rate_limit_bytes_per_sec(125'000'000);
  ASSERT_TRUE(c.scheduler().AnnounceHost(a).ok());
  ASSERT_TRUE(c.scheduler().AnnounceHost(HostNamed(odd)).ok());
  ASSERT_TRUE(PlayRound(c.stub.get(), "a", FakeRtt).status.ok());
  // gRPC refuses strings that are not UTF-8; the API must not trust the model to hold none.
  v1::Host bad = HostNamed("z\xff");
  bad.set_ip("");  // not reachable: never a probe target
  ASSERT_TRUE(c.scheduler().AnnounceHost(bad).ok());

  Json hosts = GetJson(metrics.port(), "/api/v1/hosts");
  ASSERT_TRUE(hosts.is_array()) << HttpGet(metrics.port(), "/api/v1/hosts");
  ASSERT_EQ(hosts.size(), 3u);
  EXPECT_EQ(hosts[0]["id"], "a");
  EXPECT_EQ(hosts[0]["hostname"], "name-a");
  EXPECT_EQ(hosts[0]["ip"], "127.0.0.1");
  EXPECT_EQ(hosts[0]["idc"], "idc-1");
  EXPECT_EQ(hosts[0]["announced_upload_bytes_per_sec"], 125'000'000);
  EXPECT_TRUE(hosts[0].contains("learned_upload_bytes_per_sec"));
  EXPECT_TRUE(hosts[0].contains("learned_download_bytes_per_sec"));
  EXPECT_EQ(hosts[1]["id"], odd) << "escaped";
  EXPECT_EQ(hosts[2]["id"], "z\xEF\xBF\xBD") << "invalid UTF-8 replaced";

  Json probes = GetJson(metrics.port(), "/api/v1/probes");
  ASSERT_TRUE(probes.is_array());
  ASSERT_EQ(probes.size(), 1u);
  EXPECT_EQ(probes[0]["src"], "a");
  EXPECT_EQ(probes[0]["average_rtt_ns"], FakeRtt(odd));
  EXPECT_EQ(probes[0]["samples"].size(), 1u);
  EXPECT_GT(probes[0]["updated_unix_ms"].get<int64_t>(), 0);

  Json bandwidth = GetJson(metrics.port(), "/api/v1/bandwidth");
  EXPECT_TRUE(bandwidth.is_array());
  UnregisterSchedulerApi(metrics);
  EXPECT_EQ(HttpGet(metrics.port(), "/api/v1/hosts"), "");
}

TEST(SyncProbes, AProbeThroughOneSchedulerIsVisibleThroughAnotherWithinOneSecond) {
  bench::RedisServer redis;
  ASSERT_TRUE(redis.ok());
  Cluster a(Config(redis.Url()));
  Cluster b(Config(redis.Url()));
  MetricsServer metrics_b;
  ASSERT_TRUE(metrics_b.Start("127.0.0.1:0").ok());
  ASSERT_TRUE(RegisterSchedulerApi(metrics_b, b.scheduler(), b.topology()).ok());
  for (const char* id : {"x", "y"}) {  // hosts announce to every scheduler
    ASSERT_TRUE(a.scheduler().AnnounceHost(HostNamed(id)).ok());
    ASSERT_TRUE(b.scheduler().AnnounceHost(HostNamed(id)).ok());
  }
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(PlayRound(a.stub.get(), "x", FakeRtt).status.ok());
  const auto reported = std::chrono::steady_clock::now();
  double seen_after_ms = -1;
  while (std::chrono::steady_clock::now() - reported < 3s) {
    Json probes = GetJson(metrics_b.port(), "/api/v1/probes");
    if (probes.is_array() && probes.size() == 1 && probes[0]["src"] == "x" &&
        probes[0]["dst"] == "y" && probes[0]["average_rtt_ns"] == FakeRtt("y")) {
      seen_after_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - reported)
              .count();
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_GE(seen_after_ms, 0) << "never visible through scheduler B";
  EXPECT_LT(seen_after_ms, 1000);
  std::printf(
      "[ figures ] probe reported through scheduler A visible through B's /api/v1/probes "
      "after %.0f ms\n",
      seen_after_ms);
  // B's evaluators see it too (either direction).
  EXPECT_EQ(b.topology().AverageRtt("y", "x"), FakeRtt("y"));
  UnregisterSchedulerApi(metrics_b);
}

}  // namespace
}  // namespace df::scheduler
