// Specifications of the default evaluator, with candidates written as data.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "scheduler/default_evaluator.h"

namespace df::scheduler {
namespace {

// One candidate per line:
//   id state pieces type idc location limit uploads ok fail
// state: R(unning) B(ackToSource) S(ucceeded) F(ailed) L(eft) P(ending); type: seed|normal;
// "-" for an empty idc/location.
std::vector<ParentInfo> Candidates(const std::string& table) {
  std::vector<ParentInfo> out;
  std::istringstream lines(table);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    ParentInfo p;
    std::string state, type;
    if (!(in >> p.peer_id)) continue;
    in >> state >> p.finished_pieces >> type >> p.idc >> p.location >> p.concurrent_upload_limit >>
        p.concurrent_uploads >> p.upload_success >> p.upload_failure;
    switch (state[0]) {
      case 'R':
        p.state = PeerState::kRunning;
        break;
      case 'B':
        p.state = PeerState::kBackToSource;
        break;
      case 'S':
        p.state = PeerState::kSucceeded;
        break;
      case 'F':
        p.state = PeerState::kFailed;
        break;
      case 'L':
        p.state = PeerState::kLeft;
        break;
      default:
        p.state = PeerState::kPending;
        break;
    }
    p.is_seed = type == "seed";
    if (p.idc == "-") p.idc.clear();
    if (p.location == "-") p.location.clear();
    out.push_back(p);
  }
  return out;
}

ChildInfo Child(const std::string& idc = "", const std::string& location = "") {
  ChildInfo c;
  c.peer_id = "child";
  c.idc = idc;
  c.location = location;
  return c;
}

// Ids of the evaluator's answer, best first, space-separated.
std::string Order(const ChildInfo& child, const std::vector<ParentInfo>& candidates,
                  uint32_t total_pieces = 100) {
  DefaultEvaluator evaluator;
  std::string out;
  for (const auto& r : evaluator.Evaluate(child, candidates, TaskView{total_pieces})) {
    out += (out.empty() ? "" : " ") + candidates[r.index].peer_id;
  }
  return out;
}

TEST(DefaultEvaluator, PrefersParentsWithMoreFreeUpload) {
  auto c = Candidates(R"(
    busy  R 50 normal - - 10 9 0 0
    idle  R 50 normal - - 10 0 0 0
    half  R 50 normal - - 10 5 0 0
    full  R 50 normal - - 10 12 0 0)");
  EXPECT_EQ(Order(Child(), c), "idle half busy full");
}

TEST(DefaultEvaluator, PrefersParentsWithMorePieces) {
  auto c = Candidates(R"(
    few   R 10 normal - - 10 0 0 0
    done  S 0  normal - - 10 0 0 0
    many  R 90 normal - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "done many few") << "a succeeded peer holds every piece";
}

TEST(DefaultEvaluator, PrefersParentsThatUploadReliably) {
  auto c = Candidates(R"(
    flaky R 50 normal - - 10 0 5 5
    solid R 50 normal - - 10 0 10 0
    new   R 50 normal - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "solid new flaky");
}

TEST(DefaultEvaluator, PrefersSameIdcThenLongerCommonLocation) {
  auto c = Candidates(R"(
    far     R 50 normal idc2 cn|bj|z1 10 0 0 0
    region  R 50 normal idc2 de|by|z9 10 0 0 0
    zone    R 50 normal idc2 de|by|z1 10 0 0 0
    sameidc R 50 normal idc1 de|bj|z1 10 0 0 0)");
  EXPECT_EQ(Order(Child("idc1", "de|by|z1"), c), "sameidc zone region far");
}

TEST(DefaultEvaluator, PrefersASeedWhileItHasUniquePieces) {
  auto c = Candidates(R"(
    peer R 10 normal - - 10 0 0 0
    seed B 30 seed   - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "seed peer");
}

TEST(DefaultEvaluator, ARunningSeedWithNoPiecesYetIsStillAGoodParent) {
  auto c = Candidates(R"(
    waiting R 0 normal - - 10 0 0 0
    seed    B 0 seed   - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "seed waiting");
}

TEST(DefaultEvaluator, ASeedIsOnlyAFallbackWhenPeersHoldWhatItHas) {
  auto c = Candidates(R"(
    seed  S 100 seed   - - 10 0 0 0
    peer1 S 100 normal - - 10 0 0 0
    peer2 R 100 normal - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "peer1 peer2 seed");
}

TEST(DefaultEvaluator, DropsPeersThatCannotServe) {
  auto c = Candidates(R"(
    failed  F 90 normal - - 10 0 0 0
    left    L 90 normal - - 10 0 0 0
    pending P 90 normal - - 10 0 0 0
    ok      R 1  normal - - 10 0 0 0
    source  B 0  normal - - 10 0 0 0)");
  EXPECT_EQ(Order(Child(), c), "ok source");
}

TEST(DefaultEvaluator, DropsParentsTheChildReportedBad) {
  auto c = Candidates(R"(
    a R 50 normal - - 10 0 0 0
    b R 50 normal - - 10 0 0 0)");
  ChildInfo child = Child();
  child.bad_parent_ids = {"a"};
  EXPECT_EQ(Order(child, c), "b");
}

TEST(DefaultEvaluator, DropsParentsFarSlowerThanTheirOwnHistory) {
  auto c = Candidates(R"(
    slow R 50 normal - - 10 0 0 0
    fine R 50 normal - - 10 0 0 0)");
  std::vector<uint64_t> steady(12, 100);
  c[0].piece_costs_ns = steady;
  c[0].piece_costs_ns.push_back(10'000);  // latest piece 100x its history
  c[1].piece_costs_ns = steady;
  c[1].piece_costs_ns.push_back(150);  // slower, but not far
  EXPECT_EQ(Order(Child(), c), "fine");
}

TEST(DefaultEvaluator, LatestCostOutlierRule) {
  struct Case {
    std::vector<uint64_t> costs;  // oldest first, last = latest
    bool outlier;
  };
  std::vector<uint64_t> ten(10, 100);
  auto with = [](std::vector<uint64_t> v, uint64_t latest) {
    v.push_back(latest);
    return v;
  };
  const Case cases[] = {
      {{}, false},
      {{100, 100000}, false},     // one earlier sample: too little history
      {{100, 100, 1900}, false},  // few samples: needs > 20x the mean
      {{100, 100, 2100}, true},
      // >= 10 samples: above mean + 3 stddev and above twice the mean.
      {with(ten, 199), false},  // zero variance: the 2x floor decides
      {with(ten, 201), true},
      {with({50, 150, 50, 150, 50, 150, 50, 150, 50, 150}, 240), false},  // 100 + 3*50 = 250
      {with({50, 150, 50, 150, 50, 150, 50, 150, 50, 150}, 260), true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(DefaultEvaluator::IsLatestCostOutlier(c.costs), c.outlier)
        << ::testing::PrintToString(c.costs);
  }
}

TEST(DefaultEvaluator, ScoresStayWithinZeroAndOne) {
  auto c = Candidates(R"(
    best  S 100 normal idc1 a|b|c 10 0 100 0
    worst R 0   seed   idc9 x|y|z 10 50 0 100)");
  c[1].state = PeerState::kSucceeded;  // a seed without unique pieces
  ChildInfo child = Child("idc1", "a|b|c");
  double best = DefaultEvaluator::Score(child, c[0], TaskView{100}, 100);
  EXPECT_GT(best, 0.9);
  EXPECT_LE(best, 1.0);
  double worst = DefaultEvaluator::Score(child, c[1], TaskView{100}, 100);
  EXPECT_GE(worst, 0.0);
  EXPECT_LT(worst, 0.5);
}

TEST(Evaluators, UnknownNameIsAnErrorNamingTheKnownOnes) {
  EXPECT_TRUE(NewEvaluator("default").ok());
  auto e = NewEvaluator("neural");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("default"), std::string::npos);
}

}  // namespace
}  // namespace df::scheduler
