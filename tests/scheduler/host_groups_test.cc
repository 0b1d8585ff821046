// InferHostGroups on string fixtures: racks seen through pair bandwidths, and the networks
// where it must find no groups (uniform links, bandwidth that follows the parent's uplink, a
// fast prediction across two racks, too little data).
#include "scheduler/host_groups.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace df::scheduler {
namespace {

using Groups = std::unordered_map<std::string, std::string>;

// Every ordered pair of `hosts` (child, parent), bandwidth from `rate(child, parent)`.
template <typename Rate>
std::vector<PairBandwidth> AllPairs(const std::vector<std::string>& hosts, Rate rate) {
  std::vector<PairBandwidth> out;
  for (const auto& c : hosts) {
    for (const auto& p : hosts) {
      if (c != p) out.push_back({c, p, rate(c, p)});
    }
  }
  return out;
}

// Racks by the first letter of the host id: 10-12.6 MB/s inside, 0.2-4 MB/s across (what the
// ml evaluator predicted on the rig's `racks` topology), varied by a hash so no two are equal.
double RackRate(const std::string& c, const std::string& p) {
  const double jitter = static_cast<double>(std::hash<std::string>{}(c + p) % 1000) / 1000.0;
  return c[0] == p[0] ? 10e6 + 2.6e6 * jitter : 0.2e6 + 3.8e6 * jitter;
}

const std::vector<std::string> kRackHosts = {"p1", "p2", "p3", "p4", "q1", "q2",
                                             "q3", "s1", "s2", "s3", "s4"};

TEST(InferHostGroups, FastInsideAndSlowAcrossAreRacks) {
  const Groups g = InferHostGroups(AllPairs(kRackHosts, RackRate));
  ASSERT_EQ(g.size(), kRackHosts.size());
  EXPECT_EQ(g.at("p1"), "~p1");
  EXPECT_EQ(g.at("p4"), "~p1");
  EXPECT_EQ(g.at("q2"), "~q1");
  EXPECT_EQ(g.at("s3"), "~s1");
  EXPECT_NE(g.at("p1"), g.at("q1"));
}

TEST(InferHostGroups, OneDirectionPerPairIsEnoughAndASeedJoinsItsRack) {
  // The seed is only ever a parent: its pairs are known one way.
  auto pairs = AllPairs(kRackHosts, RackRate);
  for (const auto& h : kRackHosts) pairs.push_back({h, "seed", RackRate(h, "p0")});
  const Groups g = InferHostGroups(pairs);
  ASSERT_TRUE(g.contains("seed"));
  EXPECT_EQ(g.at("seed"), g.at("p2"));
}

TEST(InferHostGroups, AHostWithOnlySlowPairsHasNoGroup) {
  auto pairs = AllPairs(kRackHosts, RackRate);
  for (const auto& h : kRackHosts) pairs.push_back({"lonely", h, 0.5e6});
  const Groups g = InferHostGroups(pairs);
  EXPECT_FALSE(g.contains("lonely"));
  EXPECT_EQ(g.size(), kRackHosts.size());
}

TEST(InferHostGroups, UniformLinksHaveNoGroups) {
  auto rate = [](const std::string& c, const std::string& p) {
    return 20e6 * (1 + 0.2 * static_cast<double>(std::hash<std::string>{}(c + p) % 100) / 100);
  };
  std::string why;
  EXPECT_TRUE(InferHostGroups(AllPairs(kRackHosts, rate), {}, &why).empty());
  EXPECT_EQ(why, "no fast and slow pairs 3.0x apart");
}

// hetero: what a child gets follows its parent's uplink (25 to 200 Mbit/s), not the pair.
TEST(InferHostGroups, BandwidthThatFollowsTheParentsUplinkHasNoGroups) {
  const std::vector<std::string> hosts = {"a1", "a2", "a3", "b1", "b2", "b3",
                                          "c1", "c2", "c3", "d1", "d2", "d3"};
  auto rate = [](const std::string&, const std::string& p) {
    return p[0] == 'a' ? 3e6 : p[0] == 'b' ? 6e6 : p[0] == 'c' ? 12e6 : 24e6;
  };
  EXPECT_TRUE(InferHostGroups(AllPairs(hosts, rate)).empty());
}

TEST(InferHostGroups, AFastPredictionAcrossRacksChainsThemAndNothingIsTrusted) {
  auto pairs = AllPairs(kRackHosts, RackRate);
  for (auto& p : pairs) {
    if ((p.child == "p1" && p.parent == "q1") || (p.child == "q1" && p.parent == "p1")) {
      p.bytes_per_sec = 11e6;
    }
  }
  std::string why;
  EXPECT_TRUE(InferHostGroups(pairs, {}, &why).empty());
  EXPECT_NE(why.find("slow of"), std::string::npos) << why;
}

TEST(InferHostGroups, TooFewPairsOrNoBandwidthGiveNoGroups) {
  EXPECT_TRUE(InferHostGroups({}).empty());
  EXPECT_TRUE(InferHostGroups({{"p1", "p2", 10e6}, {"q1", "q2", 10e6}, {"p1", "q1", 1e6}}).empty());
  // Zero, negative, infinite and NaN bandwidths, and a host paired with itself, are ignored.
  std::vector<PairBandwidth> bad;
  for (const auto& h : kRackHosts) {
    bad.push_back({h, "x", 0});
    bad.push_back({h, "y", -5});
    bad.push_back({h, "z", INFINITY});
    bad.push_back({h, "w", NAN});
    bad.push_back({h, h, 10e6});
  }
  EXPECT_TRUE(InferHostGroups(bad).empty());
  auto pairs = AllPairs(kRackHosts, RackRate);
  pairs.insert(pairs.end(), bad.begin(), bad.end());
  EXPECT_EQ(InferHostGroups(pairs), InferHostGroups(AllPairs(kRackHosts, RackRate)));
}

}  // namespace
}  // namespace df::scheduler
