// ParentSet on its own, against a real PiecePicker: a parent's life (offered, taken away, offered
// again, dropped), how its failures count, and what the picker sees of it at each step.
#include "daemon/parent_set.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace df {
namespace {

PieceNumber P(uint32_t n) { return PieceNumber{n}; }

ParentAddress Addr(const std::string& id) {
  return {
      .peer_id = id, .host_id = "host-" + id, .ip = "10.0.0.1", .grpc_port = 1, .piece_port = 2};
}

class ParentSetTest : public ::testing::Test {
 protected:
  ParentSetTest()
      : picker_({.cut_through = true, .per_parent_concurrency = 2}),
        set_(picker_, [this](TaskParent& p) { dropped_.push_back(p.peer_id); }) {
    picker_.Reset(8);
  }

  TaskParent& Add(const std::string& id) {
    TaskParent* p = set_.Offer(Addr(id));
    EXPECT_NE(p, nullptr) << id;
    return *p;
  }

  PiecePicker picker_;
  ParentSet set_;
  std::vector<std::string> dropped_;  // on_drop calls, in order
};

TEST(CheckParentAddress, AcceptsAnIpv4LiteralAndPortsInRangeAndRejectsTheRest) {
  auto ok = CheckParentAddress("p1", "h1", "10.0.0.7", 65000, 65535);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->peer_id, "p1");
  EXPECT_EQ(ok->host_id, "h1");
  EXPECT_EQ(ok->ip, "10.0.0.7");
  EXPECT_EQ(ok->grpc_port, 65000);
  EXPECT_EQ(ok->piece_port, 65535);
  struct Bad {
    std::string peer_id, ip;
    int64_t grpc_port, piece_port;
    const char* words;
  };
  for (const Bad& b : std::vector<Bad>{
           {"", "10.0.0.7", 1, 2, "peer id of 0 bytes"},
           {std::string(kMaxParentIdBytes + 1, 'p'), "10.0.0.7", 1, 2, "peer id of 257 bytes"},
           {"p", "localhost", 1, 2, "not an IPv4 address"},  // a name is never resolved
           {"p", "", 1, 2, "not an IPv4 address"},
           {"p", "::1", 1, 2, "not an IPv4 address"},
           {"p", "10.0.0.7 ", 1, 2, "not an IPv4 address"},
           {"p", "10.0.0.7", 0, 2, "port 0 is out of range"},
           {"p", "10.0.0.7", 1, 65536, "port 65536 is out of range"},  // would wrap to 0
           {"p", "10.0.0.7", -1, 2, "port -1 is out of range"},
       }) {
    auto r = CheckParentAddress(b.peer_id, "h", b.ip, b.grpc_port, b.piece_port);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << b.ip << " " << b.words;
    EXPECT_NE(r.status().ToString().find(b.words), std::string::npos) << r.status().ToString();
  }
}

TEST_F(ParentSetTest, AnOfferedParentIsUsableAndKnownOnce) {
  TaskParent& a = Add("a");
  EXPECT_EQ(a.host_id, "host-a");
  EXPECT_EQ(a.piece_port, 2);
  EXPECT_TRUE(a.usable());
  EXPECT_TRUE(picker_.usable(a.index));
  EXPECT_EQ(&set_.at(a.index), &a);
  EXPECT_EQ(set_.Find("a"), &a);
  EXPECT_EQ(set_.Find("b"), nullptr);
  EXPECT_EQ(set_.Offer(Addr("a")), nullptr);  // known: nothing new to connect to
  EXPECT_EQ(set_.size(), 1u);
  EXPECT_TRUE(set_.AnyUsable());
}

TEST_F(ParentSetTest, ATakenAwayParentCountsForNothingUntilOfferedAgain) {
  TaskParent& a = Add("a");
  picker_.SetHas(a.index, P(3));
  EXPECT_EQ(picker_.holders(P(3)), 1u);

  EXPECT_EQ(set_.Remove("a"), &a);
  EXPECT_FALSE(picker_.usable(a.index));
  EXPECT_EQ(picker_.holders(P(3)), 0u);
  EXPECT_FALSE(set_.AnyUsable());
  EXPECT_EQ(set_.Remove("a"), nullptr);       // already away
  EXPECT_EQ(set_.Remove("nobody"), nullptr);  // unknown
  EXPECT_TRUE(dropped_.empty());              // taken away is not dead: its stream stays

  EXPECT_EQ(set_.Offer(Addr("a")), nullptr);
  EXPECT_TRUE(a.usable());
  EXPECT_EQ(picker_.holders(P(3)), 1u);  // what it held counts again
}

TEST_F(ParentSetTest, ConsecutiveFailuresDropAParentOnceAndASuccessResetsThem) {
  TaskParent& a = Add("a");
  const Status broken(StatusCode::kUnavailable, "connection reset");
  for (uint32_t i = 1; i < ParentSet::kFailureLimit; ++i) set_.Failed(a, P(0), broken, false);
  set_.Served(a, 1 << 20, 1'000'000);  // a good piece in between
  EXPECT_EQ(a.failures, 0u);
  for (uint32_t i = 1; i < ParentSet::kFailureLimit; ++i) set_.Failed(a, P(0), broken, false);
  EXPECT_TRUE(a.usable());
  EXPECT_TRUE(dropped_.empty());

  set_.Failed(a, P(0), broken, false);
  EXPECT_TRUE(a.dead);
  EXPECT_FALSE(picker_.usable(a.index));
  EXPECT_EQ(dropped_, std::vector<std::string>{"a"});
  set_.Drop(a);  // already dead: its stream is not cut twice
  EXPECT_EQ(dropped_.size(), 1u);
  EXPECT_EQ(set_.DeadIds(), std::vector<std::string>{"a"});
}

TEST_F(ParentSetTest, ADeadParentStaysDeadWhenOfferedAgain) {
  TaskParent& a = Add("a");
  set_.Drop(a);
  EXPECT_EQ(set_.Offer(Addr("a")), nullptr);
  EXPECT_TRUE(a.dead);
  EXPECT_FALSE(picker_.usable(a.index));
  EXPECT_EQ(set_.Remove("a"), nullptr);
}

TEST_F(ParentSetTest, NotFoundForgetsAPieceOrOnlyItsForwardingAndCountsNoFailure) {
  TaskParent& a = Add("a");
  picker_.SetHas(a.index, P(1));
  picker_.SetReceiving(a.index, P(2));
  const Status not_found(StatusCode::kNotFound, "no such piece");

  set_.Failed(a, P(1), not_found, /*forwarded=*/false);  // it had it and no longer does
  EXPECT_FALSE(picker_.has(a.index, P(1)));
  set_.Failed(a, P(2), not_found, /*forwarded=*/true);  // it does not forward that one
  EXPECT_FALSE(picker_.receiving(a.index, P(2)));
  EXPECT_EQ(a.failures, 0u);
  EXPECT_TRUE(a.usable());
}

TEST_F(ParentSetTest, AbortedForwardsAreForgivenUntilTheyKeepHappening) {
  TaskParent& a = Add("a");
  const Status aborted(StatusCode::kAborted, "its source failed");
  for (uint32_t i = 1; i < ParentSet::kFailureLimit; ++i) {
    picker_.SetReceiving(a.index, P(i));
    set_.Failed(a, P(i), aborted, true);
    EXPECT_FALSE(picker_.receiving(a.index, P(i)));
  }
  EXPECT_EQ(a.failures, 0u);
  // From the kFailureLimit-th in a row on, each one is a failure: kFailureLimit more drop it.
  for (uint32_t i = 0; i < ParentSet::kFailureLimit; ++i) {
    EXPECT_TRUE(a.usable()) << i;
    set_.Failed(a, P(0), aborted, true);
  }
  EXPECT_TRUE(a.dead);
  EXPECT_EQ(dropped_, std::vector<std::string>{"a"});
}

TEST_F(ParentSetTest, PiecesNobodyFetchedDropAParentAtTheLimit) {
  TaskParent& a = Add("a");
  for (uint32_t i = 1; i < ParentSet::kUnverifiableLimit; ++i) EXPECT_FALSE(set_.Unverifiable(a));
  EXPECT_TRUE(set_.Unverifiable(a));
  EXPECT_TRUE(a.dead);
  EXPECT_EQ(dropped_, std::vector<std::string>{"a"});
}

TEST_F(ParentSetTest, AnEndedStreamKillsAParentUnlessItHoldsTheWholeTask) {
  TaskParent& a = Add("a");
  TaskParent& b = Add("b");
  b.done = true;
  set_.StreamEnded(a);
  set_.StreamEnded(b);
  EXPECT_TRUE(a.dead);
  EXPECT_FALSE(picker_.usable(a.index));
  EXPECT_TRUE(b.usable());        // it can still serve what it announced
  EXPECT_TRUE(dropped_.empty());  // the stream is over: nothing to cut
  EXPECT_EQ(set_.DeadIds(), std::vector<std::string>{"a"});
}

TEST_F(ParentSetTest, AStallDropsOnlyTheParentsThatCannotHelp) {
  TaskParent& idle = Add("idle");       // holds nothing missing, nothing in flight: dropped
  TaskParent& busy = Add("busy");       // a piece in flight: kept
  TaskParent& useful = Add("useful");   // holds a missing piece: kept
  TaskParent& done_only = Add("done");  // holds only a piece this peer has: dropped
  TaskParent& away = Add("away");       // taken away: left alone
  busy.inflight = 1;
  picker_.SetHas(useful.index, P(4));
  picker_.SetState(P(5), PieceState::kDone);
  picker_.SetHas(done_only.index, P(5));
  set_.Remove("away");

  std::vector<std::string> stale = set_.DropStale();
  EXPECT_EQ(stale, (std::vector<std::string>{"done", "idle"}));  // peer id order
  EXPECT_EQ(dropped_, stale);
  EXPECT_TRUE(idle.dead && done_only.dead);
  EXPECT_TRUE(busy.usable() && useful.usable());
  EXPECT_FALSE(away.dead);
}

TEST_F(ParentSetTest, TheRateIsAnEwmaOfPieceThroughputAndACutCapsIt) {
  TaskParent& a = Add("a");
  set_.Served(a, 1'000'000, 1'000'000'000);  // 1 MB in 1 s
  EXPECT_DOUBLE_EQ(a.rate_bytes_per_sec, 1e6);
  set_.Served(a, 2'000'000, 1'000'000'000);  // 2 MB/s: 30 % of the way
  EXPECT_DOUBLE_EQ(a.rate_bytes_per_sec, 0.7 * 1e6 + 0.3 * 2e6);
  set_.CapRate(a, 5e5);
  EXPECT_DOUBLE_EQ(a.rate_bytes_per_sec, 5e5);
  set_.CapRate(a, 9e9);  // a cap never raises it
  EXPECT_DOUBLE_EQ(a.rate_bytes_per_sec, 5e5);
  TaskParent& b = Add("b");
  set_.CapRate(b, 7e5);  // not measured yet: the cap is all it is known to do
  EXPECT_DOUBLE_EQ(b.rate_bytes_per_sec, 7e5);
  set_.Served(b, 1, 0);  // a zero cost is not a division by zero
  EXPECT_GT(b.rate_bytes_per_sec, 0);
}

TEST_F(ParentSetTest, LoadsListEveryParentInPeerIdOrder) {
  TaskParent& c = Add("c");
  TaskParent& a = Add("a");
  c.connections = 1;
  c.inflight = 3;
  a.rate_bytes_per_sec = 42;
  const auto& loads = set_.Loads();
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_EQ(loads[0].parent, a.index);
  EXPECT_EQ(loads[0].rate_bytes_per_sec, 42);
  EXPECT_EQ(loads[1].parent, c.index);
  EXPECT_EQ(loads[1].connections, 1u);
  EXPECT_EQ(loads[1].inflight, 3u);
}

TEST_F(ParentSetTest, TheFastestHolderIsUsableHasAFreeConnectionAndIsNotTheSlowOne) {
  TaskParent& slow = Add("slow");
  TaskParent& fast = Add("fast");
  TaskParent& faster_full = Add("full");
  TaskParent& faster_away = Add("away");
  TaskParent& lacking = Add("lacking");
  for (TaskParent* p : {&slow, &fast, &faster_full, &faster_away}) picker_.SetHas(p->index, P(6));
  slow.rate_bytes_per_sec = 1e9;  // fastest on paper, but it is the one being replaced
  fast.rate_bytes_per_sec = 1e6;
  faster_full.rate_bytes_per_sec = 1e7;
  faster_full.connections = 2;  // per_parent_concurrency
  faster_away.rate_bytes_per_sec = 1e8;
  set_.Remove("away");
  lacking.rate_bytes_per_sec = 1e8;

  EXPECT_EQ(set_.FastestHolder(P(6), &slow, 2), &fast);
  EXPECT_EQ(set_.FastestHolder(P(6), &slow, 3), &faster_full);  // with room on it
  EXPECT_EQ(set_.FastestHolder(P(7), nullptr, 2), nullptr);     // nobody holds piece 7
}

}  // namespace
}  // namespace df
