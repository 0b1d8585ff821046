// The Scheduler's timers on an injected ManualClock: schedule timeouts and TTLs move only when the
// test advances the clock, and the background round is run by the test (RunBackgroundRound),
// so nothing here sleeps. The Scheduler is driven through its public API, without gRPC.
//
// Each test first advances the clock by a day: a timer that read the real steady clock instead
// of the injected one would then see a peer or host a day old, and fire too early.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/ids.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;

constexpr char kUrl[] = "http://origin/task-1";

// Records what the scheduler sends to one peer.
class RecordingStream final : public PeerStream {
 public:
  bool Send(const v1::AnnouncePeerResponse& response) override {
    std::lock_guard lock(mu_);
    sent_.push_back(response);
    return true;
  }
  std::vector<v1::AnnouncePeerResponse> sent() const {
    std::lock_guard lock(mu_);
    return sent_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<v1::AnnouncePeerResponse> sent_;
};

// A seed host that accepts every trigger and never registers its seed peer.
class SilentSeedTrigger final : public SeedTrigger {
 public:
  void Trigger(const v1::Host&, const v1::TaskInfo&, DoneCallback) override {}
};

class SchedulerClockTest : public ::testing::Test {
 protected:
  void StartScheduler(SchedulerConfig config, std::unique_ptr<SeedTrigger> seed_trigger,
                      std::unique_ptr<Evaluator> evaluator = nullptr) {
    clock_.Advance(24h);
    if (!evaluator) evaluator = NewEvaluator("default").value();
    scheduler_ = std::make_unique<Scheduler>(std::move(config), std::move(evaluator),
                                             std::move(seed_trigger), &metrics_, nullptr, &clock_);
  }

  void AnnounceHost(const std::string& id, v1::HostType type = v1::HOST_TYPE_NORMAL,
                    uint64_t upload = 0, uint64_t download = 0) {
    v1::Host host;
    host.set_upload_rate_limit_bytes_per_sec(upload);
    host.set_download_rate_limit_bytes_per_sec(download);
    host.set_id(id);
    host.set_ip("127.0.0.1");
    host.set_grpc_port(4000);
    host.set_piece_port(4005);
    host.set_type(type);
    ASSERT_TRUE(scheduler_->AnnounceHost(host).ok());
  }

  v1::AnnouncePeerRequest Request(const std::string& host_id, const std::string& peer_id) const {
    v1::AnnouncePeerRequest r;
    r.set_host_id(host_id);
    r.set_peer_id(peer_id);
    r.set_task_id(task_id_);
    return r;
  }

  PeerKey Register(const std::string& host_id, const std::string& peer_id,
                   std::shared_ptr<PeerStream> stream) {
    v1::AnnouncePeerRequest r = Request(host_id, peer_id);
    v1::RegisterPeerRequest* reg = r.mutable_register_();
    reg->set_host_id(host_id);
    reg->set_peer_id(peer_id);
    reg->mutable_task()->set_task_id(task_id_);
    reg->mutable_task()->set_url(kUrl);
    auto key = scheduler_->RegisterPeer(r, std::move(stream));
    EXPECT_TRUE(key.ok()) << key.status().ToString();
    return key.ok() ? key.value() : PeerKey{};
  }

  PeerState StateOf(const std::string& peer_id) {
    auto p = scheduler_->GetPeer(task_id_, peer_id);
    return p ? p->state : PeerState::kPending;
  }

  const std::string task_id_ = TaskId(TaskIdInput{kUrl, "", "", 0, {}});
  ManualClock clock_;
  prometheus::Registry registry_;
  SchedulerMetrics metrics_{registry_};
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerClockTest, AWaitingPeerGoesBackToSourceOnlyAfterTheScheduleTimeout) {
  SchedulerConfig config;
  config.schedule_timeout_ms = 10'000;
  config.gc_interval_ms = 7 * 24 * 3600'000ull;  // no GC in this test
  StartScheduler(config, std::make_unique<SilentSeedTrigger>());
  AnnounceHost("seed-host", v1::HOST_TYPE_SEED);
  AnnounceHost("host-a");
  auto stream = std::make_shared<RecordingStream>();
  Register("host-a", "peer-a", stream);
  // The seed was triggered and has not registered: no parent, so the peer waits.
  EXPECT_TRUE(stream->sent().empty());
  EXPECT_EQ(StateOf("peer-a"), PeerState::kRunning);

  clock_.Advance(9'900ms);
  scheduler_->RunBackgroundRound();
  EXPECT_TRUE(stream->sent().empty());
  EXPECT_EQ(StateOf("peer-a"), PeerState::kRunning);

  clock_.Advance(200ms);
  scheduler_->RunBackgroundRound();
  const auto sent = stream->sent();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].has_need_back_to_source()) << sent[0].ShortDebugString();
  EXPECT_EQ(StateOf("peer-a"), PeerState::kBackToSource);
}

TEST_F(SchedulerClockTest, PeersAndHostsAreCollectedOnlyAfterTheirTtl) {
  SchedulerConfig config;
  config.peer_ttl_ms = 60'000;
  config.host_ttl_ms = 120'000;
  config.gc_interval_ms = 7 * 24 * 3600'000ull;  // GC runs when the test calls it
  StartScheduler(config, nullptr);
  AnnounceHost("host-a");
  auto stream = std::make_shared<RecordingStream>();
  const PeerKey key = Register("host-a", "peer-a", stream);
  ASSERT_EQ(StateOf("peer-a"), PeerState::kBackToSource);  // no seed host: the origin at once
  v1::AnnouncePeerRequest finished = Request("host-a", "peer-a");
  finished.mutable_peer_finished()->set_content_length(100 << 20);
  ASSERT_TRUE(scheduler_->HandlePeerMessage(key, finished).ok());
  // A succeeded peer whose stream closed stays a parent until it has been idle for peer_ttl.
  scheduler_->StreamClosed(key, stream.get());
  ASSERT_EQ(StateOf("peer-a"), PeerState::kSucceeded);

  clock_.Advance(59s);
  scheduler_->CollectGarbage();
  EXPECT_TRUE(scheduler_->GetPeer(task_id_, "peer-a").has_value());

  clock_.Advance(2s);  // 61 s idle: the peer goes; its host was seen 61 s ago and stays
  scheduler_->CollectGarbage();
  EXPECT_FALSE(scheduler_->GetPeer(task_id_, "peer-a").has_value());
  EXPECT_EQ(scheduler_->host_count(), 1u);

  clock_.Advance(60s);  // 121 s since the host was last seen
  scheduler_->CollectGarbage();
  EXPECT_EQ(scheduler_->host_count(), 0u);
}

// The default evaluator's ranking plus a fixed bandwidth estimate per parent host, as the ml
// evaluator gives once its predictions are in (ml_evaluator.h).
class EstimatingEvaluator final : public Evaluator {
 public:
  explicit EstimatingEvaluator(std::map<std::string, double> estimates)
      : estimates_(std::move(estimates)) {}
  std::string_view name() const override { return "estimating"; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override {
    auto ranked = default_->Evaluate(child, candidates, task);
    for (auto& r : ranked) {
      auto it = estimates_.find(candidates[r.index].host_id);
      if (it != estimates_.end()) r.predicted_bytes_per_sec = it->second;
    }
    return ranked;
  }

 private:
  std::unique_ptr<Evaluator> default_ = NewEvaluator("default").value();
  std::map<std::string, double> estimates_;
};

// A seed host that never announced a rate books at the 1 Gbit/s prior; with an estimate of the
// edge, the child books what the estimate says instead.
TEST_F(SchedulerClockTest, APredictedEdgeBandwidthCapsTheBookingOnAHostWithoutEvidence) {
  for (bool announced : {false, true}) {
    SCOPED_TRACE(announced ? "seed announced its uplink" : "seed announced nothing");
    SchedulerConfig config;
    config.gc_interval_ms = 7 * 24 * 3600'000ull;
    StartScheduler(
        config, std::make_unique<SilentSeedTrigger>(),
        std::make_unique<EstimatingEvaluator>(std::map<std::string, double>{{"seed-host", 20e6}}));
    AnnounceHost("seed-host", v1::HOST_TYPE_SEED, announced ? 125'000'000 : 0);
    AnnounceHost("host-a", v1::HOST_TYPE_NORMAL, 0, 100'000'000);
    Register("seed-host", "seed-peer", std::make_shared<RecordingStream>());
    auto stream = std::make_shared<RecordingStream>();
    Register("host-a", "peer-a", stream);
    ASSERT_FALSE(stream->sent().empty());
    ASSERT_TRUE(stream->sent().back().has_normal_task())
        << stream->sent().back().ShortDebugString();
    auto seed = scheduler_->GetHostCapacity("seed-host");
    ASSERT_TRUE(seed.has_value());
    // No evidence: the estimate (20 MB/s) is booked. Announced: the announcement is evidence,
    // and the child books its whole 100 MB/s downlink on the 125 MB/s uplink.
    EXPECT_EQ(seed->booked, announced ? 100'000'000u : 20'000'000u);
    scheduler_.reset();
  }
}

// The default evaluator's ranking plus the host groups it publishes, as the ml evaluator does
// once it has grouped its predictions (host_groups.h).
class GroupingEvaluator final : public Evaluator {
 public:
  std::string_view name() const override { return "grouping"; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override {
    return default_->Evaluate(child, candidates, task);
  }
  std::shared_ptr<const InferredGroups> inferred_groups() const override {
    std::lock_guard lock(mu_);
    return groups_;
  }
  void Publish(std::unordered_map<std::string, std::string> group_of) {
    auto next = std::make_shared<InferredGroups>();
    std::lock_guard lock(mu_);
    next->version = groups_ ? groups_->version + 1 : 1;
    next->group_of = std::move(group_of);
    groups_ = std::move(next);
  }

 private:
  std::unique_ptr<Evaluator> default_ = NewEvaluator("default").value();
  mutable std::mutex mu_;
  std::shared_ptr<const InferredGroups> groups_;
};

std::vector<std::string> LastParents(const RecordingStream& stream) {
  std::vector<std::string> ids;
  const auto sent = stream.sent();
  if (sent.empty() || !sent.back().has_normal_task()) return ids;
  for (const auto& c : sent.back().normal_task().candidate_parents()) ids.push_back(c.peer_id());
  std::sort(ids.begin(), ids.end());
  return ids;
}

// Nobody announces an idc. Once the evaluator publishes groups (racks a, b, c), they stand in
// for the idc: a child takes parents of its own group, and a group that already serves a child
// outside is not asked again, counting the edges made before the groups were known.
TEST_F(SchedulerClockTest, InferredGroupsStandInForIdcsThatNobodyAnnounced) {
  SchedulerConfig config;
  config.gc_interval_ms = 7 * 24 * 3600'000ull;
  config.capacity_prior = 0;  // no booking: a child gets every eligible parent
  auto owned = std::make_unique<GroupingEvaluator>();
  GroupingEvaluator* evaluator = owned.get();
  StartScheduler(config, nullptr, std::move(owned));
  for (const char* h : {"a1", "a2", "b1", "b2", "c1"}) AnnounceHost(h);
  Register("a1", "peer-a1", std::make_shared<RecordingStream>());  // no seed: the origin
  auto a2 = std::make_shared<RecordingStream>();
  Register("a2", "peer-a2", a2);
  EXPECT_EQ(LastParents(*a2), (std::vector<std::string>{"peer-a1"}));
  auto b1 = std::make_shared<RecordingStream>();
  Register("b1", "peer-b1", b1);
  EXPECT_EQ(LastParents(*b1), (std::vector<std::string>{"peer-a1", "peer-a2"}));

  evaluator->Publish({{"a1", "~a"}, {"a2", "~a"}, {"b1", "~b"}, {"b2", "~b"}, {"c1", "~c"}});
  clock_.Advance(1s);
  scheduler_->RunBackgroundRound();
  auto b2 = std::make_shared<RecordingStream>();
  Register("b2", "peer-b2", b2);
  EXPECT_EQ(LastParents(*b2), (std::vector<std::string>{"peer-b1"})) << "its own group only";
  auto c1 = std::make_shared<RecordingStream>();
  Register("c1", "peer-c1", c1);
  EXPECT_EQ(LastParents(*c1), (std::vector<std::string>{"peer-b1", "peer-b2"}))
      << "group a already serves b1 (an edge made before the groups were known)";

  // A grouping withdrawn (no structure found any more): every host is in every group again.
  evaluator->Publish({});
  clock_.Advance(1s);
  scheduler_->RunBackgroundRound();
  auto c2 = std::make_shared<RecordingStream>();
  AnnounceHost("c2");
  Register("c2", "peer-c2", c2);
  EXPECT_EQ(LastParents(*c2).size(), 5u);
}

// Edges made before the groups were known: once they are, a child whose parents are in another
// group is re-planned and takes parents of its own group.
TEST_F(SchedulerClockTest, ChildrenWithParentsInAnotherInferredGroupAreReplanned) {
  SchedulerConfig config;
  config.gc_interval_ms = 7 * 24 * 3600'000ull;
  config.capacity_prior = 0;
  auto owned = std::make_unique<GroupingEvaluator>();
  GroupingEvaluator* evaluator = owned.get();
  StartScheduler(config, nullptr, std::move(owned));
  for (const char* h : {"a1", "b1", "b2"}) AnnounceHost(h);
  Register("a1", "peer-a1", std::make_shared<RecordingStream>());
  auto b1 = std::make_shared<RecordingStream>();
  Register("b1", "peer-b1", b1);
  auto b2 = std::make_shared<RecordingStream>();
  Register("b2", "peer-b2", b2);
  ASSERT_EQ(LastParents(*b2), (std::vector<std::string>{"peer-a1", "peer-b1"}));

  evaluator->Publish({{"a1", "~a"}, {"b1", "~b"}, {"b2", "~b"}});
  clock_.Advance(1s);
  scheduler_->RunBackgroundRound();
  EXPECT_EQ(LastParents(*b2), (std::vector<std::string>{"peer-b1"}));
  EXPECT_EQ(LastParents(*b1), (std::vector<std::string>{"peer-a1"}))
      << "the root of group b keeps its parent outside";
}

}  // namespace
// The hosts, tasks and peers gauges follow registers within the background round, not only GC
// (which never runs here); every parent decision is counted by outcome and timed.
TEST_F(SchedulerClockTest, GaugesFollowRegistersWithoutGcAndDecisionsAreCountedAndTimed) {
  SchedulerConfig config;
  config.gc_interval_ms = 7 * 24 * 3600'000ull;  // no GC in this test
  StartScheduler(config, nullptr);
  scheduler_->RunBackgroundRound();
  EXPECT_EQ(metrics_.hosts.Value(), 0);
  AnnounceHost("host-a");
  AnnounceHost("host-b");
  Register("host-a", "peer-a", std::make_shared<RecordingStream>());
  clock_.Advance(1s);
  scheduler_->RunBackgroundRound();
  EXPECT_EQ(metrics_.hosts.Value(), 2);
  EXPECT_EQ(metrics_.tasks.Value(), 1);
  EXPECT_EQ(metrics_.peers.Value(), 1);
  Register("host-b", "peer-b", std::make_shared<RecordingStream>());
  clock_.Advance(1s);
  scheduler_->RunBackgroundRound();
  EXPECT_EQ(metrics_.peers.Value(), 2);

  const double decisions = metrics_.decisions_sent.Value() + metrics_.decisions_unchanged.Value() +
                           metrics_.decisions_no_candidates.Value();
  EXPECT_GE(metrics_.decisions_no_candidates.Value(), 1);  // peer-a: nobody to choose from
  const auto timed = metrics_.decision_duration_seconds.Collect().histogram;
  EXPECT_EQ(static_cast<double>(timed.sample_count), decisions);
  EXPECT_GE(timed.sample_sum, 0);
}

}  // namespace df::scheduler
