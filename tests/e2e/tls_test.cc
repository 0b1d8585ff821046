// Mutual TLS on the control plane (issue 14, docs/security.md "Mutual TLS"): a dfscheduler
// with TLS refuses clients without a certificate of its CA; a whole cluster with TLS on every
// control connection downloads P2P; bad TLS settings stop a process at start with a clear error.
// Real processes on loopback; certificates made at test time with the openssl CLI.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "bench/local_cluster.h"
#include "common/digest.h"
#include "common/piece.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"

namespace df {
namespace {

using bench::Process;
using bench::TempDir;
using bench::TestPki;
namespace sv1 = df::scheduler::v1;
namespace dv1 = df::dfdaemon::v1;
using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1024 * 1024;
constexpr char kToken[] = "tls-test-token-0123456789";

std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

std::string ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return "";
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

void WriteFile(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  std::fputs(text.c_str(), f);
  std::fclose(f);
  ::chmod(path.c_str(), mode);
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki_ = bench::MakeTestPki(dir_.path(), "cluster");
    ASSERT_TRUE(pki_.ok()) << pki_.error;
    other_ = bench::MakeTestPki(dir_.path(), "stranger");
    ASSERT_TRUE(other_.ok()) << other_.error;
    token_file_ = dir_.path() + "/token";
    WriteFile(token_file_, kToken);
  }

  // A dfscheduler on `ip` with `extra` flags; waits until its gRPC port answers.
  Process StartScheduler(const std::vector<std::string>& extra,
                         const std::string& ip = "127.0.0.1") {
    port_ = bench::FreePort();
    ip_ = ip;
    std::vector<std::string> argv = {Bin("scheduler/dfscheduler"),
                                     "--listen",
                                     ip + ":" + std::to_string(port_),
                                     "--metrics",
                                     "",
                                     "--log-level",
                                     "info"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Process p = Process::Start(argv, dir_.path() + "/dfscheduler.log");
    const std::string log = dir_.path() + "/dfscheduler.log";
    for (int i = 0; i < 200 && ReadFile(log).find("dfscheduler listening") == std::string::npos;
         ++i) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_NE(ReadFile(log).find("dfscheduler listening"), std::string::npos) << ReadFile(log);
    return p;
  }

  // AnnounceHost on a fresh channel with `creds`; the status says whether the call got through.
  // `name_override`: the name the server's certificate is checked against instead of the address.
  grpc::Status Announce(const std::shared_ptr<grpc::ChannelCredentials>& creds,
                        bool with_token = false, const std::string& name_override = "") {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a new connection, a new handshake
    if (!name_override.empty()) args.SetSslTargetNameOverride(name_override);
    auto stub = sv1::Scheduler::NewStub(
        grpc::CreateCustomChannel(ip_ + ":" + std::to_string(port_), creds, args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    if (with_token) ctx.AddMetadata("authorization", std::string("Bearer ") + kToken);
    sv1::AnnounceHostRequest req;
    req.mutable_host()->set_id("tls-test-host");
    req.mutable_host()->set_hostname("tls-test-host");
    req.mutable_host()->set_ip("127.0.0.1");
    req.mutable_host()->set_grpc_port(4000);
    req.mutable_host()->set_piece_port(4005);
    sv1::AnnounceHostResponse resp;
    return stub->AnnounceHost(&ctx, req, &resp);
  }

  // TLS credentials trusting `ca_file`, presenting `pki`'s certificate (none when null).
  static std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca_file,
                                                       const TestPki* pki) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = ReadFile(ca_file);
    if (pki) {
      o.pem_cert_chain = ReadFile(pki->cert_file);
      o.pem_private_key = ReadFile(pki->key_file);
    }
    return grpc::SslCredentials(o);
  }

  // Runs `argv` to completion (it must fail at start); returns its exit code and output.
  static int RunToFailure(const std::vector<std::string>& argv, std::string* out) {
    return bench::Run(argv, out, 10000);
  }

  std::vector<std::string> DaemonArgv(const std::vector<std::string>& extra,
                                      const std::string& ip = "127.0.0.1") {
    std::vector<std::string> argv = {Bin("daemon/dfdaemon"),
                                     "--sock",
                                     dir_.path() + "/d.sock",
                                     "--data-dir",
                                     dir_.path() + "/d",
                                     "--ip",
                                     ip,
                                     "--grpc-port",
                                     "0",
                                     "--piece-port",
                                     "0",
                                     "--metrics-port",
                                     "0",
                                     "--proxy-port",
                                     "0",
                                     "--scheduler",
                                     "127.0.0.1:9"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  std::vector<std::string> SchedulerArgv(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:0",
                                     "--metrics", ""};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }

  TempDir dir_;
  TestPki pki_, other_;
  std::string token_file_;
  uint16_t port_ = 0;
  std::string ip_ = "127.0.0.1";
};

TEST_F(TlsTest, SchedulerAcceptsOnlyClientsWithACertificateOfItsCa) {
  Process scheduler = StartScheduler(pki_.Flags());
  // No TLS at all, TLS without a client certificate, a certificate of another CA: all refused
  // at the handshake, before any RPC runs.
  EXPECT_FALSE(Announce(grpc::InsecureChannelCredentials()).ok());
  EXPECT_FALSE(Announce(Tls(pki_.ca_file, nullptr)).ok());
  EXPECT_FALSE(Announce(Tls(pki_.ca_file, &other_)).ok());
  // The client checks the scheduler too: trusting another CA, it refuses the server.
  EXPECT_FALSE(Announce(Tls(other_.ca_file, &pki_)).ok());
  grpc::Status ok = Announce(Tls(pki_.ca_file, &pki_));
  EXPECT_TRUE(ok.ok()) << ok.error_message();
}

// The client checks that the scheduler's certificate names the address it dialled: the test
// certificate names 127.0.0.1 only, so a scheduler reached at 127.0.0.2 is refused.
TEST_F(TlsTest, ClientsRefuseAServerCertificateThatDoesNotNameTheDialledAddress) {
  Process scheduler = StartScheduler(pki_.Flags(), "127.0.0.2");
  grpc::Status s = Announce(Tls(pki_.ca_file, &pki_));
  EXPECT_FALSE(s.ok()) << "hostname verification is off";
  // The same server, checked against the name its certificate does carry: accepted.
  s = Announce(Tls(pki_.ca_file, &pki_), false, "127.0.0.1");
  EXPECT_TRUE(s.ok()) << s.error_message();
}

TEST_F(TlsTest, TokenAndTlsCombinedNeedBoth) {
  std::vector<std::string> flags = pki_.Flags();
  flags.insert(flags.end(), {"--auth-token-file", token_file_});
  Process scheduler = StartScheduler(flags);
  EXPECT_FALSE(Announce(grpc::InsecureChannelCredentials(), true).ok());
  grpc::Status no_token = Announce(Tls(pki_.ca_file, &pki_), false);
  EXPECT_EQ(no_token.error_code(), grpc::StatusCode::UNAUTHENTICATED) << no_token.error_message();
  grpc::Status both = Announce(Tls(pki_.ca_file, &pki_), true);
  EXPECT_TRUE(both.ok()) << both.error_message();
}

// The daemon's upload port (availability streams, seed triggers) takes only clients with a
// certificate of the CA; its local API on the unix socket stays plain (file mode protects it).
TEST_F(TlsTest, DaemonUploadPortAcceptsOnlyClientsWithACertificateOfItsCa) {
  const uint16_t grpc_port = bench::FreePort();
  std::vector<std::string> argv = DaemonArgv(pki_.Flags());
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == "--grpc-port") argv[i + 1] = std::to_string(grpc_port);
  }
  Process daemon = Process::Start(argv, dir_.path() + "/dfdaemon.log");
  ASSERT_TRUE(bench::WaitForUnixSocket(dir_.path() + "/d.sock", 10000))
      << ReadFile(dir_.path() + "/dfdaemon.log");
  auto sync = [&](const std::shared_ptr<grpc::ChannelCredentials>& creds) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto stub = dv1::DfdaemonUpload::NewStub(
        grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(grpc_port), creds, args));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    dv1::SyncPiecesRequest req;
    req.set_task_id(std::string(64, 'a'));
    auto reader = stub->SyncPieces(&ctx, req);
    dv1::PieceAvailability msg;
    while (reader->Read(&msg)) {
    }
    return reader->Finish();
  };
  EXPECT_EQ(sync(grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(sync(Tls(pki_.ca_file, &other_)).error_code(), grpc::StatusCode::UNAVAILABLE);
  // Through: the daemon answers for the (unknown) task.
  grpc::Status s = sync(Tls(pki_.ca_file, &pki_));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  // The local API answers a plain client.
  auto local = dv1::DfdaemonDownload::NewStub(
      grpc::CreateChannel("unix:" + dir_.path() + "/d.sock", grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  dv1::StatTaskRequest req;
  req.set_task_id(std::string(64, 'a'));
  dv1::StatTaskResponse resp;
  EXPECT_EQ(local->StatTask(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Scheduler, seed and two peers with TLS on every control connection: the seed is triggered
// over TLS, the peers register over TLS and follow their parents' availability over TLS; the
// origin serves the file once and the peers get every byte from peers.
TEST_F(TlsTest, ClusterWithTlsEverywhereDownloadsPeerToPeer) {
  TempDir work;
  bench::ClusterOptions o;
  o.bin_dir = bench::BuildDir() + "/src";
  o.work_dir = work.path();
  o.peers = 2;
  o.daemon_args = pki_.Flags();
  o.scheduler_args = pki_.Flags();
  bench::LocalCluster cluster(o);
  std::filesystem::create_directories(cluster.OriginRoot());
  const uint64_t size = 24 * kMiB;
  std::string sha = bench::MakeFile(cluster.OriginRoot() + "/f.bin", size);
  ASSERT_TRUE(cluster.Start().ok());
  std::string url = cluster.OriginUrl("f.bin");
  std::vector<std::future<bench::PeerResult>> futures;
  for (int i = 0; i < 2; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return cluster.Download(i, url); }));
  }
  for (auto& f : futures) {
    bench::PeerResult r = f.get();
    ASSERT_TRUE(r.ok) << r.name << ": " << r.error;
    EXPECT_EQ(Sha256File(r.output_path).value(), sha) << r.name;
    EXPECT_EQ(r.bytes_from_peers, size) << r.name << " did not get the file from peers";
    EXPECT_EQ(r.bytes_from_origin, 0u) << r.name;
  }
  EXPECT_LE(cluster.OriginBytesServed(), size + ChoosePieceLength(static_cast<int64_t>(size)));
}

// Each bad setting: the process exits at start (never crashes) and says what is wrong.
TEST_F(TlsTest, BadTlsSettingsAreClearStartupErrors) {
  const std::string garbage = dir_.path() + "/garbage.pem";
  WriteFile(garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
  const std::string open_key = dir_.path() + "/open.key";
  WriteFile(open_key, ReadFile(pki_.key_file), 0644);
  struct Case {
    const char* what;
    std::vector<std::string> flags;
    std::string message;  // a part of the error
  };
  const std::vector<Case> cases = {
      {"cert without key and CA", {"--tls-cert", pki_.cert_file}, "must be set together"},
      {"key readable by others",
       {"--tls-cert", pki_.cert_file, "--tls-key", open_key, "--tls-ca", pki_.ca_file},
       "chmod 600"},
      {"missing file",
       {"--tls-cert", dir_.path() + "/nope.crt", "--tls-key", pki_.key_file, "--tls-ca",
        pki_.ca_file},
       "not found"},
      {"garbage certificate",
       {"--tls-cert", garbage, "--tls-key", pki_.key_file, "--tls-ca", pki_.ca_file},
       "not a valid PEM certificate"},
      {"key of another certificate",
       {"--tls-cert", pki_.cert_file, "--tls-key", other_.key_file, "--tls-ca", pki_.ca_file},
       "does not match"},
      {"certificate of another CA",
       {"--tls-cert", other_.cert_file, "--tls-key", other_.key_file, "--tls-ca", pki_.ca_file},
       "not a valid certificate of the cluster's CA"},
  };
  for (const Case& c : cases) {
    std::string out;
    int rc = RunToFailure(DaemonArgv(c.flags), &out);
    EXPECT_TRUE(rc == 1 || rc == 2) << "dfdaemon, " << c.what << ": exit " << rc << "\n" << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << "dfdaemon, " << c.what << ":\n" << out;
    rc = RunToFailure(SchedulerArgv(c.flags), &out);
    EXPECT_TRUE(rc == 1 || rc == 2) << "dfscheduler, " << c.what << ": exit " << rc << "\n" << out;
    EXPECT_NE(out.find(c.message), std::string::npos) << "dfscheduler, " << c.what << ":\n" << out;
  }
  // A daemon is dialled at its --ip: a certificate that does not name it is refused at start.
  std::string out;
  int rc = RunToFailure(DaemonArgv(pki_.Flags(), "127.0.0.2"), &out);
  EXPECT_TRUE(rc == 1 || rc == 2) << "exit " << rc << "\n" << out;
  EXPECT_NE(out.find("no IP subject alternative name 127.0.0.2"), std::string::npos) << out;
}

}  // namespace
}  // namespace df
