// End-to-end cut-through forwarding (docs/piece_protocol.md, "Forwarding a piece still
// arriving"; issue 16): real nginx, dfscheduler, a seed and two peers on loopback. The origin is
// slow and the seed fetches one piece at a time (--origin-concurrency 1: only then does it
// forward what it fetches), so it is still receiving most pieces when the peers ask for them: with
// cut-through (the default) pieces are forwarded while they arrive, every copy is right, and the
// origin serves the file once; with --cut-through=false on every daemon nothing is forwarded, the
// same swarm still completes.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"
#include "common/piece.h"

namespace df {
namespace {

using bench::Process;
using namespace std::chrono_literals;

constexpr uint64_t kPiece = 4 * kMiB;
constexpr uint64_t kSize = 16 * kPiece;

class CutThroughTest : public ::testing::TestWithParam<bool> {
 protected:
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

  Process StartDaemon(const std::string& name, std::vector<std::string> extra,
                      uint16_t metrics_port) {
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), scheduler_port_, "300ms");
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "--metrics-port") argv[i + 1] = std::to_string(metrics_port);
    }
    argv.insert(argv.end(),
                {"--log-level", "info", "--cut-through", GetParam() ? "true" : "false"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForUnixSocket(dir_.path() + "/" + name + ".sock", 10000)) << name;
    return p;
  }

  int Dfget(const std::string& name, const std::string& url, std::string* output) {
    return bench::Run(
        {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", dir_.path() + "/" + name + ".sock",
         url, "-O", dir_.path() + "/" + name + ".bin", "--timeout", "120s", "--piece-length",
         "4MiB"},
        output, 150000);
  }

  // An unlabelled metric scraped from 127.0.0.1:port; -1 when absent. The daemon refreshes its
  // piece-server gauges once a second, so this polls until `until` holds (or 5 s pass).
  static double Metric(uint16_t port, const std::string& name,
                       const std::function<bool(double)>& until) {
    double v = -1;
    for (int i = 0; i < 50; ++i) {
      double got = bench::ScrapeMetric(port, name);
      if (got >= 0) {
        v = got;
        if (until(v)) return v;
      }
      std::this_thread::sleep_for(100ms);
    }
    return v;
  }

  bench::TempDir dir_;
  uint16_t scheduler_port_ = 0;
};

TEST_P(CutThroughTest, PiecesStillArrivingAreForwardedOnlyWhenOn) {
  const bool on = GetParam();
  std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  std::string sha = bench::MakeFile(root + "/f.bin", kSize);
  // One origin connection (the seed forwards what it fetches from the origin only then) at
  // 8 MB/s: ~8 s for the file, so the peers ask for pieces the seed is still receiving.
  bench::NginxOrigin origin(root, "8m");
  ASSERT_TRUE(origin.ok());
  const std::string url = origin.Url("f.bin");

  scheduler_port_ = bench::FreePort();
  Process scheduler =
      Process::Start({Bin("scheduler/dfscheduler"), "--listen",
                      "127.0.0.1:" + std::to_string(scheduler_port_), "--metrics", ""},
                     dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));
  const std::vector<std::string> names = {"seed", "a", "b"};
  std::vector<uint16_t> metrics;
  std::vector<Process> daemons;
  for (const std::string& name : names) {
    metrics.push_back(bench::FreePort());
    std::vector<std::string> extra;
    if (name == "seed") extra = {"--seed", "--origin-concurrency", "1"};
    daemons.push_back(StartDaemon(name, extra, metrics.back()));
  }
  std::this_thread::sleep_for(700ms);  // every host announced (no event to wait on)

  std::vector<std::future<std::pair<int, std::string>>> runs;
  for (const char* peer : {"a", "b"}) {
    runs.push_back(std::async(std::launch::async, [&, peer] {
      std::string out;
      int rc = Dfget(peer, url, &out);
      return std::make_pair(rc, out);
    }));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    auto [rc, out] = runs[i].get();
    ASSERT_EQ(rc, 0) << out;
    EXPECT_EQ(Sha256File(dir_.path() + "/" + names[i + 1] + ".bin").value(), sha);
  }
  EXPECT_LE(origin.BytesServed(), kSize + kPiece) << "the origin served the file more than once";

  double forwarded = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    double v = Metric(metrics[i], "df_daemon_forwarded_pieces_total",
                      [&](double x) { return !on || x > 0 || names[i] != "seed"; });
    ASSERT_GE(v, 0) << names[i] << ": no df_daemon_forwarded_pieces_total";
    std::printf("%s forwarded %.0f pieces still arriving\n", names[i].c_str(), v);
    forwarded += v;
  }
  if (on) {
    EXPECT_GT(forwarded, 0) << "nothing was forwarded while it arrived";
  } else {
    EXPECT_EQ(forwarded, 0) << "forwarded with --cut-through=false";
  }
}

INSTANTIATE_TEST_SUITE_P(OnAndOff, CutThroughTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("On") : std::string("Off");
                         });

}  // namespace
}  // namespace df
