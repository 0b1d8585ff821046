// End-to-end endgame (DESIGN.md "No tail"; issue 14): a parent that trickles the pieces it was
// asked for while staying connected must not hold a child's last pieces. The child re-requests
// the overdue ones from another parent, the first verified copy wins, and the download ends with
// the origin's bytes long before the trickle (or piece_timeout) would have let it.
//
// The slow parent is tests/e2e/lying_parent.h in its honest, rate-limited form; everything else
// is real processes: nginx, dfscheduler, a seed and a peer holding the task, and the child.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"
#include "common/piece.h"
#include "lying_parent.h"

namespace df {
namespace {

using bench::Process;
using namespace std::chrono_literals;

constexpr uint64_t kPiece = 4 * kMiB;
constexpr uint64_t kSize = 16 * kPiece;
// The slow parent: one 4 MiB piece takes 128 s, far over the test's budget.
constexpr uint64_t kTrickleBytesPerSec = 32 * 1024;

class EndgameTest : public ::testing::Test {
 protected:
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

  // A daemon on the test's scheduler; `extra` flags are appended. Its metrics on `metrics_port`
  // when non-zero.
  Process StartDaemon(const std::string& name, std::vector<std::string> extra,
                      uint16_t metrics_port = 0) {
    std::string sock = dir_.path() + "/" + name + ".sock";
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), scheduler_port_, "300ms");
    for (size_t i = 0; i + 1 < argv.size(); ++i) {
      if (argv[i] == "--metrics-port") argv[i + 1] = std::to_string(metrics_port);
    }
    argv.insert(argv.end(), {"--log-level", "info"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForUnixSocket(sock, 10000)) << name << " did not start";
    return p;
  }

  int Dfget(const std::string& name, const std::string& url, const std::string& out,
            const std::string& timeout, std::string* output) {
    return bench::Run(
        {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", dir_.path() + "/" + name + ".sock",
         url, "-O", out, "--timeout", timeout, "--piece-length", "4MiB"},
        output, 180000);
  }

  static double Metric(uint16_t port, const std::string& name) {
    return bench::ScrapeMetric(port, name);
  }

  bench::TempDir dir_;
  uint16_t scheduler_port_ = 0;
};

TEST_F(EndgameTest, ASlowParentDoesNotHoldTheLastPieces) {
  std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  std::string sha = bench::MakeFile(root + "/f.bin", kSize);
  bench::NginxOrigin origin(root);
  ASSERT_TRUE(origin.ok());
  const std::string url = origin.Url("f.bin");
  const std::string task_id = TaskId(TaskIdInput{url, "", "", kPiece, {}});

  scheduler_port_ = bench::FreePort();
  Process scheduler =
      Process::Start({Bin("scheduler/dfscheduler"), "--listen",
                      "127.0.0.1:" + std::to_string(scheduler_port_), "--metrics", "",
                      // No capacity assumption: the child is offered every parent, the slow
                      // one included (with one, one good parent would cover its booking).
                      "--capacity-prior", "0"},
                     dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));

  // 1. A seed and a peer that hold the task: the good parents. Their uplinks are limited so
  //    that the child's download lasts long enough for every parent to get requests.
  Process seed = StartDaemon("seed", {"--seed", "--upload-rate", "400mbit"});
  Process fast = StartDaemon("fast", {"--upload-rate", "400mbit"});
  std::this_thread::sleep_for(700ms);  // both hosts announced (no event to wait on)
  std::string out;
  ASSERT_EQ(Dfget("fast", url, dir_.path() + "/fast.bin", "120s", &out), 0) << out;

  // 2. The slow parent: honest bytes, trickled.
  testing::FakeParent slow(
      dir_.path() + "/slow", root + "/f.bin", task_id, url, kSize, kPiece,
      {.lie = false, .upload_rate_bytes_per_sec = kTrickleBytesPerSec, .name = "slow"});
  ASSERT_TRUE(slow.ok());
  ASSERT_TRUE(slow.Join(scheduler_port_).ok());

  // 3. The child: piece_timeout far beyond the test's budget, so only endgame can help.
  uint16_t metrics_port = bench::FreePort();
  Process child = StartDaemon("child", {"--piece-timeout", "300s"}, metrics_port);
  std::this_thread::sleep_for(700ms);
  auto start = std::chrono::steady_clock::now();
  int rc = Dfget("child", url, dir_.path() + "/child.bin", "60s", &out);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(rc, 0) << out;
  EXPECT_EQ(Sha256File(dir_.path() + "/child.bin").value(), sha);
  EXPECT_LT(took, 30s) << "the slow parent held the last pieces";
  double duplicate_bytes = Metric(metrics_port, "df_daemon_endgame_duplicate_bytes_total");
  EXPECT_GT(duplicate_bytes, 0) << "no endgame duplicate: the slow parent was never in the way";
  // Bounded: at most one duplicate per piece the slow parent held (a connection's pipeline).
  EXPECT_LE(duplicate_bytes, 2.0 * kPiece);
  std::printf("endgame: finished in %.1f s, %.0f duplicate bytes\n",
              std::chrono::duration<double>(took).count(), duplicate_bytes);
}

}  // namespace
}  // namespace df
