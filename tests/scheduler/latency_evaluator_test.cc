// Specifications of the latency evaluator, with candidates written as data.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "scheduler/latency_evaluator.h"

namespace df::scheduler {
namespace {

// One candidate per line: id state rtt failures [uploads]
// state: R(unning) S(ucceeded) F(ailed); rtt: "-" (never probed) or a number with us/ms.
std::vector<ParentInfo> Candidates(const std::string& table) {
  std::vector<ParentInfo> out;
  std::istringstream lines(table);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream in(line);
    ParentInfo p;
    std::string state, rtt;
    if (!(in >> p.peer_id)) continue;
    in >> state >> rtt >> p.probe_failures;
    in >> p.concurrent_uploads;  // optional
    p.state = state == "S"   ? PeerState::kSucceeded
              : state == "F" ? PeerState::kFailed
                             : PeerState::kRunning;
    p.finished_pieces = 10;
    if (rtt != "-") {
      const double value = std::stod(rtt);
      const double unit = rtt.ends_with("us") ? 1e3 : 1e6;
      p.rtt_ns = static_cast<int64_t>(value * unit);
    }
    out.push_back(p);
  }
  return out;
}

// The ids of the evaluated candidates, best first, space separated.
std::string Order(const Evaluator& e, const std::vector<ParentInfo>& candidates) {
  std::string out;
  for (const auto& s : e.Evaluate(ChildInfo{}, candidates, TaskView{100})) {
    out += (out.empty() ? "" : " ") + candidates[s.index].peer_id;
  }
  return out;
}

TEST(LatencyEvaluator, NearerFirstUnknownInTheMiddleFailedProbesLast) {
  auto c = Candidates(R"(
    down  R 200us 3
    far   R 20ms  0
    blind R -     0
    near  R 200us 0
  )");
  EXPECT_EQ(Order(LatencyEvaluator(), c), "near blind far down");
}

TEST(LatencyEvaluator, WithNothingProbedItRanksLikeTheDefaultEvaluator) {
  auto c = Candidates(R"(
    a R - 0 12
    b S - 0 3
    c R - 0 0
    d R - 0 15
  )");
  EXPECT_EQ(Order(LatencyEvaluator(), c), Order(DefaultEvaluator(), c));
  EXPECT_EQ(Order(LatencyEvaluator(), c), "b c a d");
}

TEST(LatencyEvaluator, LatencyDoesNotOverrideAParentWithoutFreeUpload) {
  auto c = Candidates(R"(
    near_busy R 50us 0 16
    far_idle  R 50ms 0 0
  )");
  EXPECT_EQ(Order(LatencyEvaluator(), c), "far_idle near_busy");
}

TEST(LatencyEvaluator, DropsWhatTheDefaultEvaluatorDrops) {
  auto c = Candidates(R"(
    alive R 1ms 0
    gone  F 1us 0
  )");
  EXPECT_EQ(Order(LatencyEvaluator(), c), "alive");
}

TEST(LatencyEvaluator, TermsAndRegistration) {
  EXPECT_DOUBLE_EQ(LatencyEvaluator::LatencyScore(1'000'000), 0.5);
  EXPECT_GT(LatencyEvaluator::LatencyScore(100'000), 0.9);
  EXPECT_DOUBLE_EQ(LatencyEvaluator::FailurePenalty(0), 0);
  EXPECT_DOUBLE_EQ(LatencyEvaluator::FailurePenalty(7), LatencyEvaluator::FailurePenalty(3));
  auto e = NewEvaluator("latency");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e.value()->name(), "latency");
  EXPECT_TRUE(IsKnownEvaluator("latency"));
}

}  // namespace
}  // namespace df::scheduler
