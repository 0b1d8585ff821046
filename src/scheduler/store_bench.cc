// store_bench: what a Store call costs, Redis against memory in the same run. Starts its own
// redis-server on a free loopback port (or uses --redis URL, a scratch Redis: scheduler:* keys are
// written there) and times,
// on each store, N AddProbe, N AppendRecords of a 64-record batch, N ListProbes(src) and a few
// ListProbes("") over the whole graph. Prints ops/s and mean latency per op, and the ratio
// Redis / memory of the mean latency (docs/measurement.md).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/version.h"
#include "bench/harness.h"
#include "scheduler/store.h"

namespace {

using df::scheduler::BandwidthRecord;
using df::scheduler::Store;
using Clock = std::chrono::steady_clock;

struct Options {
  int n = 2000;
  int hosts = 100;
  int queue_length = 5;
  std::string redis_url;
};

struct Timing {
  int ops = 0;
  double seconds = 0;
  double ops_per_sec() const { return seconds > 0 ? ops / seconds : 0; }
  double mean_us() const { return ops > 0 ? seconds * 1e6 / ops : 0; }
};

// Runs `op(i)` n times; false from op aborts the run (the store failed).
template <typename Op>
Timing Time(int n, Op&& op) {
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    if (!op(i)) {
      std::fprintf(stderr, "store_bench: call %d failed\n", i);
      std::exit(1);
    }
  }
  return {n, std::chrono::duration<double>(Clock::now() - start).count()};
}

std::string HostId(int i) { return "host-" + std::to_string(i) + "-10.0.0." + std::to_string(i); }

struct Results {
  Timing add_probe, append_records, list_src, list_all;
};

Results Run(Store& store, const Options& o) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> pick(0, o.hosts - 1);
  Results r;
  r.add_probe = Time(o.n, [&](int i) {
    int src = pick(rng), dst = pick(rng);
    return store
        .AddProbe(HostId(src), HostId(dst), {1'000'000 + i, 1'700'000'000'000 + i},
                  static_cast<size_t>(o.queue_length))
        .ok();
  });
  // Batches are built before the clock starts: the figure is the store's, not the caller's.
  std::vector<std::vector<BandwidthRecord>> batches(static_cast<size_t>(o.n));
  for (int i = 0; i < o.n; ++i) {
    for (uint64_t k = 0; k < 64; ++k) {
      batches[i].push_back({HostId(pick(rng)), HostId(pick(rng)), 4u << 20, 20'000'000u + k, i});
    }
  }
  r.append_records =
      Time(o.n, [&](int i) { return store.AppendRecords(batches[i], 100'000).ok(); });
  r.list_src = Time(o.n, [&](int) { return store.ListProbes(HostId(pick(rng))).ok(); });
  r.list_all = Time(std::max(1, o.n / 100), [&](int) { return store.ListProbes("").ok(); });
  return r;
}

void Print(const char* op, const Timing& memory, const Timing& redis) {
  std::printf("%-24s %8d %14.0f %12.2f %14.0f %12.2f %10.1fx\n", op, memory.ops,
              memory.ops_per_sec(), memory.mean_us(), redis.ops_per_sec(), redis.mean_us(),
              memory.mean_us() > 0 ? redis.mean_us() / memory.mean_us() : 0);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Store throughput and latency: Redis against memory in the same run"};
  app.set_version_flag("--version", df::VersionLine("store_bench"));
  app.add_option("--n", o.n, "operations per workload")->check(CLI::PositiveNumber);
  app.add_option("--hosts", o.hosts, "host ids the probes and records are spread over")
      ->check(CLI::PositiveNumber);
  app.add_option("--queue-length", o.queue_length, "probe samples kept per edge")
      ->check(CLI::PositiveNumber);
  app.add_option("--redis", o.redis_url,
                 "use this scratch Redis (scheduler:* keys are written) instead of starting one");
  CLI11_PARSE(app, argc, argv);

  std::unique_ptr<df::bench::RedisServer> server;
  if (o.redis_url.empty()) {
    server = std::make_unique<df::bench::RedisServer>();
    if (!server->ok()) {
      std::fprintf(stderr, "store_bench: redis-server did not start (scripts/install-deps.sh)\n");
      return 1;
    }
    o.redis_url = server->Url();
  }
  auto memory = df::scheduler::NewStore("memory");
  auto redis = df::scheduler::NewStore(o.redis_url);
  if (!memory.ok() || !redis.ok() || !(*redis)->Ping().ok()) {
    std::fprintf(stderr, "store_bench: cannot open the stores (%s)\n", o.redis_url.c_str());
    return 1;
  }
  const Results m = Run(**memory, o);
  const Results r = Run(**redis, o);

  std::printf("store_bench: n=%d hosts=%d queue_length=%d redis=%s (loopback, one connection)\n",
              o.n, o.hosts, o.queue_length, o.redis_url.c_str());
  std::printf("%-24s %8s %14s %12s %14s %12s %10s\n", "operation", "ops", "memory ops/s",
              "memory us", "redis ops/s", "redis us", "redis/mem");
  Print("AddProbe", m.add_probe, r.add_probe);
  Print("AppendRecords(64)", m.append_records, r.append_records);
  Print("ListProbes(src)", m.list_src, r.list_src);
  Print("ListProbes(all)", m.list_all, r.list_all);
  return 0;
}
