// dfdaemon configuration (YAML + validation) and atomic output placement.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "daemon/task_manager.h"

namespace df {
namespace {

class TempDir {
 public:
  TempDir() {
    char t[] = "/tmp/dfcfg-XXXXXX";
    path_ = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name) << text;
    return path_ + "/" + name;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(DaemonConfig, ReadsYamlWithUnits) {
  TempDir d;
  std::string p = d.Write("c.yaml",
                          "scheduler: 10.0.0.1:8002\n"
                          "seed: true\n"
                          "piece_port: 5005\n"
                          "upload_rate: 200mbit\n"
                          "schedule_timeout: 5s\n"
                          "concurrency: 16\n");
  DaemonConfig c;
  ASSERT_TRUE(LoadDaemonConfig(p, &c).ok());
  EXPECT_EQ(c.scheduler, "10.0.0.1:8002");
  EXPECT_TRUE(c.seed);
  EXPECT_EQ(c.piece_port, 5005);
  EXPECT_EQ(c.upload_rate_bytes_per_sec, 25000000u);
  EXPECT_EQ(c.schedule_timeout_ms, 5000u);
  EXPECT_EQ(c.concurrency, 16u);
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  EXPECT_FALSE(c.hostname.empty());
  EXPECT_FALSE(c.ip.empty());
}

TEST(DaemonConfig, BadInputGetsAClearError) {
  TempDir d;
  struct Case {
    const char* yaml;
    const char* expect;  // substring of the error
  } cases[] = {
      {"shceduler: x:1\n", "unknown key 'shceduler'"},
      {"piece_port: 70000\n", "piece_port"},
      {"piece_port: many\n", "piece_port"},
      {"upload_rate: fast\n", "upload_rate"},
      {"spread_start: sometimes\n", "spread_start"},
      {"schedule_timeout: 5 fortnights\n", "schedule_timeout"},
      {"- a\n- b\n", "top level must be a map"},
      {"key: [unclosed\n", "c.yaml"},
      // Found by review, confirmed by fuzz_daemon_config: a sequence key threw out of the loader.
      {"[a]: 1\n", "keys must be scalars"},
  };
  for (const auto& tc : cases) {
    std::string p = d.Write("c.yaml", tc.yaml);
    DaemonConfig c;
    Status s = LoadDaemonConfig(p, &c);
    EXPECT_FALSE(s.ok()) << tc.yaml;
    EXPECT_NE(s.message().find(tc.expect), std::string::npos) << s.message();
  }
  DaemonConfig c;
  EXPECT_EQ(LoadDaemonConfig(d.path() + "/missing.yaml", &c).code(), StatusCode::kNotFound);
}

TEST(DaemonConfig, ValidationRejectsInconsistentValues) {
  DaemonConfig c;
  c.concurrency = 0;
  EXPECT_FALSE(ValidateDaemonConfig(&c).ok());
  c = DaemonConfig();
  c.disk_low_watermark = 0.95;
  EXPECT_FALSE(ValidateDaemonConfig(&c).ok());
  c = DaemonConfig();
  c.scheduler = "no-port";
  EXPECT_FALSE(ValidateDaemonConfig(&c).ok());
  for (uint32_t depth : {0u, 65u}) {
    c = DaemonConfig();
    c.piece_pipeline_depth = depth;
    Status s = ValidateDaemonConfig(&c);
    EXPECT_NE(s.message().find("piece_pipeline_depth"), std::string::npos) << depth;
  }
}

TEST(DaemonConfig, TlsFilesAreReadFromYamlAndMustComeTogether) {
  TempDir d;
  std::string p = d.Write("c.yaml",
                          "tls_cert_file: /etc/df/node.crt\n"
                          "tls_key_file: /etc/df/node.key\n"
                          "tls_ca_file: /etc/df/ca.crt\n");
  DaemonConfig c;
  ASSERT_TRUE(LoadDaemonConfig(p, &c).ok());
  EXPECT_EQ(c.tls_cert_file, "/etc/df/node.crt");
  EXPECT_EQ(c.tls_key_file, "/etc/df/node.key");
  EXPECT_EQ(c.tls_ca_file, "/etc/df/ca.crt");
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  c.tls_key_file.clear();
  Status s = ValidateDaemonConfig(&c);
  EXPECT_NE(s.message().find("must be set together"), std::string::npos) << s.message();
}

TEST(PlaceOutput, AppearsAtomicallyAndFailsWithoutLeavingFiles) {
  TempDir d;
  std::string content = d.Write("content", std::string(1000, 'x'));
  std::filesystem::create_directory(d.path() + "/out");
  ASSERT_TRUE(PlaceOutput(content, 1000, d.path() + "/out/file").ok());
  EXPECT_EQ(std::filesystem::file_size(d.path() + "/out/file"), 1000u);
  // Replacing an existing output is atomic too.
  ASSERT_TRUE(PlaceOutput(content, 1000, d.path() + "/out/file").ok());
  // A missing directory fails and leaves nothing.
  EXPECT_FALSE(PlaceOutput(content, 1000, d.path() + "/nodir/file").ok());
  size_t entries = 0;
  for (auto& e : std::filesystem::directory_iterator(d.path() + "/out")) (void)e, ++entries;
  EXPECT_EQ(entries, 1u);
}

size_t Entries(const std::string& dir) {
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) (void)e, ++n;
  return n;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// Issue: `dfget -O /dev/stdout` as root replaced the system's /dev/stdout symlink with a regular
// file. Only a regular file (or nothing) may be replaced.
TEST(PlaceOutput, RefusesToReplaceWhatIsNotARegularFile) {
  TempDir d;
  std::string content = d.Write("content", "new bytes");
  std::string target = d.Write("target", "precious");
  std::string out = d.path() + "/out";
  std::filesystem::create_directory(out);
  ASSERT_EQ(::symlink(target.c_str(), (out + "/link").c_str()), 0);
  ASSERT_EQ(::mkfifo((out + "/fifo").c_str(), 0644), 0);
  std::filesystem::create_directory(out + "/dir");
  for (const char* name : {"link", "fifo", "dir"}) {
    std::string path = out + "/" + name;
    Status s = PlaceOutput(content, 9, path);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name << ": " << s.ToString();
    EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
    EXPECT_EQ(CheckOutputReplaceable(path).code(), StatusCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE(CheckOutputReplaceable(out + "/absent").ok());
  EXPECT_TRUE(CheckOutputReplaceable(content).ok());
  EXPECT_TRUE(std::filesystem::is_symlink(out + "/link"));
  EXPECT_EQ(ReadAll(target), "precious");
  EXPECT_TRUE(std::filesystem::is_fifo(out + "/fifo"));
  EXPECT_TRUE(std::filesystem::is_directory(out + "/dir"));
  EXPECT_EQ(Entries(out), 3u) << "no temporary file is left behind";
}

// Issue: the output was a hard link to the cache, so editing the downloaded file in place
// changed what peers were served and what the next dfget of the URL returned.
// On the content's filesystem the output is a hard link: placing a 1 GiB output must not write
// 1 GiB again (8 peers copying doubled dfbench's time). Edits of it are caught by the store
// (PieceStore.EditedContentOfAFinishedTaskIsCheckedBeforeReuse).
TEST(PlaceOutput, OutputOnTheSameFilesystemIsALinkToTheContent) {
  TempDir d;
  const std::string bytes(100000, 'c');
  std::string content = d.Write("content", bytes);
  std::string out = d.path() + "/out";
  ASSERT_TRUE(PlaceOutput(content, bytes.size(), out).ok());
  struct stat content_st {};
  struct stat out_st {};
  ASSERT_EQ(::stat(content.c_str(), &content_st), 0);
  ASSERT_EQ(::stat(out.c_str(), &out_st), 0);
  EXPECT_EQ(content_st.st_ino, out_st.st_ino);
  EXPECT_TRUE(ReadAll(out) == bytes);
  // Placing it again is a no-op, and another output replaces a regular file atomically.
  ASSERT_TRUE(PlaceOutput(content, bytes.size(), out).ok());
  std::string other = d.Write("other", "old bytes");
  ASSERT_TRUE(PlaceOutput(content, bytes.size(), other).ok());
  EXPECT_TRUE(ReadAll(other) == bytes);
}

// A daemon on free loopback ports with its own data dir and socket under `d`.
DaemonConfig LocalDaemonConfig(const TempDir& d, const std::string& name) {
  DaemonConfig c;
  c.data_dir = d.path() + "/" + name;
  c.sock = d.path() + "/" + name + ".sock";
  c.listen_ip = "127.0.0.1";
  c.ip = "127.0.0.1";
  c.grpc_port = 0;
  c.piece_port = 0;
  c.metrics_port = 0;
  c.proxy_port = 0;
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  return c;
}

// Issue: three dfgets started at once with no daemon started three daemons on one socket and one
// data dir. Each daemon holds <data_dir>/dfdaemon.lock and <sock>.lock for its life.
TEST(Daemon, OneDaemonPerDataDirAndPerSocket) {
  TempDir d;
  DaemonConfig a = LocalDaemonConfig(d, "a");
  {
    Daemon first(a);
    ASSERT_TRUE(first.Start().ok());

    DaemonConfig same_dir = a;
    same_dir.sock = d.path() + "/other.sock";
    Daemon second(same_dir);
    Status s = second.Start();
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find("another dfdaemon holds " + a.data_dir + "/dfdaemon.lock"),
              std::string::npos)
        << s.message();

    DaemonConfig same_sock = LocalDaemonConfig(d, "b");
    same_sock.sock = a.sock;
    Daemon third(same_sock);
    s = third.Start();
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find("another dfdaemon holds " + a.sock + ".lock"), std::string::npos)
        << s.message();
  }
  // The locks die with their daemon: nothing stale blocks the next one.
  Daemon again(a);
  EXPECT_TRUE(again.Start().ok());
}

mode_t SocketMode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  EXPECT_TRUE(S_ISSOCK(st.st_mode)) << path;
  return st.st_mode & 07777;
}

// Issue: the local socket got the umask's mode, so other local users could connect (and send
// downloads to a root daemon). It is 0600 from the start, or the operator's sock_mode.
TEST(Daemon, LocalSocketIsPrivateWhateverTheUmask) {
  TempDir d;
  mode_t old_umask = ::umask(0);
  {
    Daemon daemon(LocalDaemonConfig(d, "a"));
    Status s = daemon.Start();
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(SocketMode(d.path() + "/a.sock"), 0600u);
  }
  {
    DaemonConfig group = LocalDaemonConfig(d, "g");
    group.sock_mode = 0660;
    Daemon daemon(group);
    Status s = daemon.Start();
    EXPECT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(SocketMode(d.path() + "/g.sock"), 0660u);
  }
  ::umask(old_umask);
}

TEST(DaemonConfig, SockModeIsOctalAndNeverOpenToOthers) {
  TempDir d;
  DaemonConfig c;
  EXPECT_EQ(c.sock_mode, 0600u);
  ASSERT_TRUE(LoadDaemonConfig(d.Write("c.yaml", "sock_mode: \"0660\"\n"), &c).ok());
  EXPECT_EQ(c.sock_mode, 0660u);
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  Status s = LoadDaemonConfig(d.Write("c.yaml", "sock_mode: rw-rw----\n"), &c);
  EXPECT_NE(s.message().find("sock_mode"), std::string::npos) << s.message();
  for (uint32_t bad : {0666u, 0604u, 0400u, 01600u}) {
    c = DaemonConfig();
    c.sock_mode = bad;
    s = ValidateDaemonConfig(&c);
    EXPECT_NE(s.message().find("sock_mode"), std::string::npos) << std::oct << bad;
  }
}

TEST(DaemonConfig, SpreadStartIsOffByDefaultAndReadFromYaml) {
  TempDir d;
  DaemonConfig c;
  EXPECT_FALSE(c.spread_start);
  ASSERT_TRUE(LoadDaemonConfig(d.Write("c.yaml", "spread_start: true\n"), &c).ok());
  EXPECT_TRUE(c.spread_start);
}

TEST(DaemonConfig, ProbeIntervalAndTimeoutAreDurations) {
  TempDir d;
  DaemonConfig c;
  EXPECT_EQ(c.probe_interval_ms, 5u * 60 * 1000) << "default 5m";
  EXPECT_EQ(c.probe_timeout_ms, 2000u) << "default 2s";
  ASSERT_TRUE(
      LoadDaemonConfig(d.Write("c.yaml", "probe_interval: 30s\nprobe_timeout: 500ms\n"), &c).ok());
  EXPECT_EQ(c.probe_interval_ms, 30000u);
  EXPECT_EQ(c.probe_timeout_ms, 500u);
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
  ASSERT_TRUE(LoadDaemonConfig(d.Write("c.yaml", "probe_interval: 0\n"), &c).ok());
  EXPECT_EQ(c.probe_interval_ms, 0u);
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok()) << "0 turns probing off";
  Status s = LoadDaemonConfig(d.Write("c.yaml", "probe_interval: often\n"), &c);
  EXPECT_NE(s.message().find("probe_interval"), std::string::npos) << s.message();
  struct Case {
    uint64_t interval_ms, timeout_ms;
    const char* expect;
  } cases[] = {
      {50, 2000, "probe_interval"}, {60000, 0, "probe_timeout"}, {60000, 61000, "probe_timeout"}};
  for (const auto& tc : cases) {
    c = DaemonConfig();
    c.probe_interval_ms = tc.interval_ms;
    c.probe_timeout_ms = tc.timeout_ms;
    s = ValidateDaemonConfig(&c);
    EXPECT_NE(s.message().find(tc.expect), std::string::npos) << s.message();
  }
}

// Runs the built dfdaemon with `args` (values that fail validation: no daemon starts); returns
// its exit code and stderr+stdout.
std::pair<int, std::string> RunDfdaemon(const std::string& args) {
  const char* build = std::getenv("DF_BUILD_DIR");
  std::string cmd = std::string(build ? build : ".") + "/src/daemon/dfdaemon " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while (p && (n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = p ? ::pclose(p) : -1;
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST(DaemonConfig, ProbeFlagsOverrideTheConfig) {
  if (std::getenv("DF_BUILD_DIR") == nullptr) GTEST_SKIP() << "DF_BUILD_DIR not set";
  auto [rc, help] = RunDfdaemon("--help");
  EXPECT_EQ(rc, 0);
  EXPECT_NE(help.find("--probe-interval"), std::string::npos) << help;
  EXPECT_NE(help.find("--probe-timeout"), std::string::npos);
  TempDir d;
  // A valid file value is overridden by an invalid flag value, which validation then refuses.
  std::string cfg = d.Write("c.yaml", "probe_interval: 1m\nprobe_timeout: 1s\n");
  auto [rc1, out1] = RunDfdaemon("--config " + cfg + " --probe-interval 50ms");
  EXPECT_EQ(rc1, 2);
  EXPECT_NE(out1.find("probe_interval must be"), std::string::npos) << out1;
  auto [rc2, out2] = RunDfdaemon("--config " + cfg + " --probe-timeout 0");
  EXPECT_EQ(rc2, 2);
  EXPECT_NE(out2.find("probe_timeout must be"), std::string::npos) << out2;
  auto [rc3, out3] = RunDfdaemon("--probe-interval soon");
  EXPECT_EQ(rc3, 2) << out3;
}

TEST(VerifyDigest, MatchesAndMismatches) {
  TempDir d;
  std::string p = d.Write("abc", "abc");
  EXPECT_TRUE(
      VerifyDigest(p, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
          .ok());
  EXPECT_EQ(VerifyDigest(p, "sha256:" + std::string(64, '0')).code(), StatusCode::kDataLoss);
  EXPECT_EQ(VerifyDigest(p, "md5:00").code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace df
