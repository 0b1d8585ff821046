// End-to-end: dfget -> dfdaemon -> a real nginx origin, no scheduler (back to source).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/digest.h"
#include "common/ids.h"
#include "dfdaemon.grpc.pb.h"
#include "bench/harness.h"

namespace df {
namespace {

using bench::NginxOrigin;
using bench::Process;
using bench::TempDir;

constexpr uint64_t kMiB = 1024 * 1024;

class BackToSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/origin";
    std::filesystem::create_directories(root_);
    std::filesystem::create_directories(dir_.path() + "/out");
    sock_ = dir_.path() + "/dfdaemon.sock";
  }

  Process StartDaemon() {
    Process p = Process::Start(
        {Bin("daemon/dfdaemon"), "--sock", sock_, "--data-dir", dir_.path() + "/data",
         "--grpc-port", "0", "--piece-port", "0", "--metrics-port", "0", "--log-level", "info"},
        dir_.path() + "/dfdaemon.log");
    EXPECT_TRUE(bench::WaitForUnixSocket(sock_, 10000)) << "dfdaemon did not start";
    return p;
  }

  int Dfget(const std::vector<std::string>& extra, std::string* out) {
    std::vector<std::string> argv = {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return bench::Run(argv, out);
  }

  std::string Out(const std::string& name) { return dir_.path() + "/out/" + name; }
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

  // Entries in the output dir, to check that a failure leaves no partial or temp file.
  size_t OutputEntries() {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir_.path() + "/out")) (void)e, ++n;
    return n;
  }

  TempDir dir_;
  std::string root_, sock_;
};

TEST_F(BackToSourceTest, Downloads256MiBWithTheRightSha256) {
  std::string sha = bench::MakeFile(root_ + "/big.bin", 256 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out;
  ASSERT_EQ(Dfget({origin.Url("big.bin"), "-O", Out("big.bin"), "--digest", "sha256:" + sha}, &out),
            0)
      << out;
  EXPECT_EQ(Sha256File(Out("big.bin")).value(), sha);
  EXPECT_EQ(origin.BytesServed(), 256 * kMiB);

  // A second download of the same task is served from storage: the origin sees nothing more.
  ASSERT_EQ(Dfget({origin.Url("big.bin"), "-O", Out("again.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("again.bin")).value(), sha);
  EXPECT_EQ(origin.BytesServed(), 256 * kMiB);
}

TEST_F(BackToSourceTest, ResumesAfterKillWithoutRefetchingFinishedPieces) {
  const uint64_t size = 256 * kMiB, piece = 4 * kMiB;
  std::string sha = bench::MakeFile(root_ + "/big.bin", size);
  NginxOrigin origin(root_, "16m");  // 8 connections x 16 MB/s: about 2 s for the whole file
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string url = origin.Url("big.bin");
  Process dfget = Process::Start(
      {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, url, "-O", Out("big.bin")},
      dir_.path() + "/dfget1.log");

  // Wait until about a third of the pieces are finished, then kill the daemon hard.
  auto stub = dfdaemon::v1::DfdaemonDownload::NewStub(
      grpc::CreateChannel("unix:" + sock_, grpc::InsecureChannelCredentials()));
  std::string task_id = TaskId(TaskIdInput{url, "", "", 0, {}});
  uint32_t finished_before_kill = 0;
  for (int i = 0; i < 600 && finished_before_kill < 20; ++i) {
    grpc::ClientContext ctx;
    dfdaemon::v1::StatTaskRequest req;
    req.set_task_id(task_id);
    dfdaemon::v1::StatTaskResponse resp;
    if (stub->StatTask(&ctx, req, &resp).ok()) finished_before_kill = resp.finished_pieces();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GE(finished_before_kill, 20u);
  daemon.Kill(SIGKILL);
  daemon.Wait();
  EXPECT_NE(dfget.Wait(), 0);  // the client saw its daemon die
  EXPECT_FALSE(std::filesystem::exists(Out("big.bin")));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // nginx logs cut connections
  uint64_t served_before = origin.BytesServed();

  Process daemon2 = StartDaemon();
  std::string out;
  ASSERT_EQ(Dfget({url, "-O", Out("big.bin"), "--digest", "sha256:" + sha}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("big.bin")).value(), sha);
  uint64_t served_after = origin.BytesServed() - served_before;
  EXPECT_LE(served_after, size - finished_before_kill * piece)
      << "finished pieces were fetched again after the restart";
}

TEST_F(BackToSourceTest, DigestMismatchFailsCleanlyAndLeavesNoFile) {
  bench::MakeFile(root_ + "/f.bin", 8 * kMiB);
  NginxOrigin origin(root_);
  Process daemon = StartDaemon();
  std::string out;
  int rc =
      Dfget({origin.Url("f.bin"), "-O", Out("f.bin"), "--digest", "sha256:" + std::string(64, '0')},
            &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("digest mismatch"), std::string::npos) << out;
  EXPECT_EQ(OutputEntries(), 0u) << "a failed download left a file behind";
}

TEST_F(BackToSourceTest, NotFoundGivesAClearError) {
  NginxOrigin origin(root_);
  Process daemon = StartDaemon();
  std::string out;
  EXPECT_EQ(Dfget({origin.Url("missing.bin"), "-O", Out("m.bin")}, &out), 1);
  EXPECT_NE(out.find("404"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "one line on stderr: " << out;
  EXPECT_EQ(OutputEntries(), 0u);
}

TEST_F(BackToSourceTest, UnreachableOriginGivesAClearError) {
  Process daemon = StartDaemon();
  std::string out;
  uint16_t closed = bench::FreePort();
  EXPECT_EQ(Dfget({"http://127.0.0.1:" + std::to_string(closed) + "/x", "-O", Out("x")}, &out), 1);
  EXPECT_NE(out.find("127.0.0.1"), std::string::npos) << out;
  EXPECT_EQ(OutputEntries(), 0u);
}

TEST_F(BackToSourceTest, BadFlagsAreUsageErrors) {
  std::string out;
  EXPECT_EQ(Dfget({"http://x/y", "-O", Out("y"), "--digest", "md5:abc"}, &out), 2) << out;
  EXPECT_EQ(Dfget({"http://x/y", "-O", Out("y"), "--piece-length", "3MiB"}, &out), 2) << out;
  EXPECT_EQ(Dfget({"http://x/y", "-O", Out("y"), "-H", "NoColon"}, &out), 2) << out;
  EXPECT_EQ(Dfget({"http://x/y"}, &out), 2) << out;  // -O is required
  EXPECT_EQ(Dfget({"http://x/y", "-O", Out("y"), "--bogus"}, &out), 2) << out;
}

// --help lists every flag (the config file is parsed first; help must wait for the full set).
TEST_F(BackToSourceTest, HelpListsEveryFlagAndBadDaemonFlagsAreUsageErrors) {
  std::string out;
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "--help"}, &out), 0) << out;
  for (const char* flag : {"--config", "--scheduler", "--data-dir", "--upload-rate", "--seed"})
    EXPECT_NE(out.find(flag), std::string::npos) << flag << " missing from:\n" << out;
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "--bogus"}, &out), 2) << out;
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "--upload-rate", "fast"}, &out), 2) << out;
  EXPECT_EQ(Dfget({"--help"}, &out), 0) << out;
  EXPECT_NE(out.find("--output"), std::string::npos) << out;
}

TEST_F(BackToSourceTest, HeadersReachTheOriginAndBadSchemesAreRejected) {
  bench::MakeFile(root_ + "/h.bin", 1 * kMiB);
  NginxOrigin origin(root_);
  Process daemon = StartDaemon();
  std::string out;
  EXPECT_EQ(Dfget({origin.Url("h.bin"), "-O", Out("h.bin"), "-H", "X-Test: yes"}, &out), 0) << out;
  // nginx writes its log line after the response: wait for every request to be logged.
  std::vector<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    seen = origin.LoggedHeader();
    if (!seen.empty() && static_cast<int>(seen.size()) == origin.Requests()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_FALSE(seen.empty()) << "the origin logged no request";
  for (const std::string& v : seen)
    EXPECT_EQ(v, "yes") << "a request reached the origin without it";
  int before = origin.Requests();
  EXPECT_EQ(Dfget({"ftp://127.0.0.1/x", "-O", Out("x")}, &out), 2) << out;
  EXPECT_NE(out.find("unsupported URL"), std::string::npos) << out;
  EXPECT_EQ(Dfget({"gopher://127.0.0.1/x", "-O", Out("x")}, &out), 2) << out;
  EXPECT_EQ(origin.Requests(), before);
}

TEST_F(BackToSourceTest, StartsADaemonWhenNoneRuns) {
  bench::MakeFile(root_ + "/s.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  std::string out;
  int rc = bench::Run({Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, "--data-dir",
                       dir_.path() + "/autodata", origin.Url("s.bin"), "-O", Out("s.bin")},
                      &out);
  // Find the daemon dfget started (it is detached) and stop it by pid.
  pid_t started = -1;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmd(e.path() / "cmdline");
    std::string c((std::istreambuf_iterator<char>(cmd)), {});
    if (c.find("dfdaemon") != std::string::npos && c.find(sock_) != std::string::npos) {
      started = std::stoi(e.path().filename());
    }
  }
  if (started > 0) {
    ::kill(started, SIGTERM);
    for (int i = 0; i < 200 && ::kill(started, 0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_NE(::kill(started, 0), 0) << "the daemon did not stop on SIGTERM";
    ::kill(started, SIGKILL);
  }
  ASSERT_EQ(rc, 0) << out;
  EXPECT_GT(started, 0) << "no dfdaemon was started";
  EXPECT_TRUE(std::filesystem::exists(Out("s.bin")));
}

}  // namespace
}  // namespace df
