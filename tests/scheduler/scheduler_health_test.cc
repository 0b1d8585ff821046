// The scheduler's /healthz over real HTTP (MetricsServer + RegisterSchedulerApi, as dfscheduler
// wires them): "ok" (200) while the background round comes round, 503 with the reason while it
// is stalled, "ok" again once it runs. The stall is real: a decision blocked inside the evaluator
// holds the scheduler's mutex, so the background thread cannot start its next round; nothing
// here fakes the clock or the health check.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "bench/harness.h"
#include "common/ids.h"
#include "common/metrics.h"
#include "scheduler/network_topology.h"
#include "scheduler/scheduler.h"
#include "scheduler/scheduler_api.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;
using SteadyTime = std::chrono::steady_clock;

constexpr char kUrl[] = "http://origin/stall";

// Ranks as the default evaluator; while closed, a decision that reaches it waits (under the
// scheduler's mutex, where every decision runs) until the gate opens: a stuck call on the
// decision path.
class GateEvaluator final : public Evaluator {
 public:
  std::string_view name() const override { return "gate"; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override {
    {
      std::unique_lock lock(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait(lock, [this] { return open_; });
    }
    return default_->Evaluate(child, candidates, task);
  }
  void Close() {
    std::lock_guard lock(mu_);
    open_ = false;
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // True once a decision is held at the closed gate.
  bool WaitEntered(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return entered_ > 0; });
  }

 private:
  std::unique_ptr<Evaluator> default_ = NewEvaluator("default").value();
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable int entered_ = 0;  // GUARDED_BY(mu_)
  bool open_ = true;         // GUARDED_BY(mu_)
};

class DroppingStream final : public PeerStream {
 public:
  bool Send(const v1::AnnouncePeerResponse&) override { return true; }
};

struct Reply {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:port/path with curl: the status code and the body.
Reply Get(int port, const std::string& path) {
  std::string out;
  bench::Run({"curl", "-s", "-m", "5", "-w", "\n%{http_code}",
              "http://127.0.0.1:" + std::to_string(port) + path},
             &out);
  Reply r;
  const size_t nl = out.rfind('\n');
  if (nl == std::string::npos) return r;
  r.status = std::atoi(out.c_str() + nl + 1);
  r.body = out.substr(0, nl);
  return r;
}

v1::Host HostNamed(const std::string& id, v1::HostType type) {
  v1::Host h;
  h.set_id(id);
  h.set_ip("127.0.0.1");
  h.set_grpc_port(4000);
  h.set_piece_port(4005);
  h.set_type(type);
  return h;
}

PeerKey Register(Scheduler& scheduler, const std::string& task_id, const std::string& host_id,
                 const std::string& peer_id) {
  v1::AnnouncePeerRequest r;
  r.set_host_id(host_id);
  r.set_peer_id(peer_id);
  r.set_task_id(task_id);
  v1::RegisterPeerRequest* reg = r.mutable_register_();
  reg->set_host_id(host_id);
  reg->set_peer_id(peer_id);
  reg->mutable_task()->set_task_id(task_id);
  reg->mutable_task()->set_url(kUrl);
  auto key = scheduler.RegisterPeer(r, std::make_shared<DroppingStream>());
  EXPECT_TRUE(key.ok()) << key.status().ToString();
  return key.ok() ? key.value() : PeerKey{};
}

TEST(SchedulerHealth, HealthzAnswers503WithTheReasonWhileTheBackgroundRoundStalls) {
  SchedulerConfig config;
  config.background_stall_ms = 1000;  // far above a busy machine's scheduling delays
  auto gate_owned = std::make_unique<GateEvaluator>();
  GateEvaluator* gate = gate_owned.get();
  prometheus::Registry registry;
  SchedulerMetrics metrics(registry);
  Scheduler scheduler(config, std::move(gate_owned), nullptr, &metrics);
  NetworkTopology topology(&scheduler.store(), NetworkTopologyOptions{});
  scheduler.Start();
  MetricsServer server;
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  ASSERT_TRUE(RegisterSchedulerApi(server, scheduler, topology).ok());

  // Healthy for twice the stall threshold: the round keeps coming round.
  for (auto end = SteadyTime::now() + 2000ms; SteadyTime::now() < end;) {
    Reply r = Get(server.port(), "/healthz");
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(r.body, "ok\n");
    std::this_thread::sleep_for(100ms);
  }

  // A child's first decision blocks inside the evaluator, holding the scheduler's mutex.
  const std::string task_id = TaskId(TaskIdInput{kUrl, "", "", 0, {}});
  ASSERT_TRUE(scheduler.AnnounceHost(HostNamed("seed-host", v1::HOST_TYPE_SEED)).ok());
  ASSERT_TRUE(scheduler.AnnounceHost(HostNamed("host-a", v1::HOST_TYPE_NORMAL)).ok());
  Register(scheduler, task_id, "seed-host", "seed-peer");  // back to source: no evaluation
  gate->Close();
  const auto blocked_at = SteadyTime::now();
  std::thread child([&] { Register(scheduler, task_id, "host-a", "peer-a"); });
  struct OpenAndJoin {  // whatever fails below, the child is released and joined
    GateEvaluator* gate;
    std::thread* child;
    ~OpenAndJoin() {
      gate->Open();
      if (child->joinable()) child->join();
    }
  } release{gate, &child};
  ASSERT_TRUE(gate->WaitEntered(5s)) << "the child's decision never reached the evaluator";

  Reply stalled;
  while (SteadyTime::now() - blocked_at < 10s) {
    stalled = Get(server.port(), "/healthz");
    if (stalled.status != 200) break;
    std::this_thread::sleep_for(50ms);
  }
  const auto noticed_after = SteadyTime::now() - blocked_at;
  EXPECT_EQ(stalled.status, 503) << stalled.body;
  EXPECT_NE(stalled.body.find("scheduler background round stalled for"), std::string::npos)
      << stalled.body;
  // Not before the threshold (the last round began at most one 20 ms tick before the block).
  EXPECT_GE(noticed_after, 950ms);
  EXPECT_NE(Get(server.port(), "/metrics").body.find("\ndf_healthy 0\n"), std::string::npos);

  gate->Open();
  child.join();
  Reply again;
  for (auto end = SteadyTime::now() + 5s; SteadyTime::now() < end;) {
    again = Get(server.port(), "/healthz");
    if (again.status == 200) break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.body, "ok\n");
  auto peer = scheduler.GetPeer(task_id, "peer-a");
  ASSERT_TRUE(peer.has_value());
  EXPECT_EQ(peer->parents, std::vector<std::string>{"seed-peer"});  // the held decision went out

  UnregisterSchedulerApi(server);
  scheduler.Stop();
}

}  // namespace
}  // namespace df::scheduler
