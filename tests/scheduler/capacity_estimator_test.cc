// CapacityEstimator: capacities learned from piece records, with time given explicitly.
#include "scheduler/capacity_estimator.h"

#include <gtest/gtest.h>

#include <chrono>

namespace df::scheduler {
namespace {

using namespace std::chrono_literals;
using Clock = CapacityEstimator::Clock;

constexpr uint64_t kMiB = 1 << 20;

// Feeds `seconds` of back-to-back pieces of `piece` bytes from `parent` to each child in
// `children` at once, each transfer at `per_transfer` bytes/s, starting at `t0`.
Clock::time_point Feed(CapacityEstimator& e, const std::string& parent,
                       const std::vector<std::string>& children, uint64_t piece,
                       double per_transfer, int seconds, Clock::time_point t0) {
  const auto piece_time = std::chrono::nanoseconds(
      static_cast<int64_t>(static_cast<double>(piece) / per_transfer * 1e9));
  Clock::time_point t = t0;
  while (t - t0 < std::chrono::seconds(seconds)) {
    t += piece_time;
    for (const auto& c : children) e.AddTransfer(c, parent, piece, piece_time, t);
    e.Advance(t);
  }
  return t;
}

TEST(CapacityEstimatorTest, AggregateOverConcurrentTransfersIsTheUploadCapacity) {
  CapacityEstimator e;
  const auto t0 = Clock::now();
  // 4 children at 6.25 MB/s each: the parent's link carries 25 MB/s, no one transfer does.
  auto t = Feed(e, "p", {"a", "b", "c", "d"}, kMiB, 6.25e6, 10, t0);
  e.Advance(t + 4s);
  const auto l = e.Get("p");
  EXPECT_NEAR(static_cast<double>(l.upload_peak), 25e6, 25e6 * 0.1);
  EXPECT_NEAR(static_cast<double>(l.upload_busy), 25e6, 25e6 * 0.1);
  // Each child received one transfer at a time: its download is not shown to be saturated.
  EXPECT_NEAR(static_cast<double>(e.Get("a").download_peak), 6.25e6, 6.25e6 * 0.1);
  EXPECT_EQ(e.Get("a").download_busy, 0u);
  auto [rate, records] = e.Pair("a", "p");
  EXPECT_NEAR(rate, 6.25e6, 1e3);
  EXPECT_GT(records, 10u);
}

TEST(CapacityEstimatorTest, NothingAnnouncedMeansLearnedRateWithHeadroomAndUnknownBeforeRecords) {
  CapacityEstimator e;
  EXPECT_EQ(e.UploadCapacity("p", 0, 0, false), 0u);                    // unknown: no accounting
  EXPECT_EQ(e.UploadCapacity("p", 0, 12'500'000, false), 12'500'000u);  // the prior, until records
  auto t = Feed(e, "p", {"a", "b"}, kMiB, 10e6, 8, Clock::now());
  e.Advance(t + 4s);
  EXPECT_NEAR(static_cast<double>(e.UploadCapacity("p", 0, 0, false)), 20e6 * 1.25, 20e6 * 0.15);
  // More than the prior: the host showed it.
  EXPECT_NEAR(static_cast<double>(e.UploadCapacity("p", 0, 12'500'000, false)), 20e6 * 1.25,
              20e6 * 0.15);
  // Less than a prior, on a busy link: the records win for the upload, never for the download.
  EXPECT_NEAR(static_cast<double>(e.UploadCapacity("p", 0, 100'000'000, false)), 20e6 * 1.25,
              20e6 * 0.15);
  t = Feed(e, "x", {"c"}, kMiB, 5e6, 8, t);
  t = Feed(e, "y", {"c"}, kMiB, 5e6, 8, t - 8s);
  e.Advance(t + 4s);
  EXPECT_EQ(e.DownloadCapacity("c", 0, 100'000'000), 100'000'000u);
}

TEST(CapacityEstimatorTest, OneChildShowsASlowUplinkOnceTheLinkIsFullyBooked) {
  CapacityEstimator e;
  // One child at 3 MB/s, all the time: not busy, but active.
  auto t = Feed(e, "p", {"a"}, kMiB, 3e6, 8, Clock::now());
  e.Advance(t + 4s);
  EXPECT_NEAR(static_cast<double>(e.Get("p").upload_active), 3e6, 3e6 * 0.1);
  // Booked below its prior, the host may simply not have been asked for more.
  EXPECT_EQ(e.UploadCapacity("p", 0, 12'500'000, /*fully_booked=*/false), 12'500'000u);
  // Booked in full, it gave a quarter: its link is the limit.
  EXPECT_NEAR(static_cast<double>(e.UploadCapacity("p", 0, 12'500'000, /*fully_booked=*/true)),
              3e6 * 1.25, 3e6 * 0.15);
}

TEST(CapacityEstimatorTest, AnAnnouncedRateHoldsUntilABusyLinkShowsClearlyLess) {
  CapacityEstimator e;
  // One child at 10 MB/s: not busy, proves nothing against an announced 125 MB/s (1 Gbit/s).
  auto t = Feed(e, "p", {"a"}, kMiB, 10e6, 8, Clock::now());
  e.Advance(t + 4s);
  EXPECT_EQ(e.UploadCapacity("p", 125'000'000, 0, false), 125'000'000u);
  // Three children sharing the link at 10 MB/s in total: the link is the limit.
  t = Feed(e, "p", {"a", "b", "c"}, kMiB, 3.33e6, 8, t);
  e.Advance(t + 4s);
  const uint64_t cap = e.UploadCapacity("p", 125'000'000, 0, false);
  EXPECT_LT(cap, 20'000'000u);
  EXPECT_GT(cap, 9'000'000u);
  // An announcement that the records bear out is kept as it is.
  EXPECT_EQ(e.UploadCapacity("p", 11'000'000, 0, false), 11'000'000u);
}

TEST(CapacityEstimatorTest, APeakFadesWithItsHalfLife) {
  CapacityEstimator::Options o;
  o.peak_half_life = 10s;
  CapacityEstimator e(o);
  auto t = Feed(e, "p", {"a"}, kMiB, 20e6, 5, Clock::now());
  e.Advance(t + 4s);
  const double peak = static_cast<double>(e.Get("p").upload_peak);
  e.Advance(t + 24s);  // 20 s later: two half-lives
  EXPECT_NEAR(static_cast<double>(e.Get("p").upload_peak), peak / 4, peak * 0.05);
}

TEST(CapacityEstimatorTest, ARecordLongerThanTheRingIsCountedOnceAndNothingCrashes) {
  CapacityEstimator e;
  const auto t0 = Clock::now();
  e.AddTransfer("a", "p", 100 * kMiB, 600s, t0 + 600s);  // 100 MiB over 10 minutes
  e.AddTransfer("a", "p", kMiB, 1ns, t0 + 600s);         // implausibly fast: one bucket
  e.Advance(t0 + 700s);
  EXPECT_GT(e.Get("p").upload_peak, 0u);
  e.RemoveHost("p");
  EXPECT_EQ(e.Get("p").upload_peak, 0u);
  EXPECT_EQ(e.Pair("a", "p").second, 0u);
}

TEST(CapacityEstimatorTest, AnotherSchedulersViewIsAdoptedOnlyForHostsNotSeenHere) {
  CapacityEstimator e;
  const auto now = Clock::now();
  e.MergeRemote("p", 25'000'000, 0, now);
  EXPECT_EQ(e.Get("p").upload_peak, 25'000'000u);
  EXPECT_EQ(e.SharedRates("p").first, 25'000'000u);
  e.MergeRemote("p", 5'000'000, 0, now);  // a newer remote view replaces the older
  EXPECT_EQ(e.Get("p").upload_peak, 5'000'000u);
  // Records of its own: the remote view no longer applies.
  auto t = Feed(e, "q", {"a", "b"}, kMiB, 10e6, 8, now);
  e.Advance(t + 4s);
  const auto own = e.SharedRates("q").first;
  EXPECT_NEAR(static_cast<double>(own), 20e6, 2e6);
  e.MergeRemote("q", 1'000, 0, t);
  EXPECT_EQ(e.SharedRates("q").first, own);
  ASSERT_EQ(e.Snapshot().size(), 4u);  // p, q, a, b
}

}  // namespace
}  // namespace df::scheduler
