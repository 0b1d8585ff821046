// Several schedulers on one Redis: what one learns reaches the other, the dataset collects both,
// and a Redis outage costs neither scheduling nor the writes made meanwhile.
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>

#include "bench/harness.h"
#include "common/ids.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/server.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;

std::string Url(const std::string& task) { return "http://origin/" + task; }
std::string Id(const std::string& task) { return TaskId(TaskIdInput{Url(task), "", "", 0, {}}); }

// One in-process dfscheduler with its own client.
struct Node {
  prometheus::Registry registry;
  std::unique_ptr<SchedulerServer> server;
  std::unique_ptr<v1::Scheduler::Stub> stub;

  bool Start(const std::string& store) {
    SchedulerConfig c;
    c.listen = "127.0.0.1:0";
    c.metrics = "";
    c.store = store;
    c.gc_interval_ms = 3600'000;
    auto s = SchedulerServer::Start(c, registry);
    if (!s.ok()) return false;
    server = std::move(s).value();
    stub = v1::Scheduler::NewStub(grpc::CreateChannel("127.0.0.1:" + std::to_string(server->port()),
                                                      grpc::InsecureChannelCredentials()));
    return true;
  }
  Scheduler& scheduler() { return server->scheduler(); }

  void Announce(const std::string& id) {
    v1::AnnounceHostRequest req;
    req.mutable_host()->set_id(id);
    req.mutable_host()->set_ip("127.0.0.1");
    req.mutable_host()->set_grpc_port(4000);
    req.mutable_host()->set_piece_port(4005);
    grpc::ClientContext ctx;
    v1::AnnounceHostResponse resp;
    ASSERT_TRUE(stub->AnnounceHost(&ctx, req, &resp).ok());
  }

  double Gauge(const std::string& name) {
    for (const auto& f : registry.Collect()) {
      if (f.name == name && !f.metric.empty()) return f.metric[0].gauge.value;
    }
    return -1;
  }
};

// A peer's AnnouncePeer stream (register, then messages; responses are not read here).
class Stream {
 public:
  Stream(v1::Scheduler::Stub* stub, std::string host, std::string peer, std::string task)
      : host_(std::move(host)), peer_(std::move(peer)), task_(std::move(task)) {
    stream_ = stub->AnnouncePeer(&ctx_);
    v1::AnnouncePeerRequest r = Base();
    auto* reg = r.mutable_register_();
    reg->set_host_id(host_);
    reg->set_peer_id(peer_);
    reg->mutable_task()->set_task_id(Id(task_));
    reg->mutable_task()->set_url(Url(task_));
    stream_->Write(r);
  }
  ~Stream() {
    ctx_.TryCancel();
    stream_->Finish();
  }
  // Pieces from `parent` at `bytes_per_sec`, paced in real time for `duration`.
  void PiecesFrom(const std::string& parent, double bytes_per_sec, std::chrono::milliseconds d) {
    const uint64_t piece = 102'400;
    const auto step = std::chrono::nanoseconds(
        static_cast<int64_t>(static_cast<double>(piece) / bytes_per_sec * 1e9));
    const auto end = std::chrono::steady_clock::now() + d;
    auto next = std::chrono::steady_clock::now();
    for (uint32_t i = 0; next < end; ++i) {
      next += step;
      std::this_thread::sleep_until(next);
      v1::AnnouncePeerRequest r = Base();
      auto* p = r.mutable_piece_finished();
      p->set_piece_number(i);
      p->set_parent_id(parent);
      p->set_length(piece);
      p->set_cost_ns(static_cast<uint64_t>(step.count()));
      stream_->Write(r);
    }
  }
  v1::AnnouncePeerRequest Base() const {
    v1::AnnouncePeerRequest r;
    r.set_host_id(host_);
    r.set_peer_id(peer_);
    r.set_task_id(Id(task_));
    return r;
  }

 private:
  std::string host_, peer_, task_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>>
      stream_;
};

class SharedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(redis_.ok());
    ASSERT_TRUE(a_.Start(redis_.Url()));
    ASSERT_TRUE(b_.Start(redis_.Url()));
    for (Node* n : {&a_, &b_}) {
      for (const char* h : {"host-p", "host-c", "host-d"}) n->Announce(h);
    }
  }
  bench::RedisServer redis_;
  Node a_, b_;
};

TEST_F(SharedStoreTest, ACapacityLearnedThroughOneSchedulerIsUsedByTheOther) {
  // Through A: host-c takes pieces from host-p at 2 MB/s.
  Stream parent(a_.stub.get(), "host-p", "peer-p", "t1");
  Stream child(a_.stub.get(), "host-c", "peer-c", "t1");
  child.PiecesFrom("peer-p", 2e6, 2500ms);
  ASSERT_TRUE(a_.scheduler().SyncStore());  // (the sync thread does this every 500 ms)
  uint64_t learned_by_a = 0;
  for (int i = 0; i < 50 && learned_by_a == 0; ++i) {
    a_.scheduler().RefreshCapacities(std::chrono::steady_clock::now());
    a_.scheduler().SyncStore();
    learned_by_a = a_.scheduler().GetHostCapacity("host-p")->learned.upload_peak;
    if (learned_by_a == 0) std::this_thread::sleep_for(100ms);
  }
  ASSERT_GT(learned_by_a, 1'000'000u);
  // B never saw a record of host-p: it adopts A's view at its next round.
  ASSERT_TRUE(b_.scheduler().SyncStore());
  b_.scheduler().RefreshCapacities(std::chrono::steady_clock::now());
  auto b_view = b_.scheduler().GetHostCapacity("host-p");
  ASSERT_TRUE(b_view.has_value());
  EXPECT_NEAR(static_cast<double>(b_view->learned.upload_peak), 2e6, 0.6e6);
  // The records of both schedulers land in one dataset.
  Stream other(b_.stub.get(), "host-d", "peer-d", "t2");
  Stream p2(b_.stub.get(), "host-p", "peer-p2", "t2");
  other.PiecesFrom("peer-p2", 4e6, 300ms);
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(b_.scheduler().SyncStore());
  auto records = a_.scheduler().store().ListRecords(100'000);
  ASSERT_TRUE(records.ok());
  bool from_a = false, from_b = false;
  for (const auto& r : records.value()) {
    from_a = from_a || r.child_host_id == "host-c";
    from_b = from_b || r.child_host_id == "host-d";
  }
  EXPECT_TRUE(from_a && from_b) << records.value().size() << " records";
}

TEST_F(SharedStoreTest, RedisDownMeansSchedulingFromMemoryAndCatchingUpWhenItReturns) {
  redis_.process().Kill(SIGKILL);
  redis_.process().Wait(5000);
  Stream parent(a_.stub.get(), "host-p", "peer-p", "t1");
  Stream child(a_.stub.get(), "host-c", "peer-c", "t1");
  child.PiecesFrom("peer-p", 4e6, 300ms);
  EXPECT_FALSE(a_.scheduler().SyncStore());
  EXPECT_EQ(a_.Gauge("df_scheduler_store_up"), 0);
  // Scheduling goes on: a new peer still gets its decision (the origin: no seed exists).
  EXPECT_TRUE(a_.scheduler().GetPeer(Id("t1"), "peer-c").has_value());
  a_.Announce("host-e");  // queued for the store while it is down

  ASSERT_TRUE(redis_.Start());  // same port, empty
  bool back = false;
  for (int i = 0; i < 20 && !back; ++i) {  // reconnects are rate-limited to one per 500 ms
    back = a_.scheduler().SyncStore();
    if (!back) std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(back);
  EXPECT_EQ(a_.Gauge("df_scheduler_store_up"), 1);
  auto records = a_.scheduler().store().ListRecords(100'000);
  ASSERT_TRUE(records.ok());
  EXPECT_GT(records.value().size(), 0u) << "records made while Redis was down are written";
  auto hosts = a_.scheduler().store().ListHosts();
  ASSERT_TRUE(hosts.ok());
  bool has_e = false;
  for (const auto& h : hosts.value()) has_e = has_e || h.info.id() == "host-e";
  EXPECT_TRUE(has_e);
}

}  // namespace
}  // namespace df::scheduler
