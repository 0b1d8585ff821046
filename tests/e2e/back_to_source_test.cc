// End-to-end: dfget -> dfdaemon -> a real nginx origin, no scheduler (back to source).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/digest.h"
#include "common/ids.h"
#include "common/piece.h"
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
    Process p = Process::Start({Bin("daemon/dfdaemon"), "--sock", sock_, "--data-dir",
                                dir_.path() + "/data", "--grpc-port", "0", "--piece-port", "0",
                                "--metrics-port", "0", "--proxy-port", "0", "--log-level", "info"},
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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Pids of the dfdaemon processes serving `sock` (argv[0] is dfdaemon and an argument is `sock`).
// Exited processes (zombies included) have no cmdline and are not listed.
std::vector<pid_t> DaemonPids(const std::string& sock) {
  std::vector<pid_t> pids;
  for (auto& e : std::filesystem::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (!std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = ReadFile(e.path() / "cmdline");
    std::vector<std::string> argv;
    std::istringstream in(cmdline);
    for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
    if (argv.empty() || std::filesystem::path(argv[0]).filename() != "dfdaemon") continue;
    if (std::find(argv.begin(), argv.end(), sock) != argv.end()) pids.push_back(std::stoi(name));
  }
  return pids;
}

// Gone, or a zombie (the daemons dfget starts are reparented; the test cannot reap them).
bool Exited(pid_t pid) {
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return stat.empty() || (paren != std::string::npos && stat.substr(paren + 2, 1) == "Z");
}

// Stops `pid` with SIGTERM, waiting for it to exit; SIGKILL after 10 s. True when SIGTERM did.
bool StopPid(pid_t pid) {
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 200 && !Exited(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (Exited(pid)) return true;
  ::kill(pid, SIGKILL);
  return false;
}

// Stops, by pid, every dfdaemon serving `sock` when the test ends (daemons that dfget started
// detached, which the harness does not own).
struct DaemonsStopper {
  std::string sock;
  ~DaemonsStopper() {
    for (pid_t pid : DaemonPids(sock)) StopPid(pid);
  }
};

// Pids holding a flock on `path`, from /proc/locks ("1: FLOCK ADVISORY WRITE pid maj:min:ino").
std::vector<pid_t> FlockHolders(const std::string& path) {
  struct stat st {};
  std::vector<pid_t> pids;
  if (::stat(path.c_str(), &st) != 0) return pids;
  std::istringstream locks(ReadFile("/proc/locks"));
  for (std::string line; std::getline(locks, line);) {
    std::istringstream in(line);
    std::string id, kind, advisory, mode, file;
    pid_t pid = 0;
    if (!(in >> id >> kind >> advisory >> mode >> pid >> file) || kind != "FLOCK") continue;
    if (file.ends_with(":" + std::to_string(st.st_ino))) pids.push_back(pid);
  }
  return pids;
}

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
  const uint64_t size = 256 * kMiB, piece = ChoosePieceLength(static_cast<int64_t>(size));
  std::string sha = bench::MakeFile(root_ + "/big.bin", size);
  NginxOrigin origin(root_, "16m");  // 8 connections x 16 MB/s: about 2 s for the whole file
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string url = origin.Url("big.bin");
  Process dfget = Process::Start(
      {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, url, "-O", Out("big.bin")},
      dir_.path() + "/dfget1.log");

  // Wait until 20 pieces are finished, then kill the daemon hard.
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

// Issue: the output was a hard link to the cache inode, so editing the downloaded file in place
// changed what the next dfget of the URL returned (exit 0, wrong bytes) and what peers were
// served.
// The output is a hard link to the cache (no second write of the file): an edit in place changes
// the cached bytes too, and the store must notice before a download hands them out again.
TEST_F(BackToSourceTest, EditingTheOutputInPlaceNeverReachesTheNextDownload) {
  std::string sha = bench::MakeFile(root_ + "/e.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out;
  ASSERT_EQ(Dfget({origin.Url("e.bin"), "-O", Out("e1.bin")}, &out), 0) << out;
  {
    std::fstream edit(Out("e1.bin"), std::ios::in | std::ios::out | std::ios::binary);
    edit.seekp(1000);
    edit << "edited in place";
  }
  ASSERT_EQ(Dfget({origin.Url("e.bin"), "-O", Out("e2.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("e2.bin")).value(), sha) << "the edit reached the next download";
  EXPECT_NE(ReadFile(Out("e1.bin")).find("edited in place"), std::string::npos)
      << "the user's own file keeps the user's edit";
  EXPECT_LE(origin.BytesServed(), 8 * kMiB) << "fetched again once, no more";
  // An untouched cache is still reused.
  ASSERT_EQ(Dfget({origin.Url("e.bin"), "-O", Out("e3.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("e3.bin")).value(), sha);
  EXPECT_LE(origin.BytesServed(), 8 * kMiB);
}

// Issue: `dfget -O /dev/stdout` as root replaced the system's /dev/stdout symlink with a regular
// file. (A symlink in the test's own directory stands in for /dev/stdout.)
TEST_F(BackToSourceTest, RefusesToReplaceASymlinkAtTheOutputPath) {
  bench::MakeFile(root_ + "/l.bin", 1 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string target = dir_.path() + "/target";
  std::ofstream(target) << "precious";
  ASSERT_EQ(::symlink(target.c_str(), Out("link").c_str()), 0);
  std::string out;
  EXPECT_EQ(Dfget({origin.Url("l.bin"), "-O", Out("link")}, &out), 2) << out;
  EXPECT_NE(out.find(Out("link") + " is a symlink"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::is_symlink(Out("link")));
  EXPECT_EQ(ReadFile(target), "precious");
  EXPECT_EQ(OutputEntries(), 1u) << "no temporary file is left behind";
}

// Issue: a wrong --digest deleted a good cached copy.
TEST_F(BackToSourceTest, WrongDigestFailsAndKeepsAGoodCache) {
  std::string sha = bench::MakeFile(root_ + "/w.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out;
  ASSERT_EQ(Dfget({origin.Url("w.bin"), "-O", Out("w1.bin")}, &out), 0) << out;
  std::string wrong = std::string(64, '0');
  EXPECT_EQ(Dfget({origin.Url("w.bin"), "-O", Out("w2.bin"), "--digest", "sha256:" + wrong}, &out),
            1);
  EXPECT_NE(out.find("digest mismatch: want sha256:" + wrong + ", got sha256:" + sha),
            std::string::npos)
      << out;
  EXPECT_FALSE(std::filesystem::exists(Out("w2.bin")));
  ASSERT_EQ(Dfget({origin.Url("w.bin"), "-O", Out("w3.bin"), "--digest", "sha256:" + sha}, &out), 0)
      << out;
  EXPECT_EQ(origin.BytesServed(), 4 * kMiB) << "the good cache was deleted";
}

// The other side of the digest check: a cache that fails its own CRC32Cs is deleted, so that
// the retry fetches the file again.
TEST_F(BackToSourceTest, DigestMismatchOfACorruptCacheDeletesIt) {
  std::string sha = bench::MakeFile(root_ + "/k.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out, url = origin.Url("k.bin");
  ASSERT_EQ(Dfget({url, "-O", Out("k1.bin")}, &out), 0) << out;
  std::string content = dir_.path() + "/data/content/" + TaskId(TaskIdInput{url, "", "", 0, {}});
  // Bit rot: the bytes change, the mtime does not (a write would be noticed on reuse already).
  struct stat before {};
  ASSERT_EQ(::stat(content.c_str(), &before), 0) << content;
  {
    std::fstream rot(content, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(rot.good()) << content;
    rot.seekp(12345);
    rot << "bit rot";
  }
  timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, content.c_str(), times, 0), 0);
  EXPECT_EQ(Dfget({url, "-O", Out("k2.bin"), "--digest", "sha256:" + sha}, &out), 1);
  EXPECT_NE(out.find("corrupt"), std::string::npos) << out;
  ASSERT_EQ(Dfget({url, "-O", Out("k3.bin"), "--digest", "sha256:" + sha}, &out), 0) << out;
  EXPECT_EQ(origin.BytesServed(), 2 * 4 * kMiB);
}

// Issue: deleting a content file by hand broke every later download of the URL until a restart.
TEST_F(BackToSourceTest, ContentFileRemovedByHandIsDownloadedAgain) {
  std::string sha = bench::MakeFile(root_ + "/r.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out, url = origin.Url("r.bin");
  ASSERT_EQ(Dfget({url, "-O", Out("r1.bin")}, &out), 0) << out;
  std::string content = dir_.path() + "/data/content/" + TaskId(TaskIdInput{url, "", "", 0, {}});
  ASSERT_EQ(::unlink(content.c_str()), 0) << content;
  ASSERT_EQ(Dfget({url, "-O", Out("r2.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("r2.bin")).value(), sha);
  EXPECT_EQ(origin.BytesServed(), 2 * 4 * kMiB);
}

// Issue: three dfgets started at once with no daemon running started three daemons on one
// socket and one data dir. The daemons' locks let one win; the other dfgets use it.
TEST_F(BackToSourceTest, DfgetsStartedAtOnceShareOneDaemon) {
  std::string sha = bench::MakeFile(root_ + "/c.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  DaemonsStopper stopper{sock_};
  std::vector<Process> dfgets;
  for (int i = 0; i < 3; ++i) {
    dfgets.push_back(Process::Start(
        {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, "--data-dir",
         dir_.path() + "/autodata", origin.Url("c.bin"), "-O", Out("c" + std::to_string(i))},
        dir_.path() + "/dfget" + std::to_string(i) + ".log"));
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(dfgets[i].Wait(60000), 0)
        << ReadFile(dir_.path() + "/dfget" + std::to_string(i) + ".log");
    auto got = Sha256File(Out("c" + std::to_string(i)));
    EXPECT_TRUE(got.ok() && got.value() == sha) << i;
  }
  // A daemon that lost the race exits at start, maybe after its dfget already finished.
  std::vector<pid_t> daemons = DaemonPids(sock_);
  for (int i = 0; i < 200 && daemons.size() > 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    daemons = DaemonPids(sock_);
  }
  ASSERT_EQ(daemons.size(), 1u) << ReadFile(dir_.path() + "/autodata/dfdaemon.log");
  EXPECT_EQ(FlockHolders(sock_ + ".lock"), daemons);
  EXPECT_EQ(FlockHolders(dir_.path() + "/autodata/dfdaemon.lock"), daemons);
  EXPECT_TRUE(StopPid(daemons[0])) << "the daemon did not stop on SIGTERM";
}

// Issue: another local user could bind the default socket path first and collect the
// `-H Authorization` headers that dfget sends. dfget refuses a socket that is not its user's or
// root's, before it connects.
TEST_F(BackToSourceTest, DfgetRefusesASocketOwnedByAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to make a socket owned by another user";
  DaemonsStopper stopper{sock_};  // in case a dfget starts one
  int impostor = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock_.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(impostor, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(impostor, 8), 0);
  ASSERT_EQ(::chown(sock_.c_str(), 65534, 65534), 0);
  std::string out;
  EXPECT_EQ(Dfget({"http://127.0.0.1:1/x", "-H", "Authorization: Bearer secret", "--data-dir",
                   dir_.path() + "/autodata", "-O", Out("x")},
                  &out),
            3)
      << out;
  EXPECT_NE(out.find(sock_ + " is owned by uid 65534"), std::string::npos) << out;
  EXPECT_LT(::accept(impostor, nullptr, nullptr), 0) << "dfget connected to the impostor";
  ::close(impostor);
}

// The daemon side of the socket issue, end to end: another user cannot use a daemon's socket,
// even when the daemon was started under umask 0, and dfget says why (rather than starting a
// daemon of its own on the same path).
TEST_F(BackToSourceTest, AnotherUserCannotUseTheDaemonSocket) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run dfget as another user";
  bench::MakeFile(root_ + "/u.bin", 1 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  mode_t old_umask = ::umask(0);
  Process daemon = StartDaemon();
  ::umask(old_umask);
  DaemonsStopper stopper{sock_};
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);  // others may reach the socket path itself
  std::string out;
  EXPECT_EQ(bench::Run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, "--data-dir",
                        dir_.path() + "/nobody", origin.Url("u.bin"), "-O", Out("u.bin")},
                       &out),
            3)
      << out;
  EXPECT_NE(out.find("permission denied on " + sock_), std::string::npos) << out;
  EXPECT_EQ(OutputEntries(), 0u);
  EXPECT_EQ(DaemonPids(sock_), std::vector<pid_t>{daemon.pid()});
}

TEST_F(BackToSourceTest, DfgetRefusesASymlinkAtTheSocketPath) {
  DaemonsStopper stopper{sock_};
  Process daemon = Process::Start({Bin("daemon/dfdaemon"), "--sock", dir_.path() + "/real.sock",
                                   "--data-dir", dir_.path() + "/data", "--grpc-port", "0",
                                   "--piece-port", "0", "--metrics-port", "0", "--proxy-port", "0"},
                                  dir_.path() + "/dfdaemon.log");
  ASSERT_TRUE(bench::WaitForUnixSocket(dir_.path() + "/real.sock", 10000));
  ASSERT_EQ(::symlink((dir_.path() + "/real.sock").c_str(), sock_.c_str()), 0);
  std::string out;
  EXPECT_EQ(Dfget({"http://127.0.0.1:1/x", "--data-dir", dir_.path() + "/autodata", "-O", Out("x")},
                  &out),
            3)
      << out;
  EXPECT_NE(out.find(sock_ + " is not a socket but a symlink"), std::string::npos) << out;
}

}  // namespace
}  // namespace df
