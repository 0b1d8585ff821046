// End-to-end: everyday use of dfget, dfdaemon and dfcache against a real nginx origin (issue 19):
// output to pipes, /dev/stdout and fifos streamed in order while pieces arrive; outputs that are
// refused; --version everywhere; the auto-started daemon's notice, `dfdaemon status|stop`, racing
// auto-starts; dfcache round trips.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"

namespace df {
namespace {

using bench::NginxOrigin;
using bench::Process;
using bench::TempDir;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMiB = 1024 * 1024;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

// What a child wrote to its stdout (a pipe the test reads), when the first byte came, and how
// it exited.
struct PipedRun {
  int exit_code = -1;
  std::string sha256;
  uint64_t bytes = 0;
  Clock::time_point started, first_byte, exited;
};

// Runs argv with stdout on a pipe that this process reads to the end (hashing what comes, as
// `| sha256sum` would), stderr to `stderr_path`.
PipedRun RunIntoPipe(const std::vector<std::string>& argv, const std::string& stderr_path) {
  PipedRun r;
  int fds[2];
  if (::pipe(fds) != 0) return r;
  r.started = Clock::now();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) ::dup2(err, 2);
    ::close(fds[0]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  Sha256 sha;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (r.bytes == 0) r.first_byte = Clock::now();
    sha.Update(buf, static_cast<size_t>(n));
    r.bytes += static_cast<uint64_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exited = Clock::now();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.sha256 = sha.FinalHex();
  return r;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// A /proc file read with read(2): a process that exits meanwhile gives "" rather than the
// exception a stream throws (ESRCH in the middle of a read).
std::string ReadProcFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return n < 0 ? "" : out;
}

// Pids of the dfdaemon processes serving `sock` (argv[0] is dfdaemon, an argument is `sock`);
// exited ones and zombies have no cmdline and are not listed.
std::vector<pid_t> DaemonPids(const std::string& sock) {
  std::vector<pid_t> pids;
  std::error_code ec;  // entries vanish while listed: skip them, never throw
  for (auto it = std::filesystem::directory_iterator("/proc", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const auto& e = *it;
    std::string name = e.path().filename();
    if (!std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    std::string cmdline = ReadProcFile(e.path() / "cmdline");
    std::vector<std::string> argv;
    std::istringstream in(cmdline);
    for (std::string arg; std::getline(in, arg, '\0');) argv.push_back(arg);
    if (argv.empty() || std::filesystem::path(argv[0]).filename() != "dfdaemon") continue;
    if (argv.size() > 1 && (argv[1] == "stop" || argv[1] == "status")) continue;
    if (std::find(argv.begin(), argv.end(), sock) != argv.end()) pids.push_back(std::stoi(name));
  }
  return pids;
}

// Stops, by pid, every dfdaemon serving `sock` when the test ends (daemons dfget started).
struct DaemonsStopper {
  std::string sock;
  ~DaemonsStopper() {
    for (pid_t pid : DaemonPids(sock)) {
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 200 && ::kill(pid, 0) == 0 && !DaemonPids(sock).empty(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      ::kill(pid, SIGKILL);
    }
  }
};

class EverydayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/origin";
    std::filesystem::create_directories(root_);
    std::filesystem::create_directories(dir_.path() + "/out");
    sock_ = dir_.path() + "/dfdaemon.sock";
  }

  Process StartDaemon(std::vector<std::string> extra = {}, uint16_t metrics_port = 0) {
    std::vector<std::string> argv = {Bin("daemon/dfdaemon"),
                                     "--sock",
                                     sock_,
                                     "--data-dir",
                                     Data(),
                                     "--grpc-port",
                                     "0",
                                     "--piece-port",
                                     "0",
                                     "--metrics-port",
                                     std::to_string(metrics_port),
                                     "--proxy-port",
                                     "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p = Process::Start(argv, dir_.path() + "/dfdaemon.log");
    EXPECT_TRUE(bench::WaitForUnixSocket(sock_, 30000)) << "dfdaemon did not start";
    return p;
  }

  std::vector<std::string> Dfget(const std::vector<std::string>& extra) {
    // --data-dir: a daemon auto-started by mistake stays in the test's directory.
    std::vector<std::string> argv = {Bin("dfget/dfget"), "--daemon-sock", sock_, "--data-dir",
                                     Data()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  int Dfcache(const std::vector<std::string>& extra, std::string* out) {
    std::vector<std::string> argv = {Bin("dfcache/dfcache"), "--daemon-sock", sock_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return bench::Run(argv, out);
  }

  std::string Data() { return dir_.path() + "/data"; }
  std::string Out(const std::string& name) { return dir_.path() + "/out/" + name; }
  std::string Err() { return dir_.path() + "/dfget.err"; }

  TempDir dir_;
  std::string root_, sock_;
};

// `dfget URL -O - | sha256sum`: the bytes come in order while the download runs (the first
// ones long before its end), the digest is right, and stderr (not a terminal) stays empty: no
// bar, no blank line.
TEST_F(EverydayTest, StreamsToAPipeInByteOrderWhilePiecesArrive) {
  // nginx's limit_rate lets the first second's worth of a response go at once, then paces it:
  // at 512 KB/s a 1 MiB piece takes about 1 s, and 8 pieces over 2 connections about 4 s.
  std::string sha = bench::MakeFile(root_ + "/s.bin", 8 * kMiB);
  NginxOrigin origin(root_, "512k");
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon({"--origin-concurrency", "2"});
  PipedRun r = RunIntoPipe(Dfget({origin.Url("s.bin"), "-O", "-"}), Err());
  ASSERT_EQ(r.exit_code, 0) << ReadFile(Err());
  EXPECT_EQ(r.bytes, 8 * kMiB);
  EXPECT_EQ(r.sha256, sha);
  EXPECT_EQ(ReadFile(Err()), "") << "a non-TTY stderr gets nothing on success";
  double total = Seconds(r.exited - r.started), first = Seconds(r.first_byte - r.started);
  EXPECT_GT(total, 2.0) << "the origin was not throttled: the test shows nothing";
  EXPECT_LT(first, total / 2) << "the first bytes came at " << first << " s of " << total
                              << " s: not streamed while pieces arrived";
}

// Issue 14's `-O /dev/stdout` replaced the /dev/stdout symlink as root; now the pipe behind it
// gets the bytes, and /dev/stdout stays a symlink.
TEST_F(EverydayTest, DevStdoutIsStreamedNotReplaced) {
  std::string sha = bench::MakeFile(root_ + "/d.bin", 3 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  PipedRun r = RunIntoPipe(Dfget({origin.Url("d.bin"), "-O", "/dev/stdout"}), Err());
  ASSERT_EQ(r.exit_code, 0) << ReadFile(Err());
  EXPECT_EQ(r.sha256, sha);
  EXPECT_TRUE(std::filesystem::is_symlink("/dev/stdout"));
}

TEST_F(EverydayTest, FifoAndSymlinkToFifoAreStreamed) {
  std::string sha = bench::MakeFile(root_ + "/f.bin", 3 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  const std::string fifo = Out("fifo"), link = Out("fifo-link");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::symlink(fifo.c_str(), link.c_str()), 0);
  for (const std::string& target : {fifo, link}) {
    std::string got;
    std::thread reader([&] {
      int fd = ::open(fifo.c_str(), O_RDONLY);
      char buf[1 << 16];
      ssize_t n;
      while ((n = ::read(fd, buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
      ::close(fd);
    });
    std::string out;
    int rc = bench::Run(Dfget({origin.Url("f.bin"), "-O", target}), &out);
    reader.join();
    EXPECT_EQ(rc, 0) << target << ": " << out;
    Sha256 h;
    h.Update(got.data(), got.size());
    EXPECT_EQ(h.FinalHex(), sha) << target;
    struct stat st {};
    ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode)) << "the fifo was replaced";
  }
  EXPECT_TRUE(std::filesystem::is_symlink(link));
}

TEST_F(EverydayTest, DirectoryAndSymlinkToAFileAreRefusedAndLeftAlone) {
  bench::MakeFile(root_ + "/r.bin", 1 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  std::string out;
  EXPECT_EQ(bench::Run(Dfget({origin.Url("r.bin"), "-O", dir_.path() + "/out"}), &out), 2) << out;
  EXPECT_NE(out.find("is a directory"), std::string::npos) << out;
  std::ofstream(dir_.path() + "/precious") << "precious";
  ASSERT_EQ(::symlink((dir_.path() + "/precious").c_str(), Out("link").c_str()), 0);
  EXPECT_EQ(bench::Run(Dfget({origin.Url("r.bin"), "-O", Out("link")}), &out), 2) << out;
  EXPECT_NE(out.find("is a symlink"), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::is_symlink(Out("link")));
  EXPECT_EQ(ReadFile(dir_.path() + "/precious"), "precious");
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << "only the error line: " << out;
}

// The digest is still checked when the bytes were streamed: the exit code and a message say it.
TEST_F(EverydayTest, StreamedDownloadWithAWrongDigestFails) {
  bench::MakeFile(root_ + "/w.bin", 2 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  PipedRun r = RunIntoPipe(
      Dfget({origin.Url("w.bin"), "-O", "-", "--digest", "sha256:" + std::string(64, 'a')}), Err());
  EXPECT_EQ(r.exit_code, 1);
  std::string err = ReadFile(Err());
  EXPECT_NE(err.find("digest mismatch"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
}

// The bar in a real terminal: dfget runs in a tmux pane of 40 and then 120 columns during a
// throttled download; every capture shows one line that fits the pane (nothing wrapped, nothing
// left over from a longer line), the percentage moves, and the end is the summary line alone.
// The captures are printed (DF_SHOW_CAPTURES=1 prints every distinct one).
TEST_F(EverydayTest, ProgressBarInATerminalFitsItsWidthAndEndsWithTheSummary) {
  std::string out;
  if (bench::Run({"tmux", "-V"}, &out) != 0) GTEST_SKIP() << "no tmux (scripts/install-deps.sh)";
  bench::MakeFile(root_ + "/t.bin", 12 * kMiB);
  NginxOrigin origin(root_, "512k");  // 1 MiB pieces of about 1 s each, 2 at a time: about 6 s
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon({"--origin-concurrency", "2"});
  const std::string tmux_server = "df-everyday-" + std::to_string(::getpid());
  for (int width : {40, 120}) {
    std::string tag = "w" + std::to_string(width);  // a new task each time: a real download
    std::string cmd = Bin("dfget/dfget") + " --daemon-sock " + sock_ + " --tag " + tag + " " +
                      origin.Url("t.bin") + " -O " + Out(tag) + "; echo EXIT=$?; sleep 120";
    ASSERT_EQ(bench::Run({"tmux", "-L", tmux_server, "-f", "/dev/null", "new-session", "-d", "-s",
                          tag, "-x", std::to_string(width), "-y", "6", cmd},
                         &out),
              0)
        << out;
    std::vector<std::string> bars;
    std::string screen;
    Clock::time_point first_bar, last_bar;  // when the bar was first and last seen
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {
      bench::Run({"tmux", "-L", tmux_server, "capture-pane", "-p", "-t", tag}, &screen);
      std::istringstream lines(screen);
      std::vector<std::string> nonblank;
      for (std::string l; std::getline(lines, l);) {
        if (l.find_first_not_of(' ') != std::string::npos) nonblank.push_back(l);
      }
      if (screen.find("EXIT=") != std::string::npos) break;
      // Until the summary replaces it, the bar is the one line on the screen.
      if (nonblank.empty() || screen.find("downloaded") != std::string::npos) continue;
      EXPECT_EQ(nonblank.size(), 1u) << "the bar took more than one line:\n" << screen;
      const std::string& bar = nonblank[0];
      EXPECT_LT(static_cast<int>(bar.find_last_not_of(' ')), width - 1) << bar;
      if (bars.empty()) first_bar = Clock::now();
      last_bar = Clock::now();
      if (bars.empty() || bars.back() != bar) bars.push_back(bar);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    bench::Run({"tmux", "-L", tmux_server, "kill-session", "-t", tag}, &out);
    ASSERT_NE(screen.find("EXIT=0"), std::string::npos) << screen;
    std::cout << "--- " << width << " columns, " << bars.size() << " distinct bars; e.g.:\n";
    for (size_t i = 0; i < bars.size(); ++i) {
      if (std::getenv("DF_SHOW_CAPTURES") || i == bars.size() / 2) std::cout << bars[i] << "\n";
    }
    std::cout << "--- final screen:\n" << screen;
    EXPECT_GE(bars.size(), 8u) << "a bar that hardly moved over a ~6 s download";
    // At least 4 redraws a second from piece-level progress (1 MiB pieces take about 1 s
    // here): sampled every 100 ms or so, a bar that changes only per piece, or twice a second,
    // shows at most 2 distinct lines a second.
    const double visible = Seconds(last_bar - first_bar);
    std::cout << "--- " << bars.size() << " distinct bars in " << visible << " s\n";
    EXPECT_GE(static_cast<double>(bars.size() - 1), 3.0 * visible)
        << bars.size() << " distinct bars in " << visible << " s";
    EXPECT_NE(screen.find("downloaded 12.0 MiB in"), std::string::npos) << screen;
    EXPECT_NE(screen.find("from the origin"), std::string::npos) << screen;
    std::istringstream final_lines(screen);
    for (std::string l; std::getline(final_lines, l);) {
      EXPECT_LT(static_cast<int>(l.find_last_not_of(' ') + 1), width) << "wrapped: " << l;
    }
    EXPECT_EQ(bars.front().find("0 B/0 B"), std::string::npos) << "an unknown size shown as 0";
    EXPECT_EQ(screen.find('%'), std::string::npos) << "the bar was left on screen:\n" << screen;
    EXPECT_EQ(screen.find("ETA"), std::string::npos) << "a piece of the bar is left:\n" << screen;
  }
  bench::Run({"tmux", "-L", tmux_server, "kill-server"}, &out);
}

// A download that fails in a terminal leaves nothing but the error line: the bar it showed
// while the bytes came is erased first.
TEST_F(EverydayTest, AFailedDownloadInATerminalLeavesOnlyTheErrorLine) {
  std::string out;
  if (bench::Run({"tmux", "-V"}, &out) != 0) GTEST_SKIP() << "no tmux (scripts/install-deps.sh)";
  bench::MakeFile(root_ + "/e.bin", 3 * kMiB);
  NginxOrigin origin(root_, "512k");  // about 3 s of bar before the digest check
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon({"--origin-concurrency", "2"});
  const std::string tmux_server = "df-everyday-fail-" + std::to_string(::getpid());
  const std::string cmd = Bin("dfget/dfget") + " --daemon-sock " + sock_ + " " +
                          origin.Url("e.bin") + " -O " + Out("e.bin") +
                          " --digest sha256:" + std::string(64, 'a') + "; echo EXIT=$?; sleep 120";
  ASSERT_EQ(bench::Run({"tmux", "-L", tmux_server, "-f", "/dev/null", "new-session", "-d", "-s",
                        "fail", "-x", "250", "-y", "6", cmd},
                       &out),
            0)
      << out;
  bool saw_bar = false;
  std::string screen;
  for (auto deadline = Clock::now() + std::chrono::seconds(60); Clock::now() < deadline;) {
    bench::Run({"tmux", "-L", tmux_server, "capture-pane", "-p", "-t", "fail"}, &screen);
    if (screen.find("EXIT=") != std::string::npos) break;
    saw_bar = saw_bar || screen.find('%') != std::string::npos;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bench::Run({"tmux", "-L", tmux_server, "kill-server"}, &out);
  std::cout << "--- final screen:\n" << screen;
  EXPECT_TRUE(saw_bar) << "no bar was ever drawn: the test shows nothing";
  std::vector<std::string> nonblank;
  std::istringstream lines(screen);
  for (std::string l; std::getline(lines, l);) {
    if (l.find_first_not_of(' ') != std::string::npos) nonblank.push_back(l);
  }
  ASSERT_EQ(nonblank.size(), 2u) << screen;
  EXPECT_EQ(nonblank[0].rfind("dfget: ", 0), 0u) << nonblank[0];
  EXPECT_NE(nonblank[0].find("digest mismatch"), std::string::npos) << nonblank[0];
  EXPECT_EQ(nonblank[1].rfind("EXIT=1", 0), 0u) << nonblank[1];
  EXPECT_EQ(screen.find('%'), std::string::npos) << "the bar was left on screen:\n" << screen;
}

// Metrics an operator can alert on: every *_total is typed counter; bytes by source, tasks
// started, succeeded and failed by reason, trips to the origin by reason, open piece
// connections, storage bytes; /healthz answers ok.
TEST_F(EverydayTest, DaemonMetricsFollowPrometheusConventions) {
  bench::MakeFile(root_ + "/m.bin", 3 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  uint16_t port = bench::FreePort();
  Process daemon = StartDaemon({"--ip", "127.0.0.1"}, port);
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", origin.Url("m.bin"), "-O", Out("m.bin")}), &out), 0)
      << out;
  EXPECT_EQ(bench::Run(Dfget({"--no-progress", origin.Url("missing.bin"), "-O", Out("x")}), &out),
            1)
      << out;
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  std::string text;
  for (int i = 0; i < 100; ++i) {  // the counters move in the daemon's 1 s housekeeping
    ASSERT_EQ(bench::Run({"curl", "-sf", url + "/metrics"}, &text), 0) << text;
    if (text.find("df_daemon_tasks_failed_total{reason=\"NotFound\"} 1") != std::string::npos &&
        text.find("df_daemon_tasks_succeeded_total 1") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream f(line.substr(7));
    std::string name, type;
    f >> name >> type;
    if (name.ends_with("_total")) {
      EXPECT_EQ(type, "counter") << line;
    }
  }
  for (const std::string& want :
       {std::string("# TYPE df_daemon_download_bytes_total counter"),
        "df_daemon_download_bytes_total{source=\"origin\"} " + std::to_string(3 * kMiB),
        std::string("df_daemon_download_bytes_total{source=\"peer\"} 0"),
        std::string("df_daemon_tasks_started_total 2"),
        std::string("df_daemon_tasks_succeeded_total 1"),
        std::string("df_daemon_tasks_failed_total{reason=\"NotFound\"} 1"),
        "df_daemon_storage_bytes " + std::to_string(3 * kMiB),
        std::string("# TYPE df_daemon_upload_bytes_total counter"),
        // No scheduler: both downloads went to the origin themselves.
        std::string("# TYPE df_daemon_back_to_source_total counter"),
        std::string("df_daemon_back_to_source_total{reason=\"no_scheduler\"} 2"),
        std::string("# TYPE df_daemon_piece_connections gauge"),
        std::string("df_daemon_piece_connections{side=\"server\"} 0"),
        std::string("df_daemon_piece_connections{side=\"client\"} 0"),
        std::string("# TYPE df_daemon_piece_server_closed_connections_total counter"),
        std::string("# TYPE df_daemon_running_tasks gauge")}) {
    EXPECT_NE(text.find(want + "\n"), std::string::npos) << want << " missing from:\n" << text;
  }
  ASSERT_EQ(bench::Run({"curl", "-s", url + "/healthz"}, &out), 0);
  EXPECT_EQ(out.substr(0, 2), "ok") << out;
}

// Debian's real Prometheus server scrapes a daemon and a scheduler: the series arrive with their
// types (the daemon's counters and gauges, the scheduler's decision histogram).
TEST_F(EverydayTest, PrometheusScrapesTheDaemonAndTheScheduler) {
  std::string out;
  if (bench::Run({"prometheus", "--version"}, &out) != 0) {
    GTEST_SKIP() << "no prometheus (scripts/install-deps.sh installs Debian's)";
  }
  bench::MakeFile(root_ + "/p.bin", 2 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  const uint16_t scheduler_port = bench::FreePort();
  const uint16_t scheduler_metrics_port = bench::FreePort();
  Process scheduler = Process::Start(
      {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:" + std::to_string(scheduler_port),
       "--metrics", "127.0.0.1:" + std::to_string(scheduler_metrics_port)},
      dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port, 10000));
  uint16_t metrics_port = bench::FreePort();
  Process daemon = StartDaemon(
      {"--ip", "127.0.0.1", "--scheduler", "127.0.0.1:" + std::to_string(scheduler_port)},
      metrics_port);
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", origin.Url("p.bin"), "-O", Out("p.bin")}), &out), 0)
      << out;
  const std::string config = dir_.path() + "/prometheus.yml";
  std::ofstream(config) << "global:\n  scrape_interval: 1s\nscrape_configs:\n"
                        << "  - job_name: dfdaemon\n    static_configs:\n"
                        << "      - targets: ['127.0.0.1:" << metrics_port << "']\n"
                        << "  - job_name: dfscheduler\n    static_configs:\n"
                        << "      - targets: ['127.0.0.1:" << scheduler_metrics_port << "']\n";
  uint16_t port = bench::FreePort();
  Process prometheus = Process::Start(
      {"prometheus", "--config.file=" + config, "--storage.tsdb.path=" + dir_.path() + "/tsdb",
       "--web.listen-address=127.0.0.1:" + std::to_string(port)},
      dir_.path() + "/prometheus.log");
  const std::string api = "http://127.0.0.1:" + std::to_string(port) + "/api/v1/";
  // Waits until the PromQL `query` (URL-encoded) has a sample whose value is `want`.
  auto query = [&](const std::string& promql, const std::string& want) {
    std::string value;
    for (int i = 0; i < 300; ++i) {
      bench::Run({"curl", "-s", api + "query?query=" + promql}, &value);
      if (value.find("\"" + want + "\"]") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_NE(value.find("\"" + want + "\"]"), std::string::npos)
        << promql << " != " << want << ": " << value << "\n"
        << ReadFile(dir_.path() + "/prometheus.log");
    return value;
  };
  // The seed-less scheduler sent the peer to the origin: the bytes came from there.
  std::string value =
      query("df_daemon_download_bytes_total%7Bsource%3D%22origin%22%7D", std::to_string(2 * kMiB));
  EXPECT_NE(value.find("\"job\":\"dfdaemon\""), std::string::npos) << value;
  query("df_daemon_back_to_source_total%7Breason%3D%22scheduler%22%7D", "1");
  query("df_scheduler_hosts", "1");  // the gauge is current, not refreshed by GC only
  query("df_scheduler_peers", "1");
  query("df_scheduler_tasks", "1");
  query("sum(df_scheduler_decision_duration_seconds_count)%20%3E%3D%20bool%201", "1");
  query("sum(df_scheduler_decisions_total)%20%3E%3D%20bool%201", "1");
  query("df_scheduler_back_to_source_total%7Breason%3D%22no_seed%22%7D", "1");
  for (const auto& [metric, type] : std::vector<std::pair<std::string, std::string>>{
           {"df_daemon_download_bytes_total", "counter"},
           {"df_daemon_tasks_started_total", "counter"},
           {"df_daemon_upload_bytes_total", "counter"},
           {"df_daemon_back_to_source_total", "counter"},
           {"df_daemon_storage_bytes", "gauge"},
           {"df_daemon_running_tasks", "gauge"},
           {"df_daemon_piece_connections", "gauge"},
           {"df_daemon_evictions_total", "counter"},
           {"df_daemon_evicted_bytes_total", "counter"},
           {"df_scheduler_decisions_total", "counter"},
           {"df_scheduler_decision_duration_seconds", "histogram"},
           {"df_scheduler_schedule_latency_seconds", "histogram"},
           {"df_scheduler_back_to_source_total", "counter"},
           {"df_scheduler_hosts", "gauge"},
           {"df_scheduler_peers", "gauge"},
           {"df_scheduler_tasks", "gauge"}}) {
    std::string meta;
    bench::Run({"curl", "-s", api + "metadata?metric=" + metric}, &meta);
    EXPECT_NE(meta.find("\"type\":\"" + type + "\""), std::string::npos) << metric << ": " << meta;
  }
}

// Logs that help: the first line about a task has its full id and its URL without secrets; a
// cache hit is not "back to source"; a digest mismatch, a client timeout and every end of a
// client's stream say so.
TEST_F(EverydayTest, DaemonLogsSayWhatHappenedWithoutSecrets) {
  bench::MakeFile(root_ + "/l.bin", 1 * kMiB);
  NginxOrigin origin(root_, "512k");  // slow enough for a client timeout of 200 ms
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  const std::string url = origin.Url("l.bin") + "?token=SECRET1&part=1";
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("l1")}), &out), 0) << out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("l2")}), &out), 0) << out;
  EXPECT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("l3"), "--digest",
                              "sha256:" + std::string(64, '0')}),
                       &out),
            1)
      << out;
  const std::string slow = origin.Url("l.bin") + "?sig=SECRET2";
  EXPECT_EQ(bench::Run(Dfget({"--no-progress", slow, "-O", Out("l4"), "--timeout", "200ms"}), &out),
            1)
      << out;
  const std::string log = ReadFile(dir_.path() + "/dfdaemon.log");
  EXPECT_EQ(log.find("SECRET"), std::string::npos) << log;
  // The first line that names the task has its full id and its URL with the token redacted.
  const std::string redacted = " url=" + origin.Url("l.bin") + "?token=REDACTED&part=1";
  const size_t url_at = log.find(redacted);
  ASSERT_NE(url_at, std::string::npos) << log;
  const size_t line_start =
      log.rfind('\n', url_at) == std::string::npos ? 0 : log.rfind('\n', url_at) + 1;
  const std::string line = log.substr(line_start, url_at - line_start);
  const size_t id_at = line.find("task_id=");
  ASSERT_NE(id_at, std::string::npos) << line;
  const std::string id = line.substr(id_at + 8, 64);
  ASSERT_EQ(id.size(), 64u) << line;
  EXPECT_TRUE(std::all_of(id.begin(), id.end(), ::isxdigit)) << line;
  EXPECT_EQ(log.find(id), line_start + id_at + 8) << "an earlier line names the task:\n" << log;
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("task " + id + " back to source"), 1u) << "a cache hit said back to source:\n"
                                                         << log;
  EXPECT_EQ(count("task " + id + " served from cache"), 2u) << log;
  EXPECT_EQ(count("digest mismatch task_id=" + id), 1u) << log;
  EXPECT_EQ(count("download stream ended task_id=" + id), 3u) << log;
  EXPECT_NE(log.find("reason=DeadlineExceeded: client timeout"), std::string::npos) << log;
}

// Count of `needle` in `text`.
size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Polls http://127.0.0.1:port/metrics until every line of `want` is in it (the daemon mirrors
// its counters every second); the last scrape.
std::string ScrapeUntil(uint16_t port, const std::vector<std::string>& want) {
  std::string text;
  for (int i = 0; i < 100; ++i) {
    bench::Run({"curl", "-sf", "http://127.0.0.1:" + std::to_string(port) + "/metrics"}, &text);
    if (std::all_of(want.begin(), want.end(), [&](const std::string& w) {
          return text.find(w + "\n") != std::string::npos;
        })) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return text;
}

// The storage GC evicts a task unused for --task-ttl, and (on `dfcache gc`) the least recently
// used tasks while the disk is above --disk-high-watermark: each eviction is one log line with
// the task id, its redacted URL and the reason, and df_daemon_evictions_total /
// df_daemon_evicted_bytes_total count it under that reason.
TEST_F(EverydayTest, StorageGcEvictionsAreLoggedAndCountedByReason) {
  bench::MakeFile(root_ + "/old.bin", 3 * kMiB);
  bench::MakeFile(root_ + "/big.bin", 2 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  const std::string old_url = origin.Url("old.bin") + "?token=SECRET3";
  const std::string big_url = origin.Url("big.bin");
  const std::string old_id = TaskId(TaskIdInput{old_url, "", "", 0, {}});
  const std::string big_id = TaskId(TaskIdInput{big_url, "", "", 0, {}});
  std::string out;
  {
    SCOPED_TRACE("ttl");
    const uint16_t port = bench::FreePort();
    Process daemon =
        StartDaemon({"--ip", "127.0.0.1", "--gc-interval", "200ms", "--task-ttl", "1s"}, port);
    ASSERT_EQ(bench::Run(Dfget({"--no-progress", old_url, "-O", Out("old.bin")}), &out), 0) << out;
    const std::string text = ScrapeUntil(
        port, {"df_daemon_evictions_total{reason=\"ttl\"} 1",
               "df_daemon_evicted_bytes_total{reason=\"ttl\"} " + std::to_string(3 * kMiB)});
    EXPECT_NE(text.find("# TYPE df_daemon_evictions_total counter\n"), std::string::npos);
    EXPECT_NE(text.find("# TYPE df_daemon_evicted_bytes_total counter\n"), std::string::npos);
    EXPECT_NE(text.find("df_daemon_evictions_total{reason=\"ttl\"} 1\n"), std::string::npos)
        << text;
    EXPECT_NE(text.find("df_daemon_evicted_bytes_total{reason=\"ttl\"} " +
                        std::to_string(3 * kMiB) + "\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("df_daemon_evictions_total{reason=\"disk_high_watermark\"} 0\n"),
              std::string::npos)
        << text;
    ASSERT_EQ(Dfcache({"stat", old_url}, &out), 1) << "not evicted: " << out;
    daemon.Stop();
    const std::string log = ReadFile(dir_.path() + "/dfdaemon.log");
    EXPECT_EQ(Count(log, "evicted task_id=" + old_id + " url=" + origin.Url("old.bin") +
                             "?token=REDACTED reason=ttl "),
              1u)
        << log;
    EXPECT_EQ(log.find("SECRET"), std::string::npos) << log;
  }
  {
    SCOPED_TRACE("disk_high_watermark");
    std::filesystem::remove(dir_.path() + "/dfdaemon.log");
    const uint16_t port = bench::FreePort();
    // Any used disk is above this watermark; GC runs only when dfcache asks.
    Process daemon =
        StartDaemon({"--ip", "127.0.0.1", "--gc-interval", "1h", "--disk-high-watermark",
                     "0.000000001", "--disk-low-watermark", "0.0000000001"},
                    port);
    ASSERT_EQ(bench::Run(Dfget({"--no-progress", big_url, "-O", Out("big.bin")}), &out), 0) << out;
    ASSERT_EQ(Dfcache({"stat", big_url}, &out), 0) << out;
    ASSERT_EQ(Dfcache({"gc"}, &out), 0) << out;
    EXPECT_NE(out.find("gc removed 1 tasks"), std::string::npos) << out;
    EXPECT_EQ(Dfcache({"stat", big_url}, &out), 1) << "not evicted: " << out;
    const std::string text =
        ScrapeUntil(port, {"df_daemon_evictions_total{reason=\"disk_high_watermark\"} 1",
                           "df_daemon_evicted_bytes_total{reason=\"disk_high_watermark\"} " +
                               std::to_string(2 * kMiB)});
    EXPECT_NE(text.find("df_daemon_evictions_total{reason=\"disk_high_watermark\"} 1\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("df_daemon_evicted_bytes_total{reason=\"disk_high_watermark\"} " +
                        std::to_string(2 * kMiB) + "\n"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("df_daemon_evictions_total{reason=\"ttl\"} 0\n"), std::string::npos)
        << text;
    daemon.Stop();
    const std::string log = ReadFile(dir_.path() + "/dfdaemon.log");
    EXPECT_EQ(Count(log, "evicted task_id=" + big_id + " url=" + big_url +
                             " reason=disk_high_watermark "),
              1u)
        << log;
  }
}

// A client that goes away mid-download (dfget killed) ends its stream with a line that says so;
// the task goes on for the cache and finishes.
TEST_F(EverydayTest, AClientThatGoesAwayIsLoggedAsCancelled) {
  bench::MakeFile(root_ + "/c.bin", 2 * kMiB);
  NginxOrigin origin(root_, "256k");  // two 1 MiB pieces at 256 KiB/s each: about 4 s
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon({"--origin-concurrency", "2"});
  const std::string url = origin.Url("c.bin");
  const std::string id = TaskId(TaskIdInput{url, "", "", 0, {}});
  Process dfget = Process::Start(Dfget({"--no-progress", url, "-O", Out("c.bin")}), Err());
  const std::string log_path = dir_.path() + "/dfdaemon.log";
  for (int i = 0; i < 100 && ReadFile(log_path).find("task_id=" + id) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  dfget.Kill(SIGKILL);
  dfget.Wait();
  std::string log;
  for (int i = 0; i < 300; ++i) {
    log = ReadFile(log_path);
    if (log.find("task " + id + " finished") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(Count(log, "download stream ended task_id=" + id + " reason=client cancelled"), 1u)
      << log;
  EXPECT_EQ(Count(log, "task " + id + " finished"), 1u) << "the task stopped with its client:\n"
                                                        << log;
}

// The binaries of this test's NEEDS must be there; the others (the libtorch services, the
// benchmarks) are checked when they were built.
TEST_F(EverydayTest, EveryBinaryPrintsTheOneVersion) {
  std::string first;
  const std::vector<std::pair<std::string, bool>> binaries = {
      {"dfget/dfget", true},
      {"daemon/dfdaemon", true},
      {"scheduler/dfscheduler", true},
      {"bench/dfbench", true},
      {"dfcache/dfcache", true},
      {"trainer/dftrainer", false},
      {"inference/dfinference", false},
      {"inference/dfinference_bench", false},
      {"scheduler/scheduler_bench", false},
      {"scheduler/store_bench", false},
      {"scheduler/tls_bench", false},
      {"daemon/tools/df_piece_bench", false}};
  for (const auto& [bin, required] : binaries) {
    if (!required && !std::filesystem::exists(Bin(bin))) continue;
    std::string out;
    ASSERT_EQ(bench::Run({Bin(bin), "--version"}, &out), 0) << bin << ": " << out;
    std::string name = std::filesystem::path(bin).filename();
    ASSERT_EQ(out.rfind(name + " ", 0), 0u) << out;
    std::string version = out.substr(name.size() + 1, out.find('\n') - name.size() - 1);
    EXPECT_EQ(version.rfind("0.", 0), 0u) << "the CMake project version first: " << out;
    if (first.empty()) first = version;
    EXPECT_EQ(version, first) << bin << " prints another version";
  }
}

// An auto-started daemon says where it logs and keeps its data and how to stop it; `dfdaemon
// status` describes it and `dfdaemon stop` stops it (its locks released) over the socket.
TEST_F(EverydayTest, AutoStartedDaemonIsAnnouncedAndStoppedOverTheSocket) {
  std::string sha = bench::MakeFile(root_ + "/a.bin", 2 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  DaemonsStopper stopper{sock_};
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({origin.Url("a.bin"), "-O", Out("a.bin")}), &out), 0) << out;
  EXPECT_NE(out.find("started a dfdaemon"), std::string::npos) << out;
  EXPECT_NE(out.find(Data() + "/dfdaemon.log"), std::string::npos) << out;
  EXPECT_NE(out.find("dfdaemon stop --sock " + sock_), std::string::npos) << out;
  EXPECT_EQ(Sha256File(Out("a.bin")).value(), sha);
  std::vector<pid_t> pids = DaemonPids(sock_);
  ASSERT_EQ(pids.size(), 1u);

  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "status", "--sock", sock_}, &out), 0) << out;
  EXPECT_NE(out.find("pid: " + std::to_string(pids[0])), std::string::npos) << out;
  EXPECT_NE(out.find("data_dir: " + Data()), std::string::npos) << out;
  EXPECT_NE(out.find("cached_tasks: 1"), std::string::npos) << out;

  // A second download uses it and says nothing about starting one.
  ASSERT_EQ(bench::Run(Dfget({origin.Url("a.bin"), "-O", Out("b.bin")}), &out), 0) << out;
  EXPECT_EQ(out, "");

  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "stop", "--sock", sock_}, &out), 0) << out;
  EXPECT_TRUE(DaemonPids(sock_).empty()) << "stop returned before the daemon exited";
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "status", "--sock", sock_}, &out), 3) << out;
  EXPECT_NE(out.find("no dfdaemon is running"), std::string::npos) << out;
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "stop", "--sock", sock_}, &out), 0) << out;
}

// An auto-started daemon has no metrics port unless dfget is asked for one
// (--daemon-metrics-port); then `dfdaemon status` names it and it serves /metrics and /healthz.
TEST_F(EverydayTest, AutoStartedDaemonServesMetricsOnTheAskedPort) {
  bench::MakeFile(root_ + "/s.bin", 1 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  DaemonsStopper stopper{sock_};
  const uint16_t port = bench::FreePort();
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", "--daemon-metrics-port", std::to_string(port),
                              origin.Url("s.bin"), "-O", Out("s.bin")}),
                       &out),
            0)
      << out;
  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "status", "--sock", sock_}, &out), 0) << out;
  const size_t at = out.find("\nmetrics: ");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string address = out.substr(at + 10, out.find('\n', at + 1) - at - 10);
  EXPECT_TRUE(address.ends_with(":" + std::to_string(port))) << out;
  ASSERT_EQ(bench::Run({"curl", "-sf", "http://" + address + "/healthz"}, &out), 0) << out;
  EXPECT_EQ(out.substr(0, 2), "ok") << out;
  ASSERT_EQ(bench::Run({"curl", "-sf", "http://" + address + "/metrics"}, &out), 0) << out;
  EXPECT_NE(out.find("# TYPE df_daemon_tasks_started_total counter"), std::string::npos) << out;
}

// An auto-started daemon given a scheduler (dfget --scheduler) announces its host and is a
// parent for other peers: a second daemon downloads the file from it, and the origin serves it
// once.
TEST_F(EverydayTest, AutoStartedDaemonWithASchedulerIsAParentForOthers) {
  bench::MakeFile(root_ + "/p.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  const uint16_t scheduler_port = bench::FreePort();
  Process scheduler =
      Process::Start({Bin("scheduler/dfscheduler"), "--listen",
                      "127.0.0.1:" + std::to_string(scheduler_port), "--metrics", ""},
                     dir_.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port, 10000));
  const std::string scheduler_address = "127.0.0.1:" + std::to_string(scheduler_port);
  DaemonsStopper stopper{sock_};
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", "--scheduler", scheduler_address,
                              origin.Url("p.bin"), "-O", Out("p1.bin")}),
                       &out),
            0)
      << out;
  ASSERT_EQ(DaemonPids(sock_).size(), 1u) << out;

  const std::string other_sock = dir_.path() + "/other.sock";
  const uint16_t other_metrics = bench::FreePort();
  Process other = Process::Start(
      {Bin("daemon/dfdaemon"), "--sock", other_sock, "--data-dir", dir_.path() + "/other-data",
       "--grpc-port", "0", "--piece-port", "0", "--metrics-port", std::to_string(other_metrics),
       "--proxy-port", "0", "--ip", "127.0.0.1", "--scheduler", scheduler_address},
      dir_.path() + "/other.log");
  ASSERT_TRUE(bench::WaitForUnixSocket(other_sock, 30000));
  ASSERT_EQ(bench::Run({Bin("dfget/dfget"), "--daemon-sock", other_sock, "--data-dir",
                        dir_.path() + "/other-data", "--no-progress", origin.Url("p.bin"), "-O",
                        Out("p2.bin")},
                       &out),
            0)
      << out;
  EXPECT_EQ(Sha256File(Out("p2.bin")).value(), Sha256File(Out("p1.bin")).value());
  const std::string text =
      ScrapeUntil(other_metrics,
                  {"df_daemon_download_bytes_total{source=\"peer\"} " + std::to_string(4 * kMiB)});
  EXPECT_NE(text.find("df_daemon_download_bytes_total{source=\"peer\"} " +
                      std::to_string(4 * kMiB) + "\n"),
            std::string::npos)
      << text << ReadFile(dir_.path() + "/other.log");
  EXPECT_EQ(origin.BytesServed(), 4 * kMiB) << "the second download went to the origin";
}

// Several dfgets racing to auto-start get one daemon (the data dir's and socket's flocks), and
// exactly one of them says it started it.
TEST_F(EverydayTest, SixDfgetsRacingToAutoStartGetOneDaemon) {
  std::string sha = bench::MakeFile(root_ + "/c.bin", 4 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  DaemonsStopper stopper{sock_};
  constexpr int kDfgets = 6;
  std::vector<Process> dfgets;
  for (int i = 0; i < kDfgets; ++i) {
    dfgets.push_back(
        Process::Start(Dfget({origin.Url("c.bin"), "-O", Out("c" + std::to_string(i))}),
                       dir_.path() + "/dfget" + std::to_string(i) + ".log"));
  }
  size_t most_daemons = 0;
  bool running = true;
  while (running) {  // sample the daemons while the dfgets run
    most_daemons = std::max(most_daemons, DaemonPids(sock_).size());
    running = false;
    for (auto& p : dfgets) running = running || p.running();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int announced = 0;
  for (int i = 0; i < kDfgets; ++i) {
    std::string log = ReadFile(dir_.path() + "/dfget" + std::to_string(i) + ".log");
    EXPECT_EQ(dfgets[i].Wait(60000), 0) << log;
    announced += log.find("started a dfdaemon") != std::string::npos ? 1 : 0;
    auto got = Sha256File(Out("c" + std::to_string(i)));
    EXPECT_TRUE(got.ok() && got.value() == sha) << i;
  }
  std::vector<pid_t> daemons = DaemonPids(sock_);
  for (int i = 0; i < 100 && daemons.size() > 1; ++i) {  // losers exit right after their start
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    daemons = DaemonPids(sock_);
  }
  EXPECT_EQ(daemons.size(), 1u) << ReadFile(Data() + "/dfdaemon.log");
  EXPECT_EQ(announced, 1) << "exactly the dfget whose daemon won says it started one";
  EXPECT_LE(most_daemons, static_cast<size_t>(kDfgets)) << "sanity";
}

// dfcache: import a file you have, see it listed (URL without its secret), stat it, export it to
// a file and to a pipe, download it with dfget from the cache alone (the origin is unreachable),
// delete it; a wrong digest imports nothing; gc runs.
TEST_F(EverydayTest, DfcacheImportListStatExportDeleteRoundTrip) {
  Process daemon = StartDaemon();
  std::string sha = bench::MakeFile(dir_.path() + "/have.bin", 5 * kMiB + 123);
  const std::string url =
      "http://127.0.0.1:" + std::to_string(bench::FreePort()) + "/model.bin?token=s3cr3t";
  const std::string id = TaskId(TaskIdInput{url, "", "", 0, {}});
  std::string out;
  ASSERT_EQ(Dfcache({"import", dir_.path() + "/have.bin", "--url", url}, &out), 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  EXPECT_EQ(out.find("s3cr3t"), std::string::npos) << out;

  ASSERT_EQ(Dfcache({"list"}, &out), 0) << out;
  EXPECT_NE(out.find(id), std::string::npos) << out;
  EXPECT_NE(out.find("done"), std::string::npos) << out;
  EXPECT_NE(out.find("5.0 MiB"), std::string::npos) << out;
  EXPECT_NE(out.find("token=REDACTED"), std::string::npos) << out;
  EXPECT_EQ(out.find("s3cr3t"), std::string::npos) << "a secret in a listing: " << out;

  ASSERT_EQ(Dfcache({"stat", url}, &out), 0) << out;
  EXPECT_NE(out.find("task: " + id), std::string::npos) << out;
  EXPECT_NE(out.find("size: " + std::to_string(5 * kMiB + 123)), std::string::npos) << out;
  EXPECT_NE(out.find("state: done"), std::string::npos) << out;
  ASSERT_EQ(Dfcache({"stat", id}, &out), 0) << out;  // by task id too

  ASSERT_EQ(Dfcache({"export", url, "-O", Out("exported.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("exported.bin")).value(), sha);
  PipedRun piped = RunIntoPipe(
      {Bin("dfcache/dfcache"), "--daemon-sock", sock_, "export", url, "-O", "-"}, Err());
  EXPECT_EQ(piped.exit_code, 0) << ReadFile(Err());
  EXPECT_EQ(piped.sha256, sha);

  // Nothing listens at the URL: dfget succeeds only because the import seeded the cache.
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("via-dfget.bin")}), &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("via-dfget.bin")).value(), sha);

  ASSERT_EQ(Dfcache({"delete", url}, &out), 0) << out;
  EXPECT_EQ(Dfcache({"stat", url}, &out), 1) << out;
  EXPECT_NE(out.find("not in the cache"), std::string::npos) << out;
  EXPECT_EQ(Dfcache({"export", url, "-O", Out("gone.bin")}, &out), 1) << out;
  EXPECT_FALSE(std::filesystem::exists(Out("gone.bin")));
  ASSERT_EQ(Dfcache({"list"}, &out), 0) << out;
  EXPECT_EQ(out.find(id), std::string::npos) << out;

  EXPECT_EQ(Dfcache({"import", dir_.path() + "/have.bin", "--url", url, "--digest",
                     "sha256:" + std::string(64, 'b')},
                    &out),
            1)
      << out;
  EXPECT_NE(out.find("digest mismatch"), std::string::npos) << out;
  EXPECT_EQ(Dfcache({"stat", url}, &out), 1) << "a failed import left a task: " << out;
  // The right digest imports; a second import finds it cached.
  ASSERT_EQ(
      Dfcache({"import", dir_.path() + "/have.bin", "--url", url, "--digest", "sha256:" + sha},
              &out),
      0)
      << out;
  ASSERT_EQ(Dfcache({"import", dir_.path() + "/have.bin", "--url", url}, &out), 0) << out;
  EXPECT_NE(out.find("already cached"), std::string::npos) << out;
  EXPECT_EQ(Dfcache({"gc"}, &out), 0) << out;
  EXPECT_EQ(Dfcache({"stat", url}, &out), 0) << "gc removed a fresh task: " << out;
}

TEST_F(EverydayTest, DfcacheListForgetsAContentFileRemovedByHandAndDfgetFetchesItAgain) {
  std::string sha = bench::MakeFile(root_ + "/g.bin", 2 * kMiB);
  NginxOrigin origin(root_);
  ASSERT_TRUE(origin.ok());
  Process daemon = StartDaemon();
  const std::string url = origin.Url("g.bin");
  const std::string id = TaskId(TaskIdInput{url, "", "", 0, {}});
  std::string out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("g1.bin")}), &out), 0) << out;
  ASSERT_EQ(Dfcache({"list"}, &out), 0) << out;
  ASSERT_NE(out.find(id), std::string::npos) << out;
  ASSERT_EQ(::unlink((Data() + "/content/" + id).c_str()), 0);
  ASSERT_EQ(Dfcache({"list"}, &out), 0) << out;
  EXPECT_EQ(out.find(id), std::string::npos) << "a task without content is listed: " << out;
  ASSERT_EQ(bench::Run(Dfget({"--no-progress", url, "-O", Out("g2.bin")}), &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("g2.bin")).value(), sha);
  EXPECT_EQ(origin.BytesServed(), 2 * 2 * kMiB);
}

TEST_F(EverydayTest, DfcacheWithoutADaemonSaysSoAndBadInputIsAUsageError) {
  std::string out;
  EXPECT_EQ(Dfcache({"list"}, &out), 3) << out;
  EXPECT_NE(out.find("no dfdaemon is running"), std::string::npos) << out;
  EXPECT_TRUE(DaemonPids(sock_).empty()) << "dfcache must not start a daemon";
  Process daemon = StartDaemon();
  EXPECT_EQ(Dfcache({"stat", "ftp://x/y"}, &out), 2) << out;
  EXPECT_EQ(Dfcache({"import", dir_.path() + "/missing", "--url", "http://h/x"}, &out), 1) << out;
  EXPECT_EQ(Dfcache({"import", dir_.path(), "--url", "http://h/x"}, &out), 2) << out;
  EXPECT_EQ(Dfcache({"bogus"}, &out), 2) << out;
  EXPECT_EQ(Dfcache({"list"}, &out), 0) << "the daemon survived: " << out;
}

}  // namespace
}  // namespace df
