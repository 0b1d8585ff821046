// Specifications of the bandwidth records kept per (child host, parent host).
#include <gtest/gtest.h>

#include "scheduler/bandwidth_records.h"
#include "scheduler/cost_history.h"

namespace df::scheduler {
namespace {

TEST(BandwidthRecords, KeepsABoundedRingPerPair) {
  BandwidthRecords records(3);
  for (uint64_t i = 1; i <= 5; ++i) records.Add({"child", "parent", i * 100, 1000, 0});
  records.Add({"child", "other", 1, 1, 0});
  auto pair = records.Pair("child", "parent");
  ASSERT_EQ(pair.size(), 3u);
  EXPECT_EQ(pair.front().bytes, 300u) << "oldest records are dropped first";
  EXPECT_EQ(pair.back().bytes, 500u);
  EXPECT_EQ(records.pair_count(), 2u);
  EXPECT_EQ(records.record_count(), 4u);
}

TEST(BandwidthRecords, EstimatesBytesPerSecondOverThePair) {
  BandwidthRecords records;
  records.Add({"c", "p", 4 << 20, 20'000'000, 0});  // 4 MiB in 20 ms
  records.Add({"c", "p", 4 << 20, 20'000'000, 0});
  EXPECT_NEAR(records.EstimateBytesPerSec("c", "p"), (4 << 20) / 0.02, 1);
  EXPECT_EQ(records.EstimateBytesPerSec("p", "c"), 0) << "pairs are directed";
}

TEST(BandwidthRecords, RemoveHostDropsBothDirections) {
  BandwidthRecords records;
  records.Add({"a", "b", 1, 1, 0});
  records.Add({"b", "c", 1, 1, 0});
  records.Add({"c", "d", 1, 1, 0});
  records.RemoveHost("b");
  EXPECT_EQ(records.pair_count(), 1u);
  EXPECT_EQ(records.record_count(), 1u);
}

TEST(CostHistory, KeepsTheLatestSamplesOldestFirst) {
  CostHistory h;
  for (uint64_t i = 0; i < CostHistory::kCapacity + 5; ++i) h.Add(i);
  auto s = h.Samples();
  ASSERT_EQ(s.size(), CostHistory::kCapacity);
  EXPECT_EQ(s.front(), 5u);
  EXPECT_EQ(s.back(), CostHistory::kCapacity + 4);
}

}  // namespace
}  // namespace df::scheduler
