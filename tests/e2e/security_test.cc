// End-to-end checks of the daemon's trust boundaries (issue 14, docs/security.md): who may
// trigger a seed download, which URLs a daemon fetches, which ids it believes, where it listens,
// and the caps and liveness of downloads. Real dfdaemon and dfget processes, a real nginx origin.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"
#include "dfdaemon.grpc.pb.h"

namespace df {
namespace {

using bench::NginxOrigin;
using bench::Process;
using bench::TempDir;
namespace dv1 = df::dfdaemon::v1;
using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr char kToken[] = "e2e-test-token-0123456789";

class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() + "/origin";
    std::filesystem::create_directories(root_);
    std::filesystem::create_directories(dir_.path() + "/out");
    sock_ = dir_.path() + "/dfdaemon.sock";
    token_file_ = dir_.path() + "/token";
    std::FILE* f = std::fopen(token_file_.c_str(), "w");
    std::fputs(kToken, f);
    std::fclose(f);
    ::chmod(token_file_.c_str(), 0600);
  }

  // A daemon on 127.0.0.1 whose scheduler is `scheduler` (unreachable by default: downloads go
  // back to source, and only that address may trigger it when no token is set).
  Process StartDaemon(std::vector<std::string> extra,
                      const std::string& scheduler = "127.0.0.3:9") {
    grpc_port_ = bench::FreePort();
    std::vector<std::string> argv = {Bin("daemon/dfdaemon"),
                                     "--sock",
                                     sock_,
                                     "--data-dir",
                                     dir_.path() + "/data",
                                     "--ip",
                                     "127.0.0.1",
                                     "--grpc-port",
                                     std::to_string(grpc_port_),
                                     "--piece-port",
                                     "0",
                                     "--metrics-port",
                                     "0",
                                     "--proxy-port",
                                     "0",
                                     "--scheduler",
                                     scheduler,
                                     "--log-level",
                                     "info"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p = Process::Start(argv, dir_.path() + "/dfdaemon.log");
    EXPECT_TRUE(bench::WaitForUnixSocket(sock_, 10000)) << "dfdaemon did not start";
    return p;
  }

  std::unique_ptr<dv1::DfdaemonUpload::Stub> Upload() {
    return dv1::DfdaemonUpload::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(grpc_port_), grpc::InsecureChannelCredentials()));
  }
  std::unique_ptr<dv1::DfdaemonDownload::Stub> Local() {
    return dv1::DfdaemonDownload::NewStub(
        grpc::CreateChannel("unix:" + sock_, grpc::InsecureChannelCredentials()));
  }

  grpc::Status Trigger(const std::string& url, const std::string& task_id, bool with_token) {
    dv1::TriggerDownloadTaskRequest req;
    req.mutable_task()->set_url(url);
    req.mutable_task()->set_task_id(task_id);
    dv1::TriggerDownloadTaskResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    return Upload()->TriggerDownloadTask(&ctx, req, &resp);
  }

  // The local daemon's view of a task; nullopt when it does not have it.
  std::optional<dv1::StatTaskResponse> Stat(const std::string& task_id) {
    grpc::ClientContext ctx;
    dv1::StatTaskRequest req;
    req.set_task_id(task_id);
    dv1::StatTaskResponse resp;
    if (!Local()->StatTask(&ctx, req, &resp).ok()) return std::nullopt;
    return resp;
  }

  int Dfget(const std::vector<std::string>& extra, std::string* out) {
    std::vector<std::string> argv = {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return bench::Run(argv, out, 120000);
  }

  static std::string Id(const std::string& url) { return TaskId(TaskIdInput{url, "", "", 0, {}}); }
  std::string Out(const std::string& name) { return dir_.path() + "/out/" + name; }
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

  TempDir dir_;
  std::string root_, sock_, token_file_;
  uint16_t grpc_port_ = 0;
};

// Issue 14: TriggerDownloadTask on 0.0.0.0 took any URL and task id from anyone.
TEST_F(SecurityTest, WithoutATokenOnlyTheSchedulersAddressMayTriggerASeed) {
  bench::MakeFile(root_ + "/f.bin", kMiB);
  NginxOrigin origin(root_);
  Process daemon = StartDaemon({"--seed"});  // its scheduler is 127.0.0.3; we call from .1
  std::string url = origin.Url("f.bin");
  grpc::Status s = Trigger(url, Id(url), false);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_FALSE(Stat(Id(url)).has_value()) << "a refused trigger started a task";
  EXPECT_EQ(origin.Requests(), 0);
}

TEST_F(SecurityTest, ASeedFetchesOnlyAllowedUrlsUnderTheirOwnIds) {
  bench::MakeFile(root_ + "/f.bin", 3 * kMiB);
  NginxOrigin origin(root_);
  Process daemon = StartDaemon({"--seed", "--auth-token-file", token_file_});
  std::string url = origin.Url("f.bin");
  EXPECT_EQ(Trigger(url, Id(url), false).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Trigger("file:///etc/passwd", Id("file:///etc/passwd"), true).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Trigger("http://169.254.169.254:80/latest/meta-data", std::string(64, 'a'), true)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED)
      << "an id that is not the URL's must be refused";
  EXPECT_EQ(Trigger(url, Id(origin.Url("other.bin")), true).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_FALSE(Stat(Id("file:///etc/passwd")).has_value());
  EXPECT_FALSE(Stat(std::string(64, 'a')).has_value());

  // The real thing works: the seed fetches the task (its scheduler is unreachable: origin).
  ASSERT_TRUE(Trigger(url, Id(url), true).ok());
  bool done = false;
  for (int i = 0; i < 500 && !done; ++i) {
    auto st = Stat(Id(url));
    done = st && st->done();
    if (!done) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(done);
}

TEST_F(SecurityTest, ANormalPeerRefusesSeedTriggers) {
  NginxOrigin origin(root_);
  Process daemon = StartDaemon({"--auth-token-file", token_file_});
  std::string url = origin.Url("f.bin");
  EXPECT_EQ(Trigger(url, Id(url), true).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(SecurityTest, AvailabilityStreamsNeedTheTokenWhenOneIsSet) {
  Process daemon = StartDaemon({"--auth-token-file", token_file_});
  dv1::SyncPiecesRequest req;
  req.set_task_id(std::string(64, 'a'));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  auto reader = Upload()->SyncPieces(&ctx, req);
  dv1::PieceAvailability msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, DfgetOfAFileUrlNeedsAnAllowedDirectory) {
  std::string allowed = dir_.path() + "/allowed";
  std::filesystem::create_directories(allowed);
  std::string sha = bench::MakeFile(allowed + "/f.bin", kMiB);
  Process daemon = StartDaemon({"--allow-file-dir", allowed});
  std::string out;
  EXPECT_EQ(Dfget({"file:///etc/passwd", "-O", Out("passwd")}, &out), 2) << out;
  EXPECT_NE(out.find("outside the allowed"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(Out("passwd")));
  ASSERT_EQ(Dfget({"file://" + allowed + "/f.bin", "-O", Out("f.bin")}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("f.bin")).value(), sha);
}

// Issue 14: the gRPC and piece ports were bound to 0.0.0.0 whatever --ip said.
TEST_F(SecurityTest, PortsListenOnTheAdvertisedAddressOnly) {
  Process daemon = StartDaemon({});
  auto connects = [](const char* ip, uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    ::inet_pton(AF_INET, ip, &a.sin_addr);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
  };
  ASSERT_TRUE(bench::WaitForTcp(grpc_port_, 10000));  // the TCP servers start after the socket
  EXPECT_TRUE(connects("127.0.0.1", grpc_port_));
  EXPECT_FALSE(connects("127.0.0.2", grpc_port_)) << "the gRPC port listens beyond --ip";
}

// Issue 14: after DeleteTask, new downloads of the same task waited forever on the dead one.
TEST_F(SecurityTest, ADownloadAfterACancelledOneOfTheSameTaskFinishes) {
  // 16 pieces over 4 origin connections at 2 MB/s each: pieces land in fours, every 2 s.
  std::string sha = bench::MakeFile(root_ + "/slow.bin", 64 * kMiB);
  NginxOrigin origin(root_, "2m");
  Process daemon = StartDaemon({});
  std::string url = origin.Url("slow.bin");
  Process first = Process::Start(
      {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, url, "-O", Out("first.bin")},
      dir_.path() + "/dfget1.log");
  bool started = false;
  for (int i = 0; i < 500 && !started; ++i) {
    auto st = Stat(Id(url));
    started = st && st->finished_pieces() > 0;
    if (!started) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(started);
  {
    grpc::ClientContext ctx;
    dv1::DeleteTaskRequest req;
    req.set_task_id(Id(url));
    dv1::DeleteTaskResponse resp;
    ASSERT_TRUE(Local()->DeleteTask(&ctx, req, &resp).ok());
  }
  EXPECT_NE(first.Wait(30000), 0) << "the cancelled download reported success";
  std::string out;
  ASSERT_EQ(Dfget({url, "-O", Out("second.bin"), "--timeout", "60s"}, &out), 0) << out;
  EXPECT_EQ(Sha256File(Out("second.bin")).value(), sha);
}

TEST_F(SecurityTest, DownloadsBeyondTheCapGetAClearError) {
  bench::MakeFile(root_ + "/slow.bin", 16 * kMiB);
  bench::MakeFile(root_ + "/other.bin", kMiB);
  NginxOrigin origin(root_, "1m");
  Process daemon = StartDaemon({"--max-running-tasks", "1"});
  std::string url = origin.Url("slow.bin");
  // 4 MiB pieces: nginx paces each response only after its first chunk, so 1 MiB ranges (the
  // default for this size) would come at full speed and the download end before the second.
  Process first = Process::Start({Bin("dfget/dfget"), "--no-progress", "--daemon-sock", sock_, url,
                                  "-O", Out("first.bin"), "--piece-length", "4MiB"},
                                 dir_.path() + "/dfget1.log");
  const std::string first_id = TaskId(TaskIdInput{url, "", "", 4 * kMiB, {}});
  bool started = false;
  for (int i = 0; i < 500 && !started; ++i) {
    started = Stat(first_id).has_value();
    if (!started) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(started);
  std::string out;
  EXPECT_EQ(Dfget({origin.Url("other.bin"), "-O", Out("other.bin")}, &out), 1) << out;
  EXPECT_NE(out.find("max_running_tasks"), std::string::npos) << out;
  first.Stop();
}

}  // namespace
}  // namespace df
