// PeerTask's liveness, driven by a ManualClock: an in-process scheduler (fake_scheduler.h), real
// parents (a real PieceServer over a real PieceStore, e2e/lying_parent.h) and a real nginx origin.
// No test sleeps for a timer: each advances the clock and waits for the event it causes, bounded.
#include "daemon/peer_task.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include <prometheus/registry.h>

#include "common/digest.h"
#include "daemon/daemon_metrics.h"

#include "daemon/scheduler_client.h"
#include "e2e/lying_parent.h"
#include "engine_fixture.h"
#include "fake_scheduler.h"

namespace df {
namespace {

using namespace std::chrono_literals;
namespace sv1 = df::scheduler::v1;

class PeerTaskTest : public testing::EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    ASSERT_TRUE(scheduler_.ok());
    client_ = std::make_unique<SchedulerClient>(scheduler_.address(), &auth_, [](sv1::Host*) {});
    ctx_.scheduler = client_.get();
  }

  static sv1::CandidateParent Candidate(const testing::FakeParent& p) {
    sv1::CandidateParent c;
    c.set_peer_id(p.peer_id());
    c.mutable_host()->set_id(p.host_id());
    c.mutable_host()->set_ip("127.0.0.1");
    c.mutable_host()->set_grpc_port(p.grpc_port());
    c.mutable_host()->set_piece_port(p.piece_port());
    return c;
  }

  testing::FakeParent MakeParent(const std::string& name, testing::FakeParentOptions options) {
    options.name = name;
    options.lie = false;
    return testing::FakeParent(dir_.path() + "/" + name, origin_file(), Request().task_id, url(),
                               size_, kPiece, options);
  }

  testing::FakeScheduler scheduler_;
  std::unique_ptr<SchedulerClient> client_;
};

// Issue 14: a parent that stays connected but has nothing to give held its children forever.
// After piece_timeout without progress it is dropped (its availability stream cancelled), and
// after schedule_timeout without a replacement the origin serves the task.
TEST_F(PeerTaskTest, AParentThatGivesNothingIsDroppedAfterPieceTimeout) {
  StartOrigin(2 * kPiece);
  testing::FakeParent stalled(dir_.path() + "/stalled", origin_file(), Request().task_id, url(),
                              size_, kPiece,
                              {.lie = false, .name = "stalled", .announce_pieces = false});
  ASSERT_TRUE(stalled.ok());
  scheduler_.SetParents({Candidate(stalled)}, static_cast<int64_t>(size_), kPiece);
  PeerTask task(ctx_, Request());
  task.Start();
  ASSERT_TRUE(stalled.WaitStreams(1, /*ended=*/false, 10s)) << "the child never subscribed";

  clock_.Advance(std::chrono::milliseconds(config_.piece_timeout_ms) + 1s);
  ASSERT_TRUE(stalled.WaitStreams(1, /*ended=*/true, 10s)) << "the stalled parent was kept";
  EXPECT_FALSE(task.Progress().finished);

  clock_.Advance(std::chrono::milliseconds(config_.schedule_timeout_ms) + 1s);
  ASSERT_TRUE(task.WaitFinished(30000)) << "the origin was never tried";
  TaskProgress p = task.Progress();
  EXPECT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_origin, size_);
  EXPECT_EQ(p.bytes_from_peers, 0u);
}

// Issue 14: when the scheduler stream closed, every peer went to the origin at once. Now a peer
// keeps its parents and registers again, after a backoff measured on the engine's clock.
TEST_F(PeerTaskTest, LosingTheSchedulerKeepsTheParentsAndRegistersAgainAfterABackoff) {
  StartOrigin(4 * kPiece);
  // About 4 s for the whole task: the stream is lost and found again in the middle of it.
  testing::FakeParent parent = MakeParent("parent", {.upload_rate_bytes_per_sec = 4'000'000});
  ASSERT_TRUE(parent.ok());
  scheduler_.SetParents({Candidate(parent)}, static_cast<int64_t>(size_), kPiece);
  PeerTask task(ctx_, Request());
  task.Start();
  ASSERT_TRUE(scheduler_.WaitRegistrations(1, 10s));

  scheduler_.DropStreams();
  // The engine's clock has not moved: no new registration, however long the real wait.
  EXPECT_FALSE(scheduler_.WaitRegistrations(2, 1500ms)) << "registered again without a backoff";
  clock_.Advance(600ms);  // past the first backoff (500 ms)
  EXPECT_TRUE(scheduler_.WaitRegistrations(2, 10s)) << "never registered again";

  ASSERT_TRUE(task.WaitFinished(60000));
  TaskProgress p = task.Progress();
  EXPECT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_peers, size_);
  EXPECT_EQ(p.bytes_from_origin, 0u);
  EXPECT_EQ(origin_->Requests(), 0) << "the lost scheduler sent the peer to the origin";
}

// Endgame on the engine's clock: a parent that trickles the pieces it was asked for holds the
// last ones until the clock says they are overdue; then the other parent's copy wins, and every
// piece counts once in the progress however many copies arrived.
TEST_F(PeerTaskTest, AnOverduePieceIsFetchedAgainFromAnotherParentAndCountedOnce) {
  StartOrigin(8 * kPiece);
  // The fast parent is limited too (~1.5 s for the task), so the slow one surely gets requests.
  testing::FakeParent fast = MakeParent("fast", {.upload_rate_bytes_per_sec = 24'000'000});
  testing::FakeParent slow = MakeParent("slow", {.upload_rate_bytes_per_sec = 32 * 1024});
  ASSERT_TRUE(fast.ok() && slow.ok());
  scheduler_.SetParents({Candidate(slow), Candidate(fast)}, static_cast<int64_t>(size_), kPiece);
  config_.piece_timeout_ms = 600'000;  // only endgame can get past the slow parent
  PeerTask task(ctx_, Request());
  task.Start();
  bool finished = false;
  for (int i = 0; i < 60 && !finished; ++i) {
    finished = task.WaitFinished(500);
    clock_.Advance(std::chrono::seconds(1));
  }
  ASSERT_TRUE(finished) << "the slow parent held the last pieces";
  TaskProgress p = task.Progress();
  EXPECT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(Sha256File(task.storage()->content_path()).value(), sha256_);
  EXPECT_EQ(p.bytes_from_peers, size_) << "a piece was counted twice";
  EXPECT_EQ(p.completed_length, size_);
  EXPECT_GE(p.endgame_duplicates, 1u);
  EXPECT_GE(p.endgame_duplicate_bytes, kPiece);
  EXPECT_LE(p.endgame_duplicates, config_.piece_pipeline_depth) << "more duplicates than needed";
  EXPECT_EQ(slow.pieces_uploaded(), 0u);
  std::printf("endgame: %u duplicates, %llu duplicate bytes\n", p.endgame_duplicates,
              static_cast<unsigned long long>(p.endgame_duplicate_bytes));
}

// Issue 16 (re-planning): the scheduler can take a parent away. The child asks it for no new
// piece from then on (the pieces in flight finish) and goes on with the parent it got instead;
// offered again, the parent is used again.
TEST_F(PeerTaskTest, AParentTheSchedulerTakesAwayIsAskedForNothingMore) {
  StartOrigin(24 * kPiece);
  // 4 MiB pieces: the slow parent takes about 1.3 s a piece, the fast one 0.17 s.
  testing::FakeParent slow = MakeParent("slow", {.upload_rate_bytes_per_sec = 3 * kMiB});
  testing::FakeParent fast = MakeParent("fast", {.upload_rate_bytes_per_sec = 24 * kMiB});
  ASSERT_TRUE(slow.ok() && fast.ok());
  scheduler_.SetParents({Candidate(slow)}, static_cast<int64_t>(size_), kPiece);
  // One request at a time per connection, so that the parent reads each request as it is sent
  // (a pipelined request waits in its socket until the piece before it is out) and its count
  // says exactly what the child asked.
  config_.piece_pipeline_depth = 1;
  PeerTask task(ctx_, Request());
  task.Start();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (slow.pieces_uploaded() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(slow.pieces_uploaded(), 1u) << "the slow parent never served";

  sv1::AnnouncePeerResponse swap;
  *swap.mutable_normal_task()->add_candidate_parents() = Candidate(fast);
  swap.mutable_normal_task()->add_removed_parent_ids(slow.peer_id());
  ASSERT_EQ(scheduler_.Push(swap), 1);
  // Both changes arrive in one message: once the fast parent serves, the slow one is removed.
  while (fast.pieces_uploaded() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(fast.pieces_uploaded(), 1u) << "the new parent was never used";
  const uint64_t asked_of_slow = slow.pieces_requested();

  ASSERT_TRUE(task.WaitFinished(60000));
  TaskProgress p = task.Progress();
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(Sha256File(task.storage()->content_path()).value(), sha256_);
  EXPECT_EQ(slow.pieces_requested(), asked_of_slow) << "a removed parent was asked for more";
  EXPECT_LE(slow.pieces_uploaded(), asked_of_slow);
  EXPECT_EQ(p.bytes_from_origin, 0u);
  std::printf("slow parent: %llu pieces requested, %llu served; fast parent: %llu served\n",
              static_cast<unsigned long long>(asked_of_slow),
              static_cast<unsigned long long>(slow.pieces_uploaded()),
              static_cast<unsigned long long>(fast.pieces_uploaded()));
}

// A parent taken away and then offered again is used again (a removal is not a verdict).
TEST_F(PeerTaskTest, AParentOfferedAgainAfterItsRemovalIsUsedAgain) {
  StartOrigin(16 * kPiece);
  testing::FakeParent only = MakeParent("only", {.upload_rate_bytes_per_sec = 8 * kMiB});
  ASSERT_TRUE(only.ok());
  scheduler_.SetParents({Candidate(only)}, static_cast<int64_t>(size_), kPiece);
  config_.endgame = false;
  PeerTask task(ctx_, Request());
  task.Start();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (only.pieces_uploaded() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  sv1::AnnouncePeerResponse remove;
  remove.mutable_normal_task()->add_removed_parent_ids(only.peer_id());
  ASSERT_EQ(scheduler_.Push(remove), 1);
  // With its only parent taken away the peer waits (its clock does not move: no origin).
  EXPECT_FALSE(task.WaitFinished(2000)) << "finished without its only parent";
  const uint64_t before = only.pieces_requested();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(only.pieces_requested(), before) << "asked a removed parent";

  sv1::AnnouncePeerResponse again;
  *again.mutable_normal_task()->add_candidate_parents() = Candidate(only);
  ASSERT_EQ(scheduler_.Push(again), 1);
  ASSERT_TRUE(task.WaitFinished(60000));
  TaskProgress p = task.Progress();
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_peers, size_);
  EXPECT_GT(only.pieces_requested(), before);
}

// Removals naming parents the peer does not have (unknown, empty, a megabyte long) change nothing.
TEST_F(PeerTaskTest, RemovalsOfUnknownParentsAreIgnored) {
  StartOrigin(4 * kPiece);
  testing::FakeParent parent = MakeParent("parent", {.upload_rate_bytes_per_sec = 8 * kMiB});
  ASSERT_TRUE(parent.ok());
  scheduler_.SetParents({Candidate(parent)}, static_cast<int64_t>(size_), kPiece);
  PeerTask task(ctx_, Request());
  task.Start();
  ASSERT_TRUE(scheduler_.WaitRegistrations(1, 10s));
  sv1::AnnouncePeerResponse removal;
  removal.mutable_normal_task()->add_removed_parent_ids("nobody");
  removal.mutable_normal_task()->add_removed_parent_ids("");
  removal.mutable_normal_task()->add_removed_parent_ids(std::string(1 << 20, 'x'));
  ASSERT_EQ(scheduler_.Push(removal), 1);
  ASSERT_TRUE(task.WaitFinished(60000));
  TaskProgress p = task.Progress();
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_peers, size_);
  EXPECT_EQ(p.bytes_from_origin, 0u);
}

// Every port is reachable by strangers, and a candidate parent comes from the network: one named
// by a host name (which would be resolved), with a port out of range (which would wrap to another
// port) or without a peer id is ignored, and the download goes on with the good ones.
TEST_F(PeerTaskTest, CandidateParentsWithBadAddressesAreIgnored) {
  StartOrigin(4 * kPiece);
  testing::FakeParent parent = MakeParent("parent", {.upload_rate_bytes_per_sec = 8 * kMiB});
  testing::FakeParent named = MakeParent("named", {});
  ASSERT_TRUE(parent.ok() && named.ok());
  sv1::CandidateParent by_name = Candidate(named);
  by_name.mutable_host()->set_ip("localhost");
  sv1::CandidateParent wrapping = Candidate(named);
  wrapping.set_peer_id("wrapping");
  wrapping.mutable_host()->set_grpc_port(named.grpc_port() + 65536);
  sv1::CandidateParent anonymous = Candidate(named);
  anonymous.set_peer_id("");
  sv1::CandidateParent huge_id = Candidate(named);
  huge_id.set_peer_id(std::string(kMaxParentIdBytes + 1, 'x'));
  scheduler_.SetParents({by_name, wrapping, anonymous, huge_id, Candidate(parent)},
                        static_cast<int64_t>(size_), kPiece);
  PeerTask task(ctx_, Request());
  task.Start();
  ASSERT_TRUE(task.WaitFinished(60000));
  TaskProgress p = task.Progress();
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_peers, size_);
  EXPECT_EQ(p.bytes_from_origin, 0u);
  EXPECT_FALSE(named.WaitStreams(1, /*ended=*/false, 1s)) << "a bad candidate was subscribed to";
}

// Issue 14: a cancel waited for a worker receiving a piece from a slow parent (until the piece
// arrived or piece_timeout passed). The receive is cut, and the task ends at once.
TEST_F(PeerTaskTest, ACancelCutsAPieceBeingReceivedFromASlowParent) {
  StartOrigin(4 * kPiece);
  // 32 KiB/s: one 4 MiB piece takes two minutes.
  testing::FakeParent slow = MakeParent("slow", {.upload_rate_bytes_per_sec = 32 * 1024});
  ASSERT_TRUE(slow.ok());
  scheduler_.SetParents({Candidate(slow)}, static_cast<int64_t>(size_), kPiece);
  config_.piece_timeout_ms = 600'000;
  PeerTask task(ctx_, Request());
  task.Start();
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (slow.pieces_requested() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GE(slow.pieces_requested(), 1u) << "the child never asked the parent";
  std::this_thread::sleep_for(200ms);  // well into the piece's body
  const auto cancelled_at = std::chrono::steady_clock::now();
  task.Cancel();
  ASSERT_TRUE(task.WaitFinished(5000)) << "the cancel waited for the slow piece";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - cancelled_at).count();
  EXPECT_EQ(task.Progress().status.code(), StatusCode::kCancelled);
  EXPECT_EQ(slow.pieces_uploaded(), 0u);
  std::printf("cancel took %.3f s\n", seconds);
}

}  // namespace
// Issue 19: the daemon's piece failures are counted by source and reason, and its trips to the
// origin by reason. Every fetch from this parent fails (nothing listens on its piece port), so
// it is dropped and, after schedule_timeout without a replacement, the origin serves the task.
TEST_F(PeerTaskTest, PieceFailuresAndBackToSourceAreCountedByReason) {
  StartOrigin(2 * kPiece);
  testing::FakeParent parent = MakeParent("parent", {});
  ASSERT_TRUE(parent.ok());
  sv1::CandidateParent candidate = Candidate(parent);
  candidate.mutable_host()->set_piece_port(bench::FreePort());
  scheduler_.SetParents({candidate}, static_cast<int64_t>(size_), kPiece);
  prometheus::Registry registry;
  DaemonMetrics metrics(registry);
  ctx_.piece_failures = &metrics.piece_failures;
  ctx_.back_to_source = &metrics.back_to_source;
  prometheus::Counter& refused =
      metrics.piece_failures.Add({{"source", "peer"}, {"reason", "Unavailable"}});
  PeerTask task(ctx_, Request());
  task.Start();
  for (int i = 0; i < 200 && refused.Value() == 0; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_GE(refused.Value(), 1) << "a refused connection to a parent is a piece failure";

  clock_.Advance(std::chrono::milliseconds(config_.schedule_timeout_ms) + 1s);
  ASSERT_TRUE(task.WaitFinished(30000)) << "the origin was never tried";
  TaskProgress p = task.Progress();
  ASSERT_TRUE(p.status.ok()) << p.status.ToString();
  EXPECT_EQ(p.bytes_from_origin, size_);
  EXPECT_EQ(metrics.back_to_source.Add({{"reason", kBackToSourceNoParent}}).Value(), 1);
  EXPECT_EQ(metrics.back_to_source.Add({{"reason", kBackToSourceNoScheduler}}).Value(), 0);
}

// Issue 19: df_daemon_piece_connections{side="client"} counts this host's open connections to
// parents, and none is left once the download is over.
TEST_F(PeerTaskTest, ConnectionsToParentsAreCountedWhileOpen) {
  StartOrigin(2 * kPiece);
  testing::FakeParent parent = MakeParent("parent", {.upload_rate_bytes_per_sec = 8'000'000});
  ASSERT_TRUE(parent.ok());
  scheduler_.SetParents({Candidate(parent)}, static_cast<int64_t>(size_), kPiece);
  const int64_t before = PieceClient::open_connections();
  int64_t seen = 0;
  {
    PeerTask task(ctx_, Request());
    task.Start();
    while (!task.WaitFinished(10)) seen = std::max(seen, PieceClient::open_connections());
    EXPECT_TRUE(task.Progress().status.ok()) << task.Progress().status.ToString();
  }
  EXPECT_GE(seen, before + 1);
  EXPECT_EQ(PieceClient::open_connections(), before);
}

}  // namespace df
