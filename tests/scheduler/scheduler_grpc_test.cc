// The scheduler end to end over gRPC: a real SchedulerServer on a free loopback port, real gRPC
// clients playing peers, and (for seed triggers) a real DfdaemonUpload server that records the
// TriggerDownloadTask calls it receives.
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/ids.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/server.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;

// Tests name their tasks; the scheduler only accepts the real id of a task's spec.
std::string UrlOf(const std::string& task_name) { return "http://origin/" + task_name; }
std::string Id(const std::string& task_name) {
  return TaskId(TaskIdInput{UrlOf(task_name), "", "", 0, {}});
}

// A seed host's dfdaemon, reduced to what the scheduler calls: it records trigger requests.
class RecordingDaemon final : public df::dfdaemon::v1::DfdaemonUpload::Service {
 public:
  RecordingDaemon() {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(this);
    server_ = b.BuildAndStart();
  }
  ~RecordingDaemon() override { server_->Shutdown(std::chrono::system_clock::now()); }

  grpc::Status TriggerDownloadTask(grpc::ServerContext*,
                                   const df::dfdaemon::v1::TriggerDownloadTaskRequest* request,
                                   df::dfdaemon::v1::TriggerDownloadTaskResponse*) override {
    std::lock_guard lock(mu_);
    triggered_.push_back(request->task().task_id());
    urls_.push_back(request->task().url());
    cv_.notify_all();
    return grpc::Status::OK;
  }

  // Waits until at least `n` triggers arrived; returns how many did.
  size_t WaitForTriggers(size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return triggered_.size() >= n; });
    return triggered_.size();
  }
  std::vector<std::string> triggered() {
    std::lock_guard lock(mu_);
    return triggered_;
  }
  std::vector<std::string> urls() {
    std::lock_guard lock(mu_);
    return urls_;
  }
  int port() const { return port_; }

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> triggered_;
  std::vector<std::string> urls_;
};

// One peer's AnnouncePeer stream, with a reader thread queueing the scheduler's responses.
class PeerClient {
 public:
  PeerClient(v1::Scheduler::Stub* stub, std::string host_id, std::string peer_id,
             const std::string& task_name)
      : host_id_(std::move(host_id)),
        peer_id_(std::move(peer_id)),
        task_id_(Id(task_name)),
        url_(UrlOf(task_name)) {
    stream_ = stub->AnnouncePeer(&context_);
    reader_ = std::thread([this] {
      v1::AnnouncePeerResponse r;
      while (stream_->Read(&r)) {
        std::lock_guard lock(mu_);
        responses_.push_back(r);
        cv_.notify_all();
      }
      std::lock_guard lock(mu_);
      read_closed_ = true;
      cv_.notify_all();
    });
  }

  ~PeerClient() {
    if (!finished_) {
      context_.TryCancel();
      reader_.join();
      stream_->Finish();
    }
  }

  const std::string& id() const { return peer_id_; }

  // Registers for the task; `claimed_task_id` (default: the task's real id) is the id sent.
  void Register(int64_t content_length = -1, const std::string& claimed_task_id = "") {
    v1::AnnouncePeerRequest r = Request();
    auto* reg = r.mutable_register_();
    reg->set_host_id(host_id_);
    reg->set_peer_id(peer_id_);
    reg->mutable_task()->set_task_id(claimed_task_id.empty() ? task_id_ : claimed_task_id);
    reg->mutable_task()->set_url(url_);
    reg->mutable_task()->set_content_length(content_length);
    Send(r);
  }

  v1::AnnouncePeerRequest Request() const {
    v1::AnnouncePeerRequest r;
    r.set_host_id(host_id_);
    r.set_task_id(task_id_);
    r.set_peer_id(peer_id_);
    return r;
  }

  void Send(const v1::AnnouncePeerRequest& r) { ASSERT_TRUE(stream_->Write(r)); }

  void Reschedule(const std::vector<std::string>& bad_parents) {
    auto r = Request();
    r.mutable_reschedule()->set_reason("test");
    for (const auto& id : bad_parents) r.mutable_reschedule()->add_bad_parent_ids(id);
    Send(r);
  }

  void PieceFinished(uint32_t number, const std::string& parent_id) {
    auto r = Request();
    auto* p = r.mutable_piece_finished();
    p->set_piece_number(number);
    p->set_parent_id(parent_id);
    p->set_length(4 << 20);
    p->set_cost_ns(20'000'000);
    Send(r);
  }

  void Finished() {
    auto r = Request();
    r.mutable_peer_finished()->set_content_length(100 << 20);
    Send(r);
  }

  // A piece fetched from the origin, with its digest (as seeds report them).
  void PieceFromOrigin(uint32_t number) {
    auto r = Request();
    auto* p = r.mutable_piece_finished();
    p->set_piece_number(number);
    p->set_length(4 << 20);
    p->set_cost_ns(20'000'000);
    p->set_sha256(std::string(32, static_cast<char>('a' + number % 26)));
    Send(r);
  }

  // Asks for the digests of pieces [first, first + count); the answer, skipping other messages,
  // or nullopt when none comes.
  std::optional<v1::AnnouncePeerResponse> AskDigests(uint32_t first, uint32_t count) {
    auto ask = Request();
    ask.mutable_piece_digests_request()->set_first_piece(first);
    ask.mutable_piece_digests_request()->set_count(count);
    Send(ask);
    std::optional<v1::AnnouncePeerResponse> r;
    do {
      r = Next();
    } while (r && !r->has_piece_digests());
    return r;
  }

  void ReportSize(int64_t content_length) {
    auto r = Request();
    r.mutable_task_metadata()->set_content_length(content_length);
    Send(r);
  }

  // The next response, or nullopt after `timeout` or when the stream ended.
  std::optional<v1::AnnouncePeerResponse> Next(std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !responses_.empty() || read_closed_; });
    if (responses_.empty()) return std::nullopt;
    auto r = responses_.front();
    responses_.pop_front();
    return r;
  }

  // Waits for the next NormalTaskResponse and returns its parents' peer ids (sorted); fails
  // the test on any other response.
  std::vector<std::string> NextParents(std::chrono::milliseconds timeout = 5s) {
    auto r = Next(timeout);
    EXPECT_TRUE(r.has_value()) << peer_id_ << ": no response";
    if (!r) return {};
    EXPECT_TRUE(r->has_normal_task()) << peer_id_ << ": " << r->ShortDebugString();
    std::vector<std::string> ids;
    for (const auto& c : r->normal_task().candidate_parents()) ids.push_back(c.peer_id());
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  // Half-closes and returns the stream's final status.
  grpc::Status Close() {
    stream_->WritesDone();
    reader_.join();
    finished_ = true;
    return stream_->Finish();
  }

 private:
  std::string host_id_, peer_id_, task_id_, url_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>>
      stream_;
  std::thread reader_;
  bool finished_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::AnnouncePeerResponse> responses_;
  bool read_closed_ = false;
};

class SchedulerGrpcTest : public ::testing::Test {
 protected:
  void StartScheduler(std::function<void(SchedulerConfig&)> tweak = nullptr) {
    SchedulerConfig config;
    config.listen = "127.0.0.1:0";
    config.push_interval_ms = 20;
    config.gc_interval_ms = 3600'000;  // tests run GC explicitly
    // Hosts in these tests announce no rates; without a prior they are scheduled without
    // capacity accounting, so the protocol tests see every good candidate. Tests of the prior
    // and of learned capacities set it.
    config.capacity_prior = 0;
    if (tweak) tweak(config);
    auto server = SchedulerServer::Start(config, registry_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Scheduler::NewStub(channel_);
  }

  void AnnounceHost(const std::string& id, v1::HostType type = v1::HOST_TYPE_NORMAL,
                    int grpc_port = 4000) {
    v1::AnnounceHostRequest req;
    v1::Host* h = req.mutable_host();
    h->set_id(id);
    h->set_hostname(id);
    h->set_ip("127.0.0.1");
    h->set_grpc_port(grpc_port);
    h->set_piece_port(4005);
    h->set_type(type);
    h->set_concurrent_upload_limit(16);
    grpc::ClientContext ctx;
    v1::AnnounceHostResponse resp;
    ASSERT_TRUE(stub_->AnnounceHost(&ctx, req, &resp).ok());
  }

  std::unique_ptr<PeerClient> Peer(const std::string& host_id, const std::string& peer_id,
                                   const std::string& task_name = "task-1") {
    return std::make_unique<PeerClient>(stub_.get(), host_id, peer_id, task_name);
  }

  Scheduler& scheduler() { return server_->scheduler(); }

  // Polls until `pred` holds or 5 s pass.
  static bool Eventually(const std::function<bool()>& pred) {
    for (int i = 0; i < 500; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return pred();
  }

  PeerState StateOf(const std::string& peer_id, const std::string& task_name = "task-1") {
    auto p = scheduler().GetPeer(Id(task_name), peer_id);
    return p ? p->state : PeerState::kPending;
  }

  prometheus::Registry registry_;
  std::unique_ptr<SchedulerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
};

using Strings = std::vector<std::string>;

TEST_F(SchedulerGrpcTest, FirstPeerGoesBackToSourceWhenThereIsNoSeedHost) {
  StartScheduler();
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  auto r = a->Next();
  ASSERT_TRUE(r && r->has_need_back_to_source()) << (r ? r->ShortDebugString() : "none");
  EXPECT_EQ(StateOf("peer-a"), PeerState::kBackToSource);
}

TEST_F(SchedulerGrpcTest, RegisterReturnsCandidateParentsWithTheirHosts) {
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  AnnounceHost("host-c");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  auto r = b->Next();
  ASSERT_TRUE(r && r->has_normal_task());
  ASSERT_EQ(r->normal_task().candidate_parents_size(), 1);
  const auto& parent = r->normal_task().candidate_parents(0);
  EXPECT_EQ(parent.peer_id(), "peer-a");
  EXPECT_EQ(parent.host().id(), "host-a");
  EXPECT_EQ(parent.host().ip(), "127.0.0.1");
  EXPECT_EQ(parent.host().piece_port(), 4005);
  EXPECT_FALSE(r->normal_task().has_task()) << "the size is not known yet";

  // Once a peer reports the size, later answers carry it.
  auto meta = a->Request();
  meta.mutable_task_metadata()->set_content_length(10 << 20);
  meta.mutable_task_metadata()->set_piece_length(1 << 20);  // the spec's rule for 10 MiB
  a->Send(meta);
  ASSERT_TRUE(Eventually([&] {
    auto s = scheduler().StatTask(Id("task-1"));
    return s.ok() && s->content_length() == (10 << 20);
  }));
  auto c = Peer("host-c", "peer-c");
  c->Register();
  auto rc = c->Next();
  ASSERT_TRUE(rc && rc->has_normal_task());
  EXPECT_EQ(rc->normal_task().candidate_parents_size(), 2);
  EXPECT_EQ(rc->normal_task().task().content_length(), 10 << 20);
  EXPECT_EQ(rc->normal_task().task().total_pieces(), 10u);  // 1 MiB pieces
  // The DAG: c downloads from a and b; b from a.
  EXPECT_EQ(scheduler().GetPeer(Id("task-1"), "peer-c")->parents, (Strings{"peer-a", "peer-b"}));
  EXPECT_EQ(scheduler().GetPeer(Id("task-1"), "peer-b")->parents, (Strings{"peer-a"}));
}

TEST_F(SchedulerGrpcTest, TriggersTheSeedOnceAndPushesParentsWhenItRegisters) {
  RecordingDaemon daemon;
  StartScheduler();
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED, daemon.port());
  AnnounceHost("host-a");
  AnnounceHost("host-b");

  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_EQ(daemon.WaitForTriggers(1), 1u);
  EXPECT_EQ(daemon.triggered()[0], Id("task-1"));
  EXPECT_EQ(daemon.urls()[0], "http://origin/task-1") << "the seed learns where to fetch from";
  EXPECT_FALSE(a->Next(200ms).has_value()) << "no candidate yet: the peer waits";

  // A second peer gets the waiting first one (it will pipeline from it), and no new trigger.
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));

  // The seed's dfdaemon registers its peer: it fetches from the origin, and both waiting peers
  // are pushed the seed (a running seed with no pieces yet is a good parent).
  auto seed = Peer("seed-host", "seed-peer");
  seed->Register();
  auto rs = seed->Next();
  ASSERT_TRUE(rs && rs->has_need_back_to_source());
  EXPECT_EQ(a->NextParents(), (Strings{"seed-peer"}));
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a", "seed-peer"}));

  // More peers of the same task do not trigger the seed again; another task does.
  auto c = Peer("host-a", "peer-c");
  c->Register();
  EXPECT_FALSE(c->NextParents().empty());
  auto other = Peer("host-b", "peer-x", "task-2");
  other->Register();
  EXPECT_EQ(daemon.WaitForTriggers(2), 2u);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(daemon.triggered(), (Strings{Id("task-1"), Id("task-2")}));
}

TEST_F(SchedulerGrpcTest, SeedPeerFetchesFromTheOriginOnlyWhileNoPeerSucceeded) {
  RecordingDaemon daemon;
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED, daemon.port());
  auto a = Peer("host-a", "peer-a", "task-9");
  a->Register();  // waits for the triggered seed
  auto seed = Peer("seed-host", "seed-1", "task-9");
  seed->Register();
  ASSERT_TRUE(seed->Next()->has_need_back_to_source());
  seed->ReportSize(10 << 20);
  seed->PieceFromOrigin(0);
  EXPECT_EQ(a->NextParents(), (Strings{"seed-1"}));
  a->Finished();
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-a", "task-9") == PeerState::kSucceeded; }));
  auto seed2 = Peer("seed-host", "seed-2", "task-9");
  seed2->Register();
  EXPECT_EQ(seed2->NextParents(), (Strings{"peer-a", "seed-1"}));
}

TEST_F(SchedulerGrpcTest, BackToSourceAfterScheduleTimeoutWhenTheSeedNeverComes) {
  RecordingDaemon daemon;  // accepts the trigger but never registers a seed peer
  StartScheduler([](SchedulerConfig& c) { c.schedule_timeout_ms = 300; });
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED, daemon.port());
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  const auto start = std::chrono::steady_clock::now();
  a->Register();
  auto r = a->Next(3s);
  ASSERT_TRUE(r && r->has_need_back_to_source()) << (r ? r->ShortDebugString() : "none");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms);
  EXPECT_EQ(daemon.WaitForTriggers(1), 1u);
}

TEST_F(SchedulerGrpcTest, UnreachableSeedHostFallsBackToSourceWithoutWaitingForTheTimeout) {
  // The seed host announces a port nobody listens on: every trigger fails fast.
  StartScheduler([](SchedulerConfig& c) { c.schedule_timeout_ms = 60'000; });
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED, 1);
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  auto r = a->Next(10s);
  ASSERT_TRUE(r && r->has_need_back_to_source()) << (r ? r->ShortDebugString() : "none");
}

TEST_F(SchedulerGrpcTest, BackToSourceIsLimitedPerTaskAndTheNextPeerGoesWhenOneFails) {
  StartScheduler();
  AnnounceHost("host-b");
  // peer-a's host never announced: it is accepted, but cannot be offered as a parent.
  auto a = Peer("unannounced-host", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_FALSE(b->Next(300ms).has_value()) << "limit 1 reached: b waits";
  auto failed = a->Request();
  failed.mutable_peer_failed()->set_reason("origin 500");
  a->Send(failed);
  auto r = b->Next();
  ASSERT_TRUE(r && r->has_need_back_to_source()) << (r ? r->ShortDebugString() : "none");
}

TEST_F(SchedulerGrpcTest, RescheduleNeverOffersBadParentsAgain) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c", "host-d"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Peer("host-c", "peer-c");
  c->Register();
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a", "peer-b"}));

  c->Reschedule({"peer-a"});
  EXPECT_EQ(c->NextParents(), (Strings{"peer-b"}));
  EXPECT_EQ(scheduler().GetPeer(Id("task-1"), "peer-c")->parents, (Strings{"peer-b"}));

  // A new peer appears: c (with fewer parents than the limit) is pushed it, still without a.
  auto d = Peer("host-d", "peer-d");
  d->Register();
  auto d_parents = d->NextParents();
  EXPECT_EQ(d_parents, (Strings{"peer-a", "peer-b", "peer-c"}));
  // d is c's child now, so c must not get d (no cycle): no push with d ever arrives.
  auto pushed = c->Next(300ms);
  if (pushed) {
    for (const auto& p : pushed->normal_task().candidate_parents()) {
      EXPECT_NE(p.peer_id(), "peer-a");
      EXPECT_NE(p.peer_id(), "peer-d");
    }
  }
}

TEST_F(SchedulerGrpcTest, PermanentPieceFailureMarksTheParentBad) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Peer("host-c", "peer-c");
  c->Register();
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a", "peer-b"}));
  auto failed = c->Request();
  failed.mutable_piece_failed()->set_parent_id("peer-a");
  failed.mutable_piece_failed()->set_temporary(false);
  c->Send(failed);
  c->Reschedule({});
  EXPECT_EQ(c->NextParents(), (Strings{"peer-b"}));
}

TEST_F(SchedulerGrpcTest, APeerThatLeavesIsNoLongerACandidate) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  EXPECT_TRUE(b->Close().ok()) << "closing without peer_finished";
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-b") == PeerState::kLeft; }));
  auto c = Peer("host-c", "peer-c");
  c->Register();
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a"}));

  // A finished peer closing its stream stays a parent: its dfdaemon keeps serving.
  c->Finished();
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-c") == PeerState::kSucceeded; }));
  EXPECT_TRUE(c->Close().ok());
  auto d = Peer("host-b", "peer-d");
  d->Register();
  EXPECT_EQ(d->NextParents(), (Strings{"peer-a", "peer-c"}));

  // GC drops the Left peer.
  scheduler().CollectGarbage();
  EXPECT_FALSE(scheduler().GetPeer(Id("task-1"), "peer-b").has_value());
  EXPECT_TRUE(scheduler().GetPeer(Id("task-1"), "peer-c").has_value());
}

TEST_F(SchedulerGrpcTest, ParentsThatLeaveAreReplacedByAPush) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  b->Finished();
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-b") == PeerState::kSucceeded; }));
  auto c = Peer("host-c", "peer-c");
  c->Register();
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a", "peer-b"}));
  a.reset();  // a's stream is cancelled: it leaves
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-a") == PeerState::kLeft; }));
  EXPECT_EQ(scheduler().GetPeer(Id("task-1"), "peer-c")->parents, (Strings{"peer-b"}));
}

TEST_F(SchedulerGrpcTest, LeaveHostMakesItsPeersLeft) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  grpc::ClientContext ctx;
  v1::LeaveHostRequest req;
  req.set_host_id("host-a");
  v1::LeaveHostResponse resp;
  ASSERT_TRUE(stub_->LeaveHost(&ctx, req, &resp).ok());
  EXPECT_EQ(StateOf("peer-a"), PeerState::kLeft);
  auto b = Peer("host-b", "peer-b");
  b->Register();
  auto r = b->Next();
  ASSERT_TRUE(r && r->has_need_back_to_source()) << "a is gone: b goes to the origin";
}

TEST_F(SchedulerGrpcTest, EmptyTaskIsAnsweredAsSuch) {
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  auto a = Peer("host-a", "peer-a", "empty-task");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  a->ReportSize(0);  // what the origin told the peer the scheduler sent there
  // The report travels on a's stream: b registers once the scheduler has it (in CI, b once
  // came first and got a as its parent).
  ASSERT_TRUE(Eventually([&] {
    auto s = scheduler().StatTask(Id("empty-task"));
    return s.ok() && s->content_length() == 0;
  }));
  auto b = Peer("host-b", "peer-b", "empty-task");
  b->Register();
  auto r = b->Next();
  ASSERT_TRUE(r && r->has_empty_task()) << (r ? r->ShortDebugString() : "none");
}

// Issue 14: one peer reporting size 0 (or registering with it) made later peers get EmptyTask,
// and a resumed peer then placed a partial file as a success.
TEST_F(SchedulerGrpcTest, OnlyAPeerSentToTheOriginTellsTheSize) {
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  AnnounceHost("host-c");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Peer("host-b", "peer-b");
  b->Register(/*content_length=*/0);  // a registrant's size is not believed
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  b->ReportSize(0);  // nor the size of a peer that was given parents
  b->Finished();
  auto c = Peer("host-c", "peer-c");
  c->Register();
  auto r = c->Next();
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->has_empty_task()) << r->ShortDebugString();
  EXPECT_EQ(scheduler().StatTask(Id("task-1"))->content_length(), -1);
}

TEST_F(SchedulerGrpcTest, ASizeThatDoesNotFitTheSpecIsIgnored) {
  StartScheduler();
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto bad = a->Request();
  bad.mutable_task_metadata()->set_content_length(10 << 20);
  bad.mutable_task_metadata()->set_piece_length(1);  // not the spec's rule (1 MiB)
  a->Send(bad);
  auto huge = a->Request();
  huge.mutable_task_metadata()->set_content_length(int64_t{1} << 62);  // far too many pieces
  a->Send(huge);
  a->ReportSize(10 << 20);
  ASSERT_TRUE(Eventually([&] {
    auto s = scheduler().StatTask(Id("task-1"));
    return s.ok() && s->content_length() == (10 << 20);
  }));
  EXPECT_EQ(scheduler().StatTask(Id("task-1"))->total_pieces(), 10u);
}

// Issue 14: the scheduler trusted the task id a peer sent, so the first registrant decided what
// the seed fetches under any id.
TEST_F(SchedulerGrpcTest, ARegisterWhoseIdIsNotItsSpecsIsRefused) {
  StartScheduler();
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a", "task-1");
  a->Register(-1, /*claimed_task_id=*/Id("task-2"));
  EXPECT_FALSE(a->Next(2s).has_value());
  EXPECT_EQ(a->Close().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(scheduler().StatTask(Id("task-2")).ok());
}

TEST_F(SchedulerGrpcTest, WithATokenEveryRpcMustCarryIt) {
  std::string path = ::testing::TempDir() + "/scheduler-token";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("0123456789abcdef-secret\n", f);
    std::fclose(f);
    ::chmod(path.c_str(), 0600);
  }
  StartScheduler([&](SchedulerConfig& c) { c.auth_token_file = path; });
  v1::AnnounceHostRequest req;
  req.mutable_host()->set_id("host-a");
  req.mutable_host()->set_ip("127.0.0.1");
  v1::AnnounceHostResponse resp;
  grpc::ClientContext anonymous;
  EXPECT_EQ(stub_->AnnounceHost(&anonymous, req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext wrong;
  wrong.AddMetadata("authorization", "Bearer 0123456789abcdef-secreT");
  EXPECT_EQ(stub_->AnnounceHost(&wrong, req, &resp).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext right;
  right.AddMetadata("authorization", "Bearer 0123456789abcdef-secret");
  EXPECT_TRUE(stub_->AnnounceHost(&right, req, &resp).ok());
  EXPECT_EQ(scheduler().host_count(), 1u);
  grpc::ClientContext stream_ctx;  // a stream without the token ends before its first read
  auto stream = stub_->AnnouncePeer(&stream_ctx);
  v1::AnnouncePeerRequest reg;
  reg.mutable_register_()->set_host_id("host-a");
  reg.mutable_register_()->set_peer_id("peer-a");
  reg.mutable_register_()->mutable_task()->set_task_id(Id("task-1"));
  reg.mutable_register_()->mutable_task()->set_url(UrlOf("task-1"));
  (void)stream->Write(reg);  // may already fail: the server may have ended the stream
  stream->WritesDone();
  v1::AnnouncePeerResponse answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_FALSE(scheduler().StatTask(Id("task-1")).ok());
  ::unlink(path.c_str());
}

// Issue 14: AnnounceHost/LeaveHost with any host id overwrote or evicted that host.
TEST_F(SchedulerGrpcTest, WithoutATokenAHostIsMovedOrRemovedOnlyFromItsOwnAddress) {
  StartScheduler();
  v1::AnnounceHostRequest req;
  req.mutable_host()->set_id("far-host");
  req.mutable_host()->set_ip("10.9.9.9");  // announced by someone who is not 10.9.9.9
  v1::AnnounceHostResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->AnnounceHost(&ctx, req, &resp).ok());
  }
  req.mutable_host()->set_ip("127.0.0.1");
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->AnnounceHost(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  v1::LeaveHostRequest leave;
  leave.set_host_id("far-host");
  v1::LeaveHostResponse left;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->LeaveHost(&ctx, leave, &left).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  AnnounceHost("host-a");  // ip 127.0.0.1, the caller's own: it may leave
  leave.set_host_id("host-a");
  grpc::ClientContext ctx;
  EXPECT_TRUE(stub_->LeaveHost(&ctx, leave, &left).ok());
}

TEST_F(SchedulerGrpcTest, AStreamThatDoesNotStartWithRegisterIsRejected) {
  StartScheduler();
  auto a = Peer("host-a", "peer-a");
  a->PieceFinished(0, "");
  EXPECT_FALSE(a->Next(2s).has_value());
  grpc::Status s = a->Close();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("register"), std::string::npos) << s.error_message();

  auto b = Peer("host-b", "");
  b->Register();
  EXPECT_EQ(b->Close().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SchedulerGrpcTest, PieceReportsBecomeBandwidthRecordsAndStats) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b"}) AnnounceHost(h);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  a->PieceFinished(0, "");  // from the origin: no pair record
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  b->PieceFinished(0, "peer-a");
  b->PieceFinished(1, "peer-a");
  b->PieceFinished(1, "peer-a");  // a duplicate counts once
  ASSERT_TRUE(Eventually([&] { return scheduler().records().record_count() == 3; }));
  EXPECT_EQ(scheduler().records().Pair("host-b", "host-a").size(), 3u);
  EXPECT_NEAR(scheduler().records().EstimateBytesPerSec("host-b", "host-a"), (4 << 20) / 0.02, 1);
  EXPECT_EQ(scheduler().GetPeer(Id("task-1"), "peer-b")->finished_pieces, 2u);

  grpc::ClientContext ctx;
  v1::StatTaskRequest req;
  req.set_task_id(Id("task-1"));
  v1::StatTaskResponse stat;
  ASSERT_TRUE(stub_->StatTask(&ctx, req, &stat).ok());
  EXPECT_EQ(stat.peer_count(), 2u);
  EXPECT_EQ(stat.finished_peer_count(), 0u);
  EXPECT_FALSE(stat.has_seed());

  grpc::ClientContext ctx2;
  req.set_task_id("no-such-task");
  EXPECT_EQ(stub_->StatTask(&ctx2, req, &stat).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(SchedulerGrpcTest, HostsThatStopAnnouncingAreCollected) {
  StartScheduler([](SchedulerConfig& c) { c.host_ttl_ms = 100; });
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  EXPECT_TRUE(a->Close().ok());
  std::this_thread::sleep_for(150ms);
  scheduler().CollectGarbage();
  EXPECT_FALSE(scheduler().GetPeer(Id("task-1"), "peer-a").has_value());
  EXPECT_EQ(scheduler().host_count(), 0u);
}

TEST_F(SchedulerGrpcTest, AnnounceHostWithoutIdIsInvalid) {
  StartScheduler();
  grpc::ClientContext ctx;
  v1::AnnounceHostRequest req;
  v1::AnnounceHostResponse resp;
  EXPECT_EQ(stub_->AnnounceHost(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SchedulerGrpcTest, OverTheHostAndTaskCapsNewOnesGetAClearErrorAndKnownOnesCarryOn) {
  StartScheduler([](SchedulerConfig& c) {
    c.max_hosts = 2;
    c.max_tasks = 1;
  });
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  {
    grpc::ClientContext ctx;
    v1::AnnounceHostRequest req;
    req.mutable_host()->set_id("host-c");
    req.mutable_host()->set_ip("127.0.0.1");
    v1::AnnounceHostResponse resp;
    EXPECT_EQ(stub_->AnnounceHost(&ctx, req, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  // Registering is the other way a host comes into being: it is capped too.
  auto c = Peer("host-c", "peer-c");
  c->Register();
  EXPECT_EQ(c->Close().error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(scheduler().host_count(), 2u);

  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next().has_value());
  auto b = Peer("host-b", "peer-b", "task-2");
  b->Register();
  EXPECT_EQ(b->Close().error_code(), grpc::StatusCode::UNAVAILABLE);
  // A known host on a known task is served as before.
  auto a2 = Peer("host-b", "peer-a2");
  a2->Register();
  EXPECT_TRUE(a2->Next().has_value());
}

TEST_F(SchedulerGrpcTest, MetricsCountRegistrationsAndDecisions) {
  StartScheduler();
  AnnounceHost("host-a");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto value = [&](const std::string& name, const std::string& label = "") {
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& m : family.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match = match || l.value == label;
        if (match)
          return family.type == prometheus::MetricType::Histogram
                     ? static_cast<double>(m.histogram.sample_count)
                     : m.counter.value;
      }
    }
    return -1.0;
  };
  EXPECT_EQ(value("df_scheduler_registered_peers_total"), 1);
  EXPECT_EQ(value("df_scheduler_back_to_source_total", "no_seed"), 1);
  // Observed just after the decision is sent.
  EXPECT_TRUE(Eventually([&] { return value("df_scheduler_schedule_latency_seconds") == 1; }));
  EXPECT_EQ(value("df_scheduler_host_announces_total"), 1);
  EXPECT_EQ(value("df_scheduler_peer_announces_total", "register"), 1);
}

// Capacity accounting: with announced link rates a child gets parents until their free upload
// adds up to its download rate. On equal links that is a pipeline chain, the optimal DAG.
class SchedulerCapacityTest : public SchedulerGrpcTest {
 protected:
  // A peer of `host` that has sent its register message.
  auto Registered(const std::string& host, const std::string& peer) {
    auto p = Peer(host, peer);
    p->Register();
    return p;
  }

  void AnnounceRates(const std::string& id, uint64_t up, uint64_t down, const std::string& idc = "",
                     bool seed = false) {
    v1::AnnounceHostRequest req;
    v1::Host* h = req.mutable_host();
    h->set_id(id);
    h->set_idc(idc);
    if (seed) h->set_type(v1::HOST_TYPE_SEED);
    h->set_hostname(id);
    h->set_ip("127.0.0.1");
    h->set_grpc_port(4000);
    h->set_piece_port(4005);
    h->set_upload_rate_limit_bytes_per_sec(up);
    h->set_download_rate_limit_bytes_per_sec(down);
    grpc::ClientContext ctx;
    v1::AnnounceHostResponse resp;
    ASSERT_TRUE(stub_->AnnounceHost(&ctx, req, &resp).ok());
  }

  // A mesh scheduler and its seed host "seed-host" (uplink 200), whose peer "peer-seed" has
  // registered and was sent to the origin.
  std::unique_ptr<PeerClient> StartMeshWithSeed(uint32_t seed_children, uint32_t parent_limit) {
    StartScheduler([&](SchedulerConfig& c) {
      c.parent_graph = "mesh";
      c.mesh_seed_children = seed_children;
      c.candidate_parent_limit = parent_limit;
    });
    AnnounceRates("seed-host", 200, 200, "", /*seed=*/true);
    auto s = Registered("seed-host", "peer-seed");
    auto r = s->Next();
    EXPECT_TRUE(r && r->has_need_back_to_source());
    return s;
  }

  // After StartMeshWithSeed: a thin peer (uplink 10) registers and gets the seed, nobody else
  // being there; then a wide one (uplink 200) gets the seed and the thin peer.
  std::pair<std::unique_ptr<PeerClient>, std::unique_ptr<PeerClient>> RegisterThinThenWide() {
    AnnounceRates("thin", 10, 200);
    AnnounceRates("wide", 200, 200);
    auto thin = Registered("thin", "peer-thin");
    EXPECT_EQ(thin->NextParents(), (Strings{"peer-seed"})) << "nobody else can serve it";
    auto wide = Registered("wide", "peer-wide");
    EXPECT_EQ(wide->NextParents(), (Strings{"peer-seed", "peer-thin"}));
    return {std::move(thin), std::move(wide)};
  }
};

TEST_F(SchedulerCapacityTest, EqualLinksBuildAChain) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c", "host-d"}) AnnounceRates(h, 100, 100);
  auto a = Registered("host-a", "peer-a");
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Registered("host-b", "peer-b");
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Registered("host-c", "peer-c");
  EXPECT_EQ(c->NextParents(), (Strings{"peer-b"})) << "peer-a's upload is taken by peer-b";
  auto d = Registered("host-d", "peer-d");
  EXPECT_EQ(d->NextParents(), (Strings{"peer-c"}));
}

TEST_F(SchedulerCapacityTest, AFastUplinkFeedsSeveralChildrenAndSlowOnesAddUp) {
  StartScheduler();
  AnnounceRates("fast", 300, 100);
  for (const char* h : {"c1", "c2", "c3"}) AnnounceRates(h, 50, 100);
  AnnounceRates("c4", 50, 100);
  auto f = Registered("fast", "peer-fast");
  ASSERT_TRUE(f->Next()->has_need_back_to_source());
  auto c1 = Registered("c1", "peer-c1");
  EXPECT_EQ(c1->NextParents(), (Strings{"peer-fast"}));
  auto c2 = Registered("c2", "peer-c2");
  EXPECT_EQ(c2->NextParents(), (Strings{"peer-fast"}));
  auto c3 = Registered("c3", "peer-c3");
  EXPECT_EQ(c3->NextParents(), (Strings{"peer-fast"}));
  // The fast uplink is fully booked (3 x 100); two 50-uplinks together carry the next child.
  auto c4 = Registered("c4", "peer-c4");
  auto parents = c4->NextParents();
  EXPECT_EQ(parents.size(), 2u);
  EXPECT_EQ(std::count(parents.begin(), parents.end(), "peer-fast"), 0);
}

// Racks: the first peer of an IDC takes a parent from another IDC; the next ones stay inside
// their IDC even when its peers are fully booked; and an IDC that already serves a child outside
// is not asked again: the third IDC chains off the second instead of sharing the first's link.
TEST_F(SchedulerCapacityTest, IdcsAreEnteredOnceAndChained) {
  StartScheduler();
  AnnounceRates("a1", 100, 100, "rack-a");
  AnnounceRates("a2", 100, 100, "rack-a");
  AnnounceRates("b1", 100, 100, "rack-b");
  AnnounceRates("b2", 100, 100, "rack-b");
  AnnounceRates("c1", 100, 100, "rack-c");
  auto a1 = Registered("a1", "peer-a1");
  ASSERT_TRUE(a1->Next()->has_need_back_to_source());
  auto a2 = Registered("a2", "peer-a2");
  EXPECT_EQ(a2->NextParents(), (Strings{"peer-a1"}));
  auto b1 = Registered("b1", "peer-b1");
  Strings b1_parents = b1->NextParents();
  ASSERT_EQ(b1_parents.size(), 1u);
  EXPECT_TRUE(b1_parents[0] == "peer-a1" || b1_parents[0] == "peer-a2") << b1_parents[0];
  auto b2 = Registered("b2", "peer-b2");
  EXPECT_EQ(b2->NextParents(), (Strings{"peer-b1"}));
  auto c1 = Registered("c1", "peer-c1");
  EXPECT_EQ(c1->NextParents(), (Strings{"peer-b2"})) << "rack-a already serves rack-b";
}

// Uplinks thinner than downlinks: each child books the cluster's fair share of upload (here
// (100 + 10 + 10) / 3 = 40), not its whole downlink, so the first child does not take the whole
// parent and the second one still gets a share of it, whatever order they registered in.
TEST_F(SchedulerCapacityTest, ThinUplinksAreSharedFairlyNotByArrivalOrder) {
  StartScheduler();
  AnnounceRates("wide", 100, 100);
  AnnounceRates("thin1", 10, 100);
  AnnounceRates("thin2", 10, 100);
  auto w = Registered("wide", "peer-wide");
  ASSERT_TRUE(w->Next()->has_need_back_to_source());
  auto t1 = Registered("thin1", "peer-thin1");
  EXPECT_EQ(t1->NextParents(), (Strings{"peer-wide"}));
  auto t2 = Registered("thin2", "peer-thin2");
  EXPECT_EQ(t2->NextParents(), (Strings{"peer-wide"}))
      << "40 of peer-wide's 100 are booked: 60 are free for the second child";
}

// A child that cannot pass the seed's data on at the rate it books (uplink 10 for a booking of
// 200) registers first, but the seed goes to the wide child that registers after it; the weak
// one gets a parent only after weak_child_seed_delay, and then the wide child, not the seed.
TEST_F(SchedulerCapacityTest, AWeakChildLeavesTheSeedToAWideOneThatCameLater) {
  StartScheduler([](SchedulerConfig& c) { c.weak_child_seed_delay_ms = 500; });
  AnnounceRates("seed-host", 200, 200, "", /*seed=*/true);
  AnnounceRates("wide", 200, 200);
  AnnounceRates("weak", 10, 200);
  auto s = Registered("seed-host", "peer-seed");
  ASSERT_TRUE(s->Next()->has_need_back_to_source());
  auto weak = Registered("weak", "peer-weak");
  EXPECT_FALSE(weak->Next(200ms).has_value()) << "the seed is withheld from a weak child";
  auto wide = Registered("wide", "peer-wide");
  EXPECT_EQ(wide->NextParents(), (Strings{"peer-seed"}));
  EXPECT_EQ(weak->NextParents(2s), (Strings{"peer-wide"}));
}

// parent_graph mesh: peers serve each other both ways, and nothing is booked. With equal links
// the DAG gives each child one parent (a chain, EqualLinksBuildAChain); a mesh gives each child
// every other peer up to candidate_parent_limit, and an earlier child is pushed the later ones
// as parents too, although they are its descendants.
TEST_F(SchedulerCapacityTest, AMeshLetsPeersServeEachOther) {
  StartScheduler([](SchedulerConfig& c) {
    c.parent_graph = "mesh";
    c.candidate_parent_limit = 2;
  });
  for (const char* h : {"host-a", "host-b", "host-c", "host-d"}) AnnounceRates(h, 100, 100);
  auto a = Registered("host-a", "peer-a");
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Registered("host-b", "peer-b");
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Registered("host-c", "peer-c");
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a", "peer-b"})) << "no booking: both serve it";
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a", "peer-c"})) << "its own child serves it too";
  // Both are at the limit now: a later peer changes nothing for them, and is a parent of none.
  auto d = Registered("host-d", "peer-d");
  EXPECT_EQ(d->NextParents().size(), 2u);
  EXPECT_FALSE(b->Next(300ms).has_value());
  EXPECT_FALSE(c->Next(100ms).has_value());
}

// A mesh's seed is a parent only of the task's mesh_seed_children widest uplinks (here 1): the
// thin peer gets it while nobody else can serve it, then loses it to a wide peer that registers
// later and takes the wide peer instead.
TEST_F(SchedulerCapacityTest, AMeshSeedServesOnlyTheWidestUplinks) {
  auto s = StartMeshWithSeed(1, 4);
  auto [thin, wide] = RegisterThinThenWide();
  // It may first be pushed the wide peer beside the seed (if that decision came before the wide
  // peer ran); within a capacity refresh the seed is taken away, explicitly (removed_parent_ids),
  // since a peer keeps the parents it has.
  Strings got, removed;
  for (int i = 0; i < 2 && removed.empty(); ++i) {
    auto r = thin->Next(2s);
    ASSERT_TRUE(r.has_value() && r->has_normal_task()) << "no push for the thin peer";
    got.clear();
    for (const auto& c : r->normal_task().candidate_parents()) got.push_back(c.peer_id());
    for (const auto& id : r->normal_task().removed_parent_ids()) removed.push_back(id);
  }
  EXPECT_EQ(got, (Strings{"peer-wide"})) << "the seed moved to the wide uplink";
  EXPECT_EQ(removed, (Strings{"peer-seed"}));
  EXPECT_FALSE(wide->Next(500ms).has_value()) << "its parents stay";
}

// A child that becomes the widest uplink while its parent slots are full still gets the seed: the
// seed goes before its current parents (without that, a mesh with candidate_parent_limit below
// the swarm's size lost its seed children, and the seed went idle).
TEST_F(SchedulerCapacityTest, AMeshSeedGoesBeforeCurrentParentsOfAFullChild) {
  auto s = StartMeshWithSeed(1, 1);
  AnnounceRates("first", 100, 200);
  AnnounceRates("second", 50, 200);
  auto first = Registered("first", "peer-first");
  EXPECT_EQ(first->NextParents(), (Strings{"peer-seed"}));
  auto second = Registered("second", "peer-second");
  EXPECT_EQ(second->NextParents(), (Strings{"peer-first"})) << "the narrower uplink";
  AnnounceRates("second", 400, 200);  // now the widest
  EXPECT_EQ(second->NextParents(2s), (Strings{"peer-seed"}));
  EXPECT_EQ(first->NextParents(2s), (Strings{"peer-second"}));
}

// Once peers other than the seed hold every piece between them, what the seed sends is no longer
// new to the swarm: it serves any child (the tail), and those without it are offered it.
TEST_F(SchedulerCapacityTest, AMeshSeedServesAnyChildOnceThePeersHoldEveryPiece) {
  auto s = StartMeshWithSeed(1, 4);
  AnnounceRates("wide", 200, 200);
  AnnounceRates("thin", 10, 200);
  auto meta = s->Request();
  meta.mutable_task_metadata()->set_content_length(4 << 20);
  meta.mutable_task_metadata()->set_piece_length(1 << 20);
  s->Send(meta);
  ASSERT_TRUE(Eventually([&] {
    auto st = scheduler().StatTask(Id("task-1"));
    return st.ok() && st->content_length() == (4 << 20);
  }));
  auto wide = Registered("wide", "peer-wide");
  EXPECT_EQ(wide->NextParents(), (Strings{"peer-seed"}));
  auto thin = Registered("thin", "peer-thin");
  EXPECT_EQ(thin->NextParents(), (Strings{"peer-wide"}));
  for (uint32_t i = 0; i < 3; ++i) wide->PieceFinished(i, "peer-seed");
  EXPECT_FALSE(thin->Next(500ms).has_value()) << "piece 3 is still only at the seed";
  wide->PieceFinished(3, "peer-seed");
  EXPECT_EQ(thin->NextParents(2s), (Strings{"peer-seed", "peer-wide"}));
}

// With mesh_seed_children 0 every child may take the seed, as before.
TEST_F(SchedulerCapacityTest, AMeshSeedServesAnyChildWithoutALimit) {
  auto s = StartMeshWithSeed(0, 4);
  auto [thin, wide] = RegisterThinThenWide();
  EXPECT_EQ(thin->NextParents(2s), (Strings{"peer-seed", "peer-wide"})) << "keeps the seed";
}

// rack-a has a wide uplink and serves rack-b; rack-b's only peer has almost no uplink. With the
// default limit rack-c must still chain off rack-b (its link is the one to spare); with the
// limit off it takes rack-a's free upload.
class SchedulerIdcLimitTest : public SchedulerCapacityTest {
 protected:
  Strings ParentsOfThirdRack(uint32_t limit) {
    StartScheduler([limit](SchedulerConfig& c) { c.cross_idc_children_limit = limit; });
    AnnounceRates("a1", 300, 100, "rack-a");
    AnnounceRates("b1", 1, 100, "rack-b");
    AnnounceRates("c1", 100, 100, "rack-c");
    auto a1 = Registered("a1", "peer-a1");
    EXPECT_TRUE(a1->Next()->has_need_back_to_source());
    auto b1 = Registered("b1", "peer-b1");
    EXPECT_EQ(b1->NextParents(), (Strings{"peer-a1"}));
    auto c1 = Registered("c1", "peer-c1");
    return c1->NextParents();
  }
};

TEST_F(SchedulerIdcLimitTest, AnIdcServesOneChildOutsideByDefault) {
  EXPECT_EQ(ParentsOfThirdRack(1), (Strings{"peer-b1"}));
}

TEST_F(SchedulerIdcLimitTest, LimitZeroLetsOneIdcServeEveryOther) {
  EXPECT_EQ(ParentsOfThirdRack(0), (Strings{"peer-a1"}));
}

TEST_F(SchedulerCapacityTest, WithoutRatesThePriorBuildsAChainAsEqualLinksDo) {
  StartScheduler([](SchedulerConfig& c) { c.capacity_prior = 12'500'000; });
  for (const char* h : {"host-a", "host-b", "host-c", "host-d"}) AnnounceRates(h, 0, 0);
  auto a = Registered("host-a", "peer-a");
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Registered("host-b", "peer-b");
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Registered("host-c", "peer-c");
  EXPECT_EQ(c->NextParents(), (Strings{"peer-b"}));
  auto d = Registered("host-d", "peer-d");
  EXPECT_EQ(d->NextParents(), (Strings{"peer-c"}));
  auto cap = scheduler().GetHostCapacity("host-a");
  ASSERT_TRUE(cap.has_value());
  EXPECT_EQ(cap->upload, 12'500'000u);
}

TEST_F(SchedulerCapacityTest, PieceRecordsLowerTheAssumedUploadOfAFullyBookedSlowHost) {
  StartScheduler([](SchedulerConfig& c) { c.capacity_prior = 12'500'000; });
  for (const char* h : {"host-a", "host-b"}) AnnounceRates(h, 0, 0);
  auto a = Registered("host-a", "peer-a");
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Registered("host-b", "peer-b");
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  ASSERT_EQ(scheduler().GetHostCapacity("host-a")->booked, 12'500'000u);
  // peer-b reports 100 KiB pieces from peer-a back to back at 2.5 MB/s, paced as a real
  // transfer would report them (the scheduler times records by their arrival): a fifth of the
  // prior, from a host booked in full.
  const auto step = std::chrono::nanoseconds(40'960'000);  // 100 KiB at 2.5 MB/s
  auto next = std::chrono::steady_clock::now();
  bool lowered = false;
  for (uint32_t i = 0; i < 150 && !lowered; ++i) {
    next += step;
    std::this_thread::sleep_until(next);
    auto r = b->Request();
    auto* p = r.mutable_piece_finished();
    p->set_piece_number(i);
    p->set_parent_id("peer-a");
    p->set_length(102'400);
    p->set_cost_ns(static_cast<uint64_t>(step.count()));
    b->Send(r);
    scheduler().RefreshCapacities(std::chrono::steady_clock::now());
    lowered = scheduler().GetHostCapacity("host-a")->upload < 5'000'000;
  }
  auto cap = scheduler().GetHostCapacity("host-a");
  EXPECT_TRUE(lowered) << "upload of host-a still " << cap->upload;
  EXPECT_NEAR(static_cast<double>(cap->learned.upload_active), 2.5e6, 0.5e6);
  // The child's booking shrank with it, so it is hungry for the difference.
  EXPECT_LE(cap->booked, cap->upload);
  // The child's download is not lowered by what a slow parent gave it.
  EXPECT_EQ(scheduler().GetHostCapacity("host-b")->download, 12'500'000u);

  // The lowering stays when the bookings that proved it go: the child leaves (on the rig its
  // children moved to hosts that looked free), and the evidence of the records still holds.
  // Before, host-a then looked free again at the prior, took children, was lowered again, and
  // so on every 250 ms refresh.
  b->Close();
  ASSERT_TRUE(Eventually([&] { return scheduler().GetHostCapacity("host-a")->booked == 0; }));
  for (int i = 0; i < 3; ++i) {
    scheduler().RefreshCapacities(std::chrono::steady_clock::now());
    EXPECT_LT(scheduler().GetHostCapacity("host-a")->upload, 5'000'000u) << "refresh " << i;
  }
}

TEST_F(SchedulerCapacityTest, WithoutRatesOrPriorEveryGoodCandidateIsOffered) {
  StartScheduler();
  for (const char* h : {"host-a", "host-b", "host-c"}) AnnounceRates(h, 0, 0);
  auto a = Registered("host-a", "peer-a");
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  auto b = Registered("host-b", "peer-b");
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto c = Registered("host-c", "peer-c");
  EXPECT_EQ(c->NextParents(), (Strings{"peer-a", "peer-b"}));
}

}  // namespace
}  // namespace df::scheduler

namespace df::scheduler {
namespace {

// Issue 14: any peer saying it finished made a seed take parents instead of the origin, so a
// liar that "finished" first became the seed's only source.
TEST_F(SchedulerGrpcTest, APeerClaimingToHaveFinishedDoesNotKeepTheSeedFromTheOrigin) {
  RecordingDaemon daemon;
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED, daemon.port());
  auto liar = Peer("host-a", "liar");
  liar->Register();
  liar->Finished();
  ASSERT_TRUE(Eventually([&] { return StateOf("liar") == PeerState::kSucceeded; }));
  auto seed = Peer("seed-host", "seed-1");
  seed->Register();
  auto r = seed->Next();
  ASSERT_TRUE(r && r->has_need_back_to_source()) << (r ? r->ShortDebugString() : "none");
}

// Children get the digests the seed reported, and learn whether missing ones will come.
TEST_F(SchedulerGrpcTest, PieceDigestsComeFromTheOriginFetcherOnly) {
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  a->ReportSize(10 << 20);
  a->PieceFromOrigin(1);
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  b->PieceFromOrigin(0);  // b was given parents: its "origin" digests are not believed
  auto r = b->AskDigests(0, 100);
  ASSERT_TRUE(r.has_value());
  const auto& d = r->piece_digests();
  EXPECT_FALSE(d.expected()) << "no seed peer: a back-to-source peer may never fetch the rest";
  ASSERT_EQ(d.sha256_size(), 2) << "up to the last known digest, within the task";
  EXPECT_EQ(d.sha256(0), "");
  EXPECT_EQ(d.sha256(1), std::string(32, 'b'));
}

// A seed's first pieces can finish before its task metadata reaches the scheduler: their digests
// are kept (those past the end are dropped once the size is known). Found by the learning loop
// test, whose scheduler logged "malformed piece digest ignored ... piece=0" on every task.
TEST_F(SchedulerGrpcTest, DigestsReportedBeforeTheSizeAreKept) {
  StartScheduler();
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  a->PieceFromOrigin(0);   // before any size
  a->PieceFromOrigin(40);  // past the end it will have (10 MiB is at most 10 pieces)
  a->ReportSize(10 << 20);
  a->PieceFromOrigin(1);
  auto b = Peer("host-b", "peer-b");
  b->Register();
  EXPECT_EQ(b->NextParents(), (Strings{"peer-a"}));
  auto r = b->AskDigests(0, 100);
  ASSERT_TRUE(r.has_value());
  const auto& d = r->piece_digests();
  ASSERT_EQ(d.sha256_size(), 2) << "pieces 0 and 1; 40 is past the end";
  EXPECT_EQ(d.sha256(0), std::string(32, 'a'));
  EXPECT_EQ(d.sha256(1), std::string(32, 'b'));
}

// Found by fuzz_scheduler: a peer was counted by its host's type at each state change, so a host
// that announced another type while its peer ran left the task's counts wrong for good: a seed
// for ever (later peers wait for it instead of going to the origin), or a count below zero.
TEST_F(SchedulerGrpcTest, AHostChangingTypeLeavesNoSeedBehind) {
  StartScheduler();
  AnnounceHost("host-a", v1::HOST_TYPE_SEED);
  auto a = Peer("host-a", "peer-a");
  a->Register();
  ASSERT_TRUE(a->Next()->has_need_back_to_source());
  EXPECT_TRUE(scheduler().StatTask(Id("task-1"))->has_seed());
  AnnounceHost("host-a", v1::HOST_TYPE_NORMAL);
  EXPECT_TRUE(a->Close().ok());
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-a") == PeerState::kLeft; }));
  EXPECT_FALSE(scheduler().StatTask(Id("task-1"))->has_seed());

  // The other way round: a normal peer sent to the origin, then its host becomes a seed.
  AnnounceHost("host-b");
  auto b = Peer("host-b", "peer-b", "task-2");
  b->Register();
  ASSERT_TRUE(b->Next()->has_need_back_to_source());
  AnnounceHost("host-b", v1::HOST_TYPE_SEED, 1);
  EXPECT_TRUE(b->Close().ok());
  ASSERT_TRUE(Eventually([&] { return StateOf("peer-b", "task-2") == PeerState::kLeft; }));
  EXPECT_FALSE(scheduler().StatTask(Id("task-2"))->has_seed());
}

}  // namespace
}  // namespace df::scheduler
