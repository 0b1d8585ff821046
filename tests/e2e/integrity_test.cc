// End-to-end content integrity (issue 14): a parent that serves wrong bytes with a matching
// CRC32C (a liar, or a disk that rotted under a consistent checksum) is caught on its first
// piece by the origin digests the seed reported to the scheduler, blocked for the task, and the
// child still ends with the origin's bytes.
//
// The liar is tests/e2e/lying_parent.h; everything else is real processes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"
#include "lying_parent.h"

namespace df {
namespace {

using bench::Process;
using namespace std::chrono_literals;

constexpr uint64_t kPiece = 4 * kMiB;
constexpr uint64_t kSize = 6 * kPiece;

class IntegrityTest : public ::testing::Test {
 protected:
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

  Process StartDaemon(const std::string& name, bool seed) {
    std::string sock = dir_.path() + "/" + name + ".sock";
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), scheduler_port_, "300ms");
    argv.insert(argv.end(), {"--log-level", "info"});
    if (seed) argv.push_back("--seed");
    Process p = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForUnixSocket(sock, 10000)) << name << " did not start";
    return p;
  }

  int Dfget(const std::string& name, const std::string& url, const std::string& out,
            std::string* output) {
    return bench::Run(
        {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", dir_.path() + "/" + name + ".sock",
         url, "-O", out, "--timeout", "120s", "--piece-length", "4MiB"},
        output, 180000);
  }

  std::string Log(const std::string& name) {
    std::ifstream in(dir_.path() + "/" + name + ".log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  bench::TempDir dir_;
  uint16_t scheduler_port_ = 0;
};

TEST_F(IntegrityTest, ALyingParentIsCaughtOnItsFirstPieceAndBlocked) {
  std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  std::string sha = bench::MakeFile(root + "/f.bin", kSize);
  bench::NginxOrigin origin(root);
  ASSERT_TRUE(origin.ok());
  const std::string url = origin.Url("f.bin");
  const std::string task_id = TaskId(TaskIdInput{url, "", "", kPiece, {}});

  scheduler_port_ = bench::FreePort();
  Process scheduler = Process::Start(
      {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:" + std::to_string(scheduler_port_),
       "--metrics", "", "--schedule-timeout", "2s"},
      dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));

  // 1. The seed fetches the task from the origin and reports each piece's digest.
  {
    Process seed = StartDaemon("seed", true);
    Process first = StartDaemon("first", false);
    std::this_thread::sleep_for(700ms);  // both hosts announced
    std::string out;
    ASSERT_EQ(Dfget("first", url, dir_.path() + "/first.bin", &out), 0) << out;
    ASSERT_EQ(Sha256File(dir_.path() + "/first.bin").value(), sha);
  }  // seed and first stop: they leave, and only the liar will be left to offer

  // 2. The liar: every piece flipped, with CRCs that match the flipped bytes.
  testing::LyingParent liar(dir_.path() + "/liar", root + "/f.bin", task_id, url, kSize, kPiece);
  ASSERT_TRUE(liar.ok());
  ASSERT_TRUE(liar.Join(scheduler_port_).ok());
  std::this_thread::sleep_for(300ms);

  // 3. A new peer: its only candidate is the liar.
  Process victim = StartDaemon("victim", false);
  std::this_thread::sleep_for(700ms);
  std::string out;
  ASSERT_EQ(Dfget("victim", url, dir_.path() + "/victim.bin", &out), 0) << out;
  EXPECT_EQ(Sha256File(dir_.path() + "/victim.bin").value(), sha)
      << "bytes from a lying parent reached the output";
  EXPECT_GE(liar.pieces_uploaded(), 1u) << "the liar was never asked: nothing was tested";
  EXPECT_LE(liar.pieces_uploaded(), 3u) << "the liar was not blocked after its first piece";
  EXPECT_NE(Log("victim").find("served a corrupt piece"), std::string::npos);
}

}  // namespace
}  // namespace df

namespace df {
namespace {

// Issue 14: a parent that stays connected but gets no new pieces (its own origin fetch failed)
// held its children forever. Now its availability streams end when its download fails, and the
// child moves on: here to the origin, which answers 404, so it fails fast with that error.
TEST_F(IntegrityTest, AChildOfASeedWhoseOriginFetchFailedIsNotHeldForever) {
  std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  bench::MakeFile(root + "/f.bin", 64 * kMiB);
  bench::NginxOrigin origin(root, "1m");  // the seed needs ~16 s: time to pull the rug
  ASSERT_TRUE(origin.ok());
  const std::string url = origin.Url("f.bin");
  scheduler_port_ = bench::FreePort();
  Process scheduler =
      Process::Start({Bin("scheduler/dfscheduler"), "--listen",
                      "127.0.0.1:" + std::to_string(scheduler_port_), "--metrics", ""},
                     dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));
  Process seed = StartDaemon("seed", true);
  Process child = StartDaemon("child", false);
  std::this_thread::sleep_for(700ms);

  std::string out;
  int rc = -1;
  auto start = std::chrono::steady_clock::now();
  std::thread client([&] { rc = Dfget("child", url, dir_.path() + "/child.bin", &out); });
  std::this_thread::sleep_for(3s);           // the seed is fetching; the child is its child
  std::filesystem::remove(root + "/f.bin");  // every further origin request is a 404
  client.join();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("404"), std::string::npos) << out;
  EXPECT_LT(took, 60s) << "the child waited on a parent that could get nothing more";
}

}  // namespace
}  // namespace df
