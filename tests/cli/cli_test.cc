// dfget's progress line, summary and rate; dfget's output resolution and content streaming;
// dfcache's formatting. Lines are pinned as string fixtures at several widths.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "dfcache/format.h"
#include "dfget/output.h"
#include "dfget/progress.h"

namespace df {
namespace {

constexpr uint64_t kGiB = 1024ull * 1024 * 1024;
constexpr double kMiB = 1024.0 * 1024;

// 42% of 4 GiB at 85.3 MiB/s: 27.6 s left.
ProgressSnapshot Midway() {
  return {static_cast<int64_t>(4 * kGiB), static_cast<uint64_t>(1.7 * kGiB), 85.3 * kMiB};
}

TEST(ProgressLine, FixturesAtSeveralWidths) {
  const ProgressSnapshot s = Midway();
  EXPECT_EQ(FormatProgressLine(s, 120),
            " 42% [#####################.............................] 1.7 GiB/4.0 GiB  "
            "85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 80),
            " 42% [##############....................] 1.7 GiB/4.0 GiB  85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 60),
            " 42% [#####.........] 1.7 GiB/4.0 GiB  85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 50), " 42%  1.7 GiB/4.0 GiB  85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 40), " 42% [####.......] 85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 30), " 42%  85.3 MiB/s  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 20), " 42%  ETA 0:28");
  EXPECT_EQ(FormatProgressLine(s, 10), " 42%");
  EXPECT_EQ(FormatProgressLine(s, 1), " ");
}

TEST(ProgressLine, NeverReachesTheLastColumn) {
  for (int width = 1; width <= 200; ++width) {
    for (const ProgressSnapshot& s :
         {Midway(), ProgressSnapshot{-1, 123456789, 0}, ProgressSnapshot{0, 0, 0},
          ProgressSnapshot{static_cast<int64_t>(kGiB), kGiB, 1e9},
          ProgressSnapshot{static_cast<int64_t>(1000 * kGiB), 1, 1}}) {
      std::string line = FormatProgressLine(s, width);
      EXPECT_LE(static_cast<int>(line.size()), std::max(1, width - 1)) << width << ": " << line;
      EXPECT_EQ(line.find('\n'), std::string::npos);
    }
  }
}

TEST(ProgressLine, UnknownTotalAndUnknownRate) {
  EXPECT_EQ(FormatProgressLine({-1, 123456789, 0}, 80), "117.7 MiB");
  EXPECT_EQ(FormatProgressLine({-1, 123456789, 2 * kMiB}, 80), "117.7 MiB  2.0 MiB/s");
  // Before the first rate sample, no ETA is invented.
  EXPECT_EQ(FormatProgressLine({static_cast<int64_t>(kGiB), 0, 0}, 50),
            "  0% [...................] 0 B/1.0 GiB  ETA --:--");
  EXPECT_EQ(FormatProgressLine({static_cast<int64_t>(kGiB), kGiB, 10 * kMiB}, 60),
            "100% [##############] 1.0 GiB/1.0 GiB  10.0 MiB/s  ETA 0:00");
  // Exactly the width of the line that fits (79 columns at 80): the bar fills what is left.
  EXPECT_EQ(FormatProgressLine(Midway(), 80).size(), 79u);
}

TEST(ProgressLine, Eta) {
  EXPECT_EQ(FormatEta(0), "0:00");
  EXPECT_EQ(FormatEta(59.4), "0:59");
  EXPECT_EQ(FormatEta(725), "12:05");
  EXPECT_EQ(FormatEta(3723), "1:02:03");
  EXPECT_EQ(FormatEta(-1), "--:--");
  EXPECT_EQ(FormatEta(1e12), "--:--");
}

TEST(ProgressSummary, SaysSizeTimeRateAndWhereTheBytesCameFrom) {
  EXPECT_EQ(FormatSummary({4 * kGiB, 48.2, 3 * kGiB, kGiB}),
            "downloaded 4.0 GiB in 48.2 s (85.0 MiB/s): 3.0 GiB from peers, 1.0 GiB from the "
            "origin");
  EXPECT_EQ(FormatSummary({kGiB, 0.5, 0, 0}),
            "downloaded 1.0 GiB in 0.5 s (2.0 GiB/s): from the local cache");
  // At 40 columns, whole groups per line, none reaching the last column.
  EXPECT_EQ(FormatSummary({12 << 20, 6.0, 0, 12 << 20}, 40),
            "downloaded 12.0 MiB in 6.0 s\n(2.0 MiB/s): 0 B from peers,\n12.0 MiB from the origin");
  EXPECT_EQ(FormatSummary({12 << 20, 6.0, 0, 12 << 20}, 120),
            "downloaded 12.0 MiB in 6.0 s (2.0 MiB/s): 0 B from peers, 12.0 MiB from the origin");
}

TEST(RateMeter, MovingAverageOverTheWindow) {
  using namespace std::chrono_literals;
  RateMeter m(3s);
  auto t0 = RateMeter::Clock::time_point{} + 100s;
  EXPECT_EQ(m.rate_bytes_per_sec(), 0);
  m.Add(t0, 0);
  m.Add(t0 + 50ms, 1000);
  EXPECT_EQ(m.rate_bytes_per_sec(), 0) << "50 ms says nothing yet";
  // 10 MB/s for 5 s, then 1 MB/s: after 3 s more the average is the new rate alone.
  for (int i = 1; i <= 50; ++i) m.Add(t0 + i * 100ms, static_cast<uint64_t>(i) * 1000000);
  EXPECT_NEAR(m.rate_bytes_per_sec(), 10e6, 1);
  for (int i = 1; i <= 30; ++i) {
    m.Add(t0 + 5s + i * 100ms, 50000000 + static_cast<uint64_t>(i) * 100000);
  }
  EXPECT_NEAR(m.rate_bytes_per_sec(), 1e6, 1);
  // Half-way through a change, the average is between the two.
  for (int i = 1; i <= 15; ++i) {
    m.Add(t0 + 8s + i * 100ms, 53000000 + static_cast<uint64_t>(i) * 1000000);
  }
  EXPECT_NEAR(m.rate_bytes_per_sec(), 5.5e6, 1);
  // A counter that goes back (a piece dropped) restarts the average instead of going negative.
  m.Add(t0 + 10s, 1000);
  EXPECT_EQ(m.rate_bytes_per_sec(), 0);
}

TEST(TerminalWidth, FallsBackToColumnsThen80) {
  int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  ::setenv("COLUMNS", "57", 1);
  EXPECT_EQ(TerminalWidth(fd), 57);
  ::unsetenv("COLUMNS");
  EXPECT_EQ(TerminalWidth(fd), 80);
  ::close(fd);
}

class OutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("df-cli-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string P(const std::string& name) { return (dir_ / name).string(); }
  std::filesystem::path dir_;
};

TEST_F(OutputTest, DashIsStdoutAndAFileIsPlacedByTheDaemon) {
  auto out = ResolveOutput("-");
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->kind, OutputTarget::kStream);
  EXPECT_EQ(out->fd, STDOUT_FILENO);
  auto file = ResolveOutput(P("new.bin"));
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(file->kind, OutputTarget::kPlace);
  EXPECT_EQ(file->path, P("new.bin"));
  std::ofstream(P("old.bin")) << "x";
  EXPECT_EQ(ResolveOutput(P("old.bin"))->kind, OutputTarget::kPlace);
}

TEST_F(OutputTest, FifoAndCharacterDeviceAreStreamedDirectoryIsRefused) {
  auto null = ResolveOutput("/dev/null");
  ASSERT_TRUE(null.ok()) << null.status().message();
  EXPECT_EQ(null->kind, OutputTarget::kStream);
  EXPECT_GE(null->fd, 0);
  ASSERT_EQ(::mkfifo(P("fifo").c_str(), 0600), 0);
  int reader =
      ::open(P("fifo").c_str(), O_RDONLY | O_NONBLOCK);  // so that the open for writing returns
  ASSERT_GE(reader, 0);
  auto fifo = ResolveOutput(P("fifo"));
  ASSERT_TRUE(fifo.ok()) << fifo.status().message();
  EXPECT_EQ(fifo->kind, OutputTarget::kStream);
  ::close(reader);
  auto dir = ResolveOutput(dir_.string());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(dir.status().message().find("is a directory"), std::string::npos);
  // A symlink to a regular file is left to the daemon, which refuses to replace it.
  std::ofstream(P("target")) << "precious";
  ASSERT_EQ(::symlink(P("target").c_str(), P("link").c_str()), 0);
  EXPECT_EQ(ResolveOutput(P("link"))->kind, OutputTarget::kPlace);
}

TEST_F(OutputTest, StreamerCopiesAGrowingFileInOrderToAPipe) {
  std::string content(3 << 20, '\0');
  for (size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7 + i / 4096);
  int fd = ::open(P("content").c_str(), O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  std::string got;
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  });
  ContentStreamer streamer(pipe_fds[1]);
  ASSERT_TRUE(streamer.Open(P("content")).ok());
  // The file grows a MiB at a time, as pieces finish; each step copies only the new prefix.
  for (size_t mib = 1; mib <= 3; ++mib) {
    ASSERT_EQ(::pwrite(fd, content.data() + ((mib - 1) << 20), 1 << 20,
                       static_cast<off_t>((mib - 1) << 20)),
              1 << 20);
    ASSERT_TRUE(streamer.CopyUpTo(mib << 20).ok());
    EXPECT_EQ(streamer.written(), mib << 20);
  }
  ::close(pipe_fds[1]);
  reader.join();
  ::close(pipe_fds[0]);
  EXPECT_TRUE(got == content) << "bytes out of order or missing (" << got.size() << ")";
  // Asking for more than the file holds is an error, not a hang or zeros.
  int sink = ::open("/dev/null", O_WRONLY);
  ContentStreamer short_file(sink);
  ASSERT_TRUE(short_file.Open(P("content")).ok());
  EXPECT_FALSE(short_file.CopyUpTo(4 << 20).ok());
  ::close(sink);
  ::close(fd);
}

TEST_F(OutputTest, StreamerReportsAReaderThatWentAway) {
  std::ofstream(P("content")) << std::string(1 << 20, 'x');
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  ::close(pipe_fds[0]);
  ContentStreamer streamer(pipe_fds[1]);
  ASSERT_TRUE(streamer.Open(P("content")).ok());
  Status s = streamer.CopyUpTo(1 << 20);  // SIGPIPE is ignored (main)
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("Broken pipe"), std::string::npos) << s.message();
  ::close(pipe_fds[1]);
}

TEST(DfcacheFormat, RedactUrlHidesCredentialsOnly) {
  EXPECT_EQ(RedactUrl("https://user:pass@host.example/a/b.bin"), "https://host.example/a/b.bin");
  EXPECT_EQ(RedactUrl("https://s3.example/b/k?X-Amz-Signature=abc&X-Amz-Date=1&part=2"),
            "https://s3.example/b/k?X-Amz-Signature=REDACTED&X-Amz-Date=1&part=2");
  EXPECT_EQ(RedactUrl("http://h/x?token=t&access_key=k#frag"),
            "http://h/x?token=REDACTED&access_key=REDACTED#frag");
  EXPECT_EQ(RedactUrl("http://h:8080/plain.bin"), "http://h:8080/plain.bin");
  EXPECT_EQ(RedactUrl("http://h/a@b"), "http://h/a@b") << "an @ in the path is not userinfo";
  EXPECT_EQ(RedactUrl("file:///srv/x"), "file:///srv/x");
}

TEST(DfcacheFormat, AgeAndState) {
  EXPECT_EQ(FormatAge(1000, 4000), "3s ago");
  EXPECT_EQ(FormatAge(0, 4000), "-");
  EXPECT_EQ(FormatAge(1000, 1000 + 5 * 60000), "5m ago");
  EXPECT_EQ(FormatAge(1000, 1000 + 2 * 3600000), "2h ago");
  EXPECT_EQ(FormatAge(1000, 1000 + 4 * 86400000ll), "4d ago");
  EXPECT_EQ(FormatTaskState(true, false, 5, 5), "done");
  EXPECT_EQ(FormatTaskState(false, true, 2, 5), "running 2/5");
  EXPECT_EQ(FormatTaskState(false, false, 2, 5), "partial 2/5");
  EXPECT_EQ(FormatTaskState(false, false, 0, 0), "new");
}

}  // namespace
}  // namespace df

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // as dfget does: a closed pipe is an error value, not a death
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
