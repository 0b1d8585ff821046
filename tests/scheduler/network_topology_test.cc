// NetworkTopology on its own, over the memory store (and a store that is down).
#include "scheduler/network_topology.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
using namespace std::chrono_literals;

v1::Host HostNamed(const std::string& id) {
  v1::Host h;
  h.set_id(id);
  h.set_ip("127.0.0.1");
  h.set_piece_port(4005);
  return h;
}

std::vector<v1::Host> Hosts(int n, const std::string& prefix = "h") {
  std::vector<v1::Host> out;
  for (int i = 0; i < n; ++i) out.push_back(HostNamed(prefix + std::to_string(i)));
  return out;
}

v1::Probe ProbeOf(const std::string& dst, int64_t rtt_ns) {
  v1::Probe p;
  p.set_host_id(dst);
  p.set_rtt_ns(rtt_ns);
  p.set_created_unix_ms(0);  // replaced by now
  return p;
}

struct Fixture {
  explicit Fixture(NetworkTopologyOptions options = {}, const std::string& url = "memory")
      : store(NewStore(url).value()), topology(store.get(), options) {}
  std::unique_ptr<Store> store;
  NetworkTopology topology;
};

TEST(NetworkTopology, AssignsTheLeastProbedNeverItselfNorADuplicate) {
  Fixture f;
  auto candidates = Hosts(8);
  candidates.push_back(HostNamed("h3"));  // duplicate
  candidates.push_back(HostNamed("src"));
  auto first = f.topology.AssignTargets("src", candidates);
  ASSERT_EQ(first.size(), 5u);
  std::set<std::string> ids;
  for (const auto& h : first) ids.insert(h.id());
  EXPECT_EQ(ids.size(), 5u);
  EXPECT_FALSE(ids.contains("src"));
  // The 3 never assigned come before any of the 5 assigned once.
  auto second = f.topology.AssignTargets("src", Hosts(8));
  std::set<std::string> fresh;
  for (const auto& h : second) {
    if (!ids.contains(h.id())) fresh.insert(h.id());
  }
  EXPECT_EQ(fresh.size(), 3u);
  // Counts went to the store.
  auto counts = f.store->ProbedCounts({"h0", "h1", "h2", "h3", "h4", "h5", "h6", "h7"}).value();
  uint64_t sum = 0;
  for (uint64_t c : counts) sum += c;
  EXPECT_EQ(sum, 10u);
}

TEST(NetworkTopology, EveryHostIsProbedAndNobodyTwiceAsOftenAsNeeded) {
  NetworkTopologyOptions o;
  o.probe_sample_size = 50;
  Fixture f(o);
  auto all = Hosts(200);
  for (int round = 0; round < 2; ++round) {
    for (const auto& src : all) {
      auto t = f.topology.AssignTargets(src.id(), all);
      EXPECT_EQ(t.size(), 5u);
    }
  }
  uint64_t min = UINT64_MAX, max = 0;
  for (const auto& h : all) {
    min = std::min(min, f.topology.ProbedCount(h.id()));
    max = std::max(max, f.topology.ProbedCount(h.id()));
  }
  EXPECT_GE(min, 1u);
  EXPECT_LE(max, 20u);  // 10 on average
}

TEST(NetworkTopology, KeepsTheLastSamplesAndTheirMovingAverage) {
  NetworkTopologyOptions o;
  o.probe_queue_length = 3;
  Fixture f(o);
  for (int64_t rtt : {100, 200, 300, 400, 500}) {
    EXPECT_EQ(f.topology.Record("a", {ProbeOf("b", rtt * 1000)}), 1u);
  }
  // 300, 400, 500 µs kept: 300, then 0.1 x 300 + 0.9 x 400 = 390, then 489 µs.
  EXPECT_EQ(f.topology.AverageRtt("a", "b"), 489'000);
  EXPECT_EQ(f.topology.AverageRtt("b", "a"), 489'000) << "the reverse direction answers";
  EXPECT_EQ(f.topology.AverageRtt("a", "c"), std::nullopt);
  auto stored = f.store->ListProbes("a").value();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].samples.size(), 3u);
  EXPECT_EQ(stored[0].average_rtt_ns, 489'000);
}

TEST(NetworkTopology, IgnoresInvalidProbes) {
  Fixture f;
  std::vector<v1::Probe> probes = {
      ProbeOf("", 1000), ProbeOf("a", 1000),           ProbeOf("b", 0),
      ProbeOf("c", -5),  ProbeOf("d", 60'000'000'000), ProbeOf("e", 1000),
      ProbeOf("e", 2000)};
  EXPECT_EQ(f.topology.Record("a", probes), 1u);  // only the first "e"
  EXPECT_EQ(f.topology.AverageRtt("a", "e"), 1000);
  std::vector<v1::Probe> many;
  for (int i = 0; i < 100; ++i) many.push_back(ProbeOf("x" + std::to_string(i), 1000));
  EXPECT_EQ(f.topology.Record("a", many), NetworkTopology::kMaxProbesPerMessage);
}

TEST(NetworkTopology, FailedProbesCountAgainstTheTargetUntilASuccess) {
  Fixture f;
  f.topology.RecordFailure("a", "t", "connect: refused");
  f.topology.RecordFailure("a", "t", "connect: refused");  // same source: once
  EXPECT_EQ(f.topology.ProbeFailures("t"), 1u);
  f.topology.RecordFailure("b", "t", "timeout");
  f.topology.RecordFailure("c", "t", "timeout");
  EXPECT_TRUE(f.topology.Unreachable("t"));
  f.topology.Record("d", {ProbeOf("t", 1000)});
  EXPECT_EQ(f.topology.ProbeFailures("t"), 0u);
  EXPECT_FALSE(f.topology.Unreachable("t"));
}

TEST(NetworkTopology, RemovedHostLosesItsProbesBothWaysHereAndInTheStore) {
  NetworkTopologyOptions o;
  o.refresh_interval = 20ms;
  Fixture f(o);
  f.topology.Start();
  f.topology.Record("a", {ProbeOf("b", 1000), ProbeOf("c", 1000)});
  f.topology.Record("b", {ProbeOf("a", 1000), ProbeOf("c", 1000)});
  f.topology.RecordFailure("c", "a", "refused");
  f.topology.RemoveHost("a");
  EXPECT_EQ(f.topology.AverageRtt("a", "b"), std::nullopt);
  EXPECT_EQ(f.topology.AverageRtt("a", "c"), std::nullopt);
  EXPECT_EQ(f.topology.ProbeFailures("a"), 0u);
  ASSERT_EQ(f.topology.Edges().size(), 1u);  // b -> c
  // A late report about the removed host is ignored.
  EXPECT_EQ(f.topology.Record("b", {ProbeOf("a", 1000)}), 0u);
  std::this_thread::sleep_for(200ms);  // the background thread deleted it from the store
  auto stored = f.store->ListProbes("").value();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].src_host_id, "b");
  EXPECT_EQ(stored[0].dst_host_id, "c");
  ASSERT_TRUE(f.topology.Refresh().ok());
  EXPECT_EQ(f.topology.Edges().size(), 1u) << "a reload does not bring it back";
  // Offered again by the scheduler, it is probed again.
  f.topology.AssignTargets("b", {HostNamed("a")});
  EXPECT_EQ(f.topology.Record("b", {ProbeOf("a", 1000)}), 1u);
}

TEST(NetworkTopology, ReloadsWhatAnotherSchedulerWrote) {
  auto store = NewStore("memory").value();
  NetworkTopology a(store.get(), {});
  NetworkTopology b(store.get(), {});
  a.Record("x", {ProbeOf("y", 7000)});
  EXPECT_EQ(b.AverageRtt("x", "y"), std::nullopt);
  ASSERT_TRUE(b.Refresh().ok());
  EXPECT_EQ(b.AverageRtt("x", "y"), 7000);
}

TEST(NetworkTopology, WorksFromMemoryWhenTheStoreIsDown) {
  NetworkTopologyOptions o;
  o.probe_count = 2;
  Fixture f(o, "redis://127.0.0.1:1/0");  // nothing listens on port 1
  auto first = f.topology.AssignTargets("src", Hosts(4));
  ASSERT_EQ(first.size(), 2u);
  auto second = f.topology.AssignTargets("src", Hosts(4));
  ASSERT_EQ(second.size(), 2u);
  std::set<std::string> ids;
  for (const auto& h : first) ids.insert(h.id());
  for (const auto& h : second) ids.insert(h.id());
  EXPECT_EQ(ids.size(), 4u) << "local counts spread the targets";
  EXPECT_EQ(f.topology.Record("src", {ProbeOf("h0", 1000)}), 1u);
  EXPECT_EQ(f.topology.AverageRtt("src", "h0"), 1000);
  EXPECT_FALSE(f.topology.Refresh().ok());
  EXPECT_EQ(f.topology.AverageRtt("src", "h0"), 1000) << "the local copy is kept";
}

}  // namespace
}  // namespace df::scheduler
