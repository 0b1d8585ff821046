// dfdaemon's gRPC services on their own: DownloadService and UploadService served in-process on
// a real gRPC server on 127.0.0.1:0, wired to a real TaskManager and PieceStore as Daemon::Start
// wires them, fetching from a real nginx. No scheduler: every download goes back to source.
// Each test calls the services through the generated stubs and asserts the status the code
// returns for what its name says.
#include "daemon/services.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cctype>
#include <cstring>
#include <iostream>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/digest.h"
#include "common/grpc_limits.h"
#include "common/ids.h"
#include "engine_fixture.h"

namespace df {
namespace {

namespace dv1 = df::dfdaemon::v1;
using std::chrono::seconds;
using std::chrono::system_clock;

constexpr char kToken[] = "services-test-token-0123456789";

// Every RPC of a test gets a deadline, so that a service that hangs fails the test instead.
void SetDeadline(grpc::ClientContext* c, int secs = 60) {
  c->set_deadline(system_clock::now() + seconds(secs));
}

// Attaches `token` as every client of the cluster does ("": none).
void AttachToken(const std::string& token, grpc::ClientContext* c) {
  if (!token.empty()) AuthToken::FromString(token).value().Attach(c);
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// What one Download call returned: every progress message and the RPC's status.
struct DownloadResult {
  std::vector<dv1::DownloadResponse> messages;
  grpc::Status status;
  const dv1::DownloadResponse& last() const { return messages.back(); }
};

class ServicesTest : public testing::EngineTest {
 protected:
  // Builds the manager and both services the way Daemon::Start does, and serves them.
  // `max_streams`: the upload service's cap on open availability streams.
  void StartServices(size_t max_streams = AvailabilityStreams::kDefaultMaxStreams) {
    manager_ = std::make_unique<TaskManager>(ctx_);
    download_service_ = std::make_unique<DownloadService>(manager_.get(), store_.get(), &trust_);
    upload_service_ =
        std::make_unique<UploadService>(manager_.get(), store_.get(), &trust_, max_streams);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", trust_.auth.ServerCredentials(), &port);
    b.RegisterService(download_service_.get());
    b.RegisterService(upload_service_.get());
    ApplyServerLimits(b);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port > 0);
    port_ = port;
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    download_ = dv1::DfdaemonDownload::NewStub(channel);
    upload_ = dv1::DfdaemonUpload::NewStub(channel);
  }

  // Stops in Daemon::Shutdown's order: downloads cancelled, server, then the manager.
  void TearDown() override {
    if (manager_) manager_->CancelAll();
    if (upload_service_) upload_service_->StopStreams();
    if (server_) server_->Shutdown(system_clock::now() + seconds(2));
    server_.reset();
    manager_.reset();
  }

  void UseToken() { trust_.auth = ControlAuth(AuthToken::FromString(kToken).value()); }

  // In kPiece pieces, as Request() (engine_fixture.h) asks, whatever the default rule.
  dv1::DownloadRequest DownloadOf(const std::string& url) const {
    dv1::DownloadRequest req;
    req.set_url(url);
    req.set_output_path(dir_.path() + "/out.bin");
    req.set_piece_length(kPiece);
    return req;
  }

  DownloadResult Download(const dv1::DownloadRequest& req) {
    grpc::ClientContext c;
    SetDeadline(&c);
    DownloadResult r;
    auto reader = download_->Download(&c, req);
    dv1::DownloadResponse m;
    while (reader->Read(&m)) r.messages.push_back(m);
    r.status = reader->Finish();
    return r;
  }

  // A Download refused before it starts: the RPC is OK, its only message FAILED with `code`.
  void ExpectRefused(const dv1::DownloadRequest& req, dv1::ErrorCode code) {
    DownloadResult r = Download(req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_EQ(r.messages.size(), 1u) << "a refused download streamed progress";
    EXPECT_EQ(r.last().state(), dv1::DOWNLOAD_STATE_FAILED);
    EXPECT_EQ(r.last().error_code(), code) << r.last().error_message();
    EXPECT_FALSE(r.last().error_message().empty());
    EXPECT_EQ(manager_->running(), 0u) << "a refused download started a task";
    EXPECT_TRUE(store_->ListTasks().empty()) << "a refused download created a task";
  }

  // Downloads the origin's file through the service; asserts it succeeded.
  DownloadResult DownloadOriginFile() {
    DownloadResult r = Download(DownloadOf(url()));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_FALSE(r.messages.empty());
    if (!r.messages.empty()) {
      EXPECT_EQ(r.last().state(), dv1::DOWNLOAD_STATE_SUCCEEDED) << r.last().error_message();
    }
    return r;
  }

  grpc::Status StatTask(const std::string& task_id, dv1::StatTaskResponse* resp) {
    grpc::ClientContext c;
    SetDeadline(&c);
    dv1::StatTaskRequest req;
    req.set_task_id(task_id);
    return download_->StatTask(&c, req, resp);
  }

  grpc::Status DeleteTask(const std::string& task_id) {
    grpc::ClientContext c;
    SetDeadline(&c);
    dv1::DeleteTaskRequest req;
    req.set_task_id(task_id);
    dv1::DeleteTaskResponse resp;
    return download_->DeleteTask(&c, req, &resp);
  }

  // Reads a whole SyncPieces stream (bounded by the deadline).
  grpc::Status SyncPieces(const std::string& task_id, const std::string& token,
                          std::vector<dv1::PieceAvailability>* got) {
    grpc::ClientContext c;
    SetDeadline(&c, 30);
    AttachToken(token, &c);
    dv1::SyncPiecesRequest req;
    req.set_task_id(task_id);
    req.set_child_peer_id("child-peer");
    req.set_child_host_id("child-host");
    auto reader = upload_->SyncPieces(&c, req);
    dv1::PieceAvailability m;
    while (reader->Read(&m)) got->push_back(m);
    return reader->Finish();
  }

  // A task of two pieces in the store, none of them finished: what a parent still downloading
  // has. The test commits its pieces itself.
  std::shared_ptr<TaskStorage> UnfinishedTask(const std::string& task_id) {
    TaskMeta meta{.task_id = task_id,
                  .content_length = static_cast<int64_t>(2 * kPiece),
                  .piece_length = kPiece};
    return store_->OpenTask(meta).value();
  }

  // The id of a task this daemon never saw.
  static std::string UnknownId() {
    return TaskId(TaskIdInput{"http://127.0.0.1:1/never.bin", "", "", 0, {}});
  }

  // A TaskInfo whose id is its spec's.
  dv1::TriggerDownloadTaskRequest TriggerOf(const std::string& url) const {
    dv1::TriggerDownloadTaskRequest req;
    req.mutable_task()->set_url(url);
    req.mutable_task()->set_piece_length(kPiece);  // as Request() (engine_fixture.h)
    req.mutable_task()->set_task_id(TaskId(TaskIdInput{url, "", "", kPiece, {}}));
    req.mutable_task()->set_content_length(-1);
    return req;
  }

  grpc::Status Trigger(const dv1::TriggerDownloadTaskRequest& req, const std::string& token = "") {
    grpc::ClientContext c;
    SetDeadline(&c);
    AttachToken(token, &c);
    dv1::TriggerDownloadTaskResponse resp;
    return upload_->TriggerDownloadTask(&c, req, &resp);
  }

  // A seed that trusts triggers from loopback only by address (no token, no TLS).
  void BecomeSeedOfLoopbackScheduler() {
    trust_.seed = true;
    trust_.scheduler_ips = {"127.0.0.1"};
  }

  ServiceTrust trust_;
  std::unique_ptr<TaskManager> manager_;
  std::unique_ptr<DownloadService> download_service_;
  std::unique_ptr<UploadService> upload_service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<dv1::DfdaemonDownload::Stub> download_;
  std::unique_ptr<dv1::DfdaemonUpload::Stub> upload_;
};

// ---- Download ----

TEST_F(ServicesTest, DownloadOfARefusedSchemeIsInvalidArgumentAndStartsNoTask) {
  StartServices();
  for (const std::string url : {"file:///etc/passwd", "ftp://127.0.0.1/f.bin", "garbage",
                                "gopher://x/", "http://", "http:///nohost"}) {
    SCOPED_TRACE(url);
    ExpectRefused(DownloadOf(url), dv1::ERROR_INVALID_ARGUMENT);
  }
}

TEST_F(ServicesTest, DownloadOfAFileUrlOutsideTheAllowedDirectoriesIsInvalidArgument) {
  std::filesystem::create_directories(dir_.path() + "/allowed");
  trust_.url_policy.file_dirs = {dir_.path() + "/allowed"};
  StartServices();
  ExpectRefused(DownloadOf("file:///etc/passwd"), dv1::ERROR_INVALID_ARGUMENT);
  ExpectRefused(DownloadOf("file://" + dir_.path() + "/allowed/../../../etc/passwd"),
                dv1::ERROR_INVALID_ARGUMENT);
}

TEST_F(ServicesTest, DownloadFromTheOriginStreamsProgressAndPlacesTheWholeFile) {
  StartOrigin(2 * kPiece + 12345);
  StartServices();
  DownloadResult r = DownloadOriginFile();
  ASSERT_GE(r.messages.size(), 2u);
  EXPECT_EQ(r.messages.front().state(), dv1::DOWNLOAD_STATE_STARTED);
  // The id is the one its spec implies, computed by the daemon (the request carries none).
  for (const auto& m : r.messages) EXPECT_EQ(m.task_id(), Request().task_id);
  const auto& last = r.last();
  EXPECT_EQ(last.content_length(), static_cast<int64_t>(size_));
  EXPECT_EQ(last.completed_length(), size_);
  EXPECT_EQ(last.total_pieces(), 3u);
  EXPECT_EQ(last.finished_pieces(), 3u);
  EXPECT_EQ(last.piece_length(), kPiece);
  EXPECT_EQ(last.bytes_from_origin(), size_);
  EXPECT_EQ(last.bytes_from_peers(), 0u);
  EXPECT_EQ(Sha256File(dir_.path() + "/out.bin").value(), sha256_);
  EXPECT_GE(origin_->Requests(), 1) << "the origin saw no request";
  EXPECT_GE(origin_->BytesServed(), size_);
}

TEST_F(ServicesTest, DownloadWithAWrongDigestFailsWithDigestMismatchAndPlacesNothing) {
  StartOrigin(kPiece);
  StartServices();
  auto req = DownloadOf(url());
  req.set_digest("sha256:" + std::string(64, '0'));
  DownloadResult r = Download(req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.last().state(), dv1::DOWNLOAD_STATE_FAILED);
  EXPECT_EQ(r.last().error_code(), dv1::ERROR_DIGEST_MISMATCH) << r.last().error_message();
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/out.bin"));
}

TEST_F(ServicesTest, DownloadOfAMissingOriginFileIsOriginNotFound) {
  StartOrigin(kPiece);
  StartServices();
  DownloadResult r = Download(DownloadOf(origin_->Url("missing.bin")));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.last().state(), dv1::DOWNLOAD_STATE_FAILED);
  EXPECT_EQ(r.last().error_code(), dv1::ERROR_ORIGIN_NOT_FOUND) << r.last().error_message();
}

TEST_F(ServicesTest, DownloadOfBadInputGetsInvalidArgumentAndStartsNoTask) {
  StartOrigin(kPiece);
  StartServices();
  struct Case {
    std::string name;
    dv1::DownloadRequest req;
  };
  std::vector<Case> cases;
  auto add = [&](std::string name, auto edit) {
    dv1::DownloadRequest req = DownloadOf(url());
    edit(req);
    cases.push_back({std::move(name), std::move(req)});
  };
  add("empty request", [](dv1::DownloadRequest& r) { r.Clear(); });
  add("empty url", [](dv1::DownloadRequest& r) { r.set_url(""); });
  add("url beyond kMaxUrlBytes",
      [&](dv1::DownloadRequest& r) { r.set_url(url() + "?q=" + std::string(kMaxUrlBytes, 'a')); });
  add("url with a newline", [&](dv1::DownloadRequest& r) { r.set_url(url() + "\nHost: x"); });
  add("piece length not a power of two",
      [](dv1::DownloadRequest& r) { r.set_piece_length(3 * 1024 * 1024); });
  add("piece length below 64 KiB", [](dv1::DownloadRequest& r) { r.set_piece_length(4096); });
  add("piece length beyond 1 GiB", [](dv1::DownloadRequest& r) { r.set_piece_length(1ull << 31); });
  add("malformed digest", [](dv1::DownloadRequest& r) { r.set_digest("sha256:zz"); });
  add("digest of another algorithm",
      [](dv1::DownloadRequest& r) { r.set_digest("md5:" + std::string(32, '0')); });
  add("tag beyond 1024 bytes", [](dv1::DownloadRequest& r) { r.set_tag(std::string(2000, 't')); });
  add("empty output path", [](dv1::DownloadRequest& r) { r.set_output_path(""); });
  add("relative output path", [](dv1::DownloadRequest& r) { r.set_output_path("out.bin"); });
  add("output path naming a directory",
      [&](dv1::DownloadRequest& r) { r.set_output_path(dir_.path() + "/"); });
  add("output in a missing directory",
      [&](dv1::DownloadRequest& r) { r.set_output_path(dir_.path() + "/no/such/out.bin"); });
  add("output over a directory", [&](dv1::DownloadRequest& r) { r.set_output_path(dir_.path()); });
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ExpectRefused(c.req, dv1::ERROR_INVALID_ARGUMENT);
  }
  EXPECT_EQ(origin_->Requests(), 0) << "bad input reached the origin";
}

// Request headers go to the origin as they are: one carrying CR LF would add headers of the
// caller's choosing to the origin request (or end it and smuggle another).
TEST_F(ServicesTest, DownloadWithHeadersThatCannotBeSentAsTheyAreIsInvalidArgument) {
  StartOrigin(kPiece);
  StartServices();
  std::vector<std::pair<std::string, std::map<std::string, std::string>>> cases = {
      {"CR LF in a value", {{"X-Forwarded", "a\r\nX-Test: injected"}}},
      {"LF in a value", {{"X-Forwarded", "a\nX-Test: injected"}}},
      {"NUL in a value", {{"X-Forwarded", std::string("a\0b", 3)}}},
      {"empty name", {{"", "v"}}},
      {"colon in a name", {{"X-Test: injected\r\nX-A", "v"}}},
      {"space in a name", {{"X Test", "v"}}},
      {"one value beyond kMaxRequestHeaderBytes",
       {{"X-Big", std::string(kMaxRequestHeaderBytes + 1, 'v')}}},
  };
  std::map<std::string, std::string> many;
  for (size_t i = 0; i <= kMaxRequestHeaders; ++i) many["X-H" + std::to_string(i)] = "v";
  cases.emplace_back("more than kMaxRequestHeaders", many);
  for (const auto& [name, headers] : cases) {
    SCOPED_TRACE(name);
    auto req = DownloadOf(url());
    req.mutable_request_headers()->insert(headers.begin(), headers.end());
    ExpectRefused(req, dv1::ERROR_INVALID_ARGUMENT);
  }
  EXPECT_EQ(origin_->Requests(), 0) << "a bad header reached the origin";

  // Within the limits, headers reach the origin.
  auto req = DownloadOf(url());
  (*req.mutable_request_headers())["X-Test"] = "from dfget\twith tab";
  DownloadResult r = Download(req);
  ASSERT_EQ(r.last().state(), dv1::DOWNLOAD_STATE_SUCCEEDED) << r.last().error_message();
  auto logged = origin_->LoggedHeader();
  ASSERT_FALSE(logged.empty());
  for (const auto& h : logged) EXPECT_EQ(h, "from dfget\\x09with tab");
}

// ---- StatTask / DeleteTask ----

TEST_F(ServicesTest, StatAndDeleteOfAnUnknownTaskAreNotFound) {
  StartServices();
  dv1::StatTaskResponse stat;
  EXPECT_EQ(StatTask(UnknownId(), &stat).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DeleteTask(UnknownId()).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServicesTest, StatReportsADownloadedTaskAndDeleteRemovesIt) {
  StartOrigin(2 * kPiece + 1);
  StartServices();
  DownloadOriginFile();
  const std::string id = Request().task_id;
  dv1::StatTaskResponse stat;
  grpc::Status s = StatTask(id, &stat);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(stat.task_id(), id);
  EXPECT_EQ(stat.url(), url());
  EXPECT_EQ(stat.content_length(), static_cast<int64_t>(size_));
  EXPECT_EQ(stat.piece_length(), kPiece);
  EXPECT_EQ(stat.total_pieces(), 3u);
  EXPECT_EQ(stat.finished_pieces(), 3u);
  EXPECT_TRUE(stat.done());
  ASSERT_FALSE(stat.content_path().empty());
  EXPECT_EQ(Sha256File(stat.content_path()).value(), sha256_);

  s = DeleteTask(id);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(store_->FindTask(id), nullptr);
  EXPECT_FALSE(std::filesystem::exists(stat.content_path()));
  EXPECT_EQ(StatTask(id, &stat).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(DeleteTask(id).error_code(), grpc::StatusCode::NOT_FOUND);
  // The placed output is the user's, not the cache's.
  EXPECT_EQ(Sha256File(dir_.path() + "/out.bin").value(), sha256_);
}

// Found here: a 100000-byte id was looked up and echoed whole in the NOT_FOUND status, which
// the client could not even receive (RESOURCE_EXHAUSTED on its metadata limit).
TEST_F(ServicesTest, MalformedTaskIdsAreRefusedWithoutTouchingTheStore) {
  StartOrigin(kPiece);
  StartServices();
  DownloadOriginFile();
  const std::string id = Request().task_id;
  auto before = store_->ListTasks();
  ASSERT_EQ(before.size(), 1u);
  for (const std::string& bad :
       {std::string(), std::string("../../etc/passwd"), std::string("."), std::string("a/b"),
        id + "/..", id.substr(0, 63), Upper(id), std::string(100000, 'a'), std::string("\0x", 2)}) {
    SCOPED_TRACE(bad.substr(0, 80));
    dv1::StatTaskResponse stat;
    grpc::Status s = StatTask(bad, &stat);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    s = DeleteTask(bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    std::vector<dv1::PieceAvailability> got;
    s = SyncPieces(bad, "", &got);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_TRUE(got.empty());
  }
  auto after = store_->ListTasks();
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].task_id, id);
  ASSERT_NE(store_->FindTask(id), nullptr);
  EXPECT_TRUE(store_->FindTask(id)->done());
  EXPECT_TRUE(std::filesystem::exists("/etc/passwd"));
}

// ---- SyncPieces ----

TEST_F(ServicesTest, SyncPiecesOfAnUnknownTaskIsNotFound) {
  StartServices();
  std::vector<dv1::PieceAvailability> got;
  EXPECT_EQ(SyncPieces(UnknownId(), "", &got).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(got.empty());
}

TEST_F(ServicesTest, SyncPiecesOfAFinishedTaskCarriesTheLayoutAndEveryPiece) {
  StartOrigin(3 * kPiece + 7);
  StartServices();
  DownloadOriginFile();
  std::vector<dv1::PieceAvailability> got;
  grpc::Status s = SyncPieces(Request().task_id, "", &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(got.empty());
  std::set<uint32_t> pieces;
  for (const auto& m : got) {
    EXPECT_EQ(m.content_length(), static_cast<int64_t>(size_));
    EXPECT_EQ(m.piece_length(), kPiece);
    EXPECT_EQ(m.total_pieces(), 4u);
    pieces.insert(m.piece_numbers().begin(), m.piece_numbers().end());
  }
  EXPECT_EQ(pieces, (std::set<uint32_t>{0, 1, 2, 3}));
  EXPECT_TRUE(got.back().done());
}

TEST_F(ServicesTest, SyncPiecesWithATokenConfiguredNeedsTheToken) {
  UseToken();
  StartOrigin(kPiece);
  StartServices();
  DownloadOriginFile();  // the local API is guarded by the socket's mode, not the token
  std::vector<dv1::PieceAvailability> got;
  EXPECT_EQ(SyncPieces(Request().task_id, "", &got).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(SyncPieces(Request().task_id, "not-the-token-0123456789abcdef", &got).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Checked before the request is read: an unknown task tells a stranger nothing either.
  EXPECT_EQ(SyncPieces(UnknownId(), "", &got).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(got.empty());
  grpc::Status s = SyncPieces(Request().task_id, kToken, &got);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got.back().done());
}

// Threads of this process now (the server's and the client's are both in it).
size_t ThreadCount() {
  return static_cast<size_t>(
      std::distance(std::filesystem::directory_iterator("/proc/self/task"), {}));
}

// A SyncPieces stream the test holds open and reads message by message.
struct OpenStream {
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReader<dv1::PieceAvailability>> reader;
};

// Each open availability stream used to hold a thread of the synchronous server for its life:
// 600 children (or strangers) following a task that is still downloading made 600 threads, and
// a thread cap refused real children instead. On the callback API a stream holds no thread,
// and every stream still learns of each new piece at once and ends when the task is done.
TEST_F(ServicesTest, SixHundredOpenAvailabilityStreamsHoldNoThreadAndEachSeesEveryPiece) {
  StartServices();
  const std::string id = UnknownId();
  auto task = UnfinishedTask(id);
  const size_t threads_before = ThreadCount();
  constexpr size_t kStreams = 600;
  std::vector<std::unique_ptr<OpenStream>> streams;
  for (size_t i = 0; i < kStreams; ++i) {
    auto s = std::make_unique<OpenStream>();
    SetDeadline(&s->ctx, 120);
    dv1::SyncPiecesRequest req;
    req.set_task_id(id);
    req.set_child_peer_id("child-" + std::to_string(i));
    s->reader = upload_->SyncPieces(&s->ctx, req);
    streams.push_back(std::move(s));
  }
  // The first message of each: the layout, no piece yet.
  dv1::PieceAvailability m;
  for (auto& s : streams) {
    ASSERT_TRUE(s->reader->Read(&m));
    EXPECT_EQ(m.total_pieces(), 2u);
    EXPECT_EQ(m.piece_numbers_size(), 0);
    EXPECT_FALSE(m.done());
  }
  EXPECT_EQ(upload_service_->open_streams(), kStreams);
  const size_t threads_open = ThreadCount();
  EXPECT_LT(threads_open, threads_before + 100)
      << kStreams << " open streams took " << threads_open - threads_before << " threads";
  // The daemon still answers a unary call.
  dv1::StatTaskResponse stat;
  EXPECT_TRUE(StatTask(id, &stat).ok());

  ASSERT_TRUE(task->CommitPiece(PieceNumber{1}, 0).ok());
  for (auto& s : streams) {
    ASSERT_TRUE(s->reader->Read(&m));
    ASSERT_EQ(m.piece_numbers_size(), 1);
    EXPECT_EQ(m.piece_numbers(0), 1u);
    EXPECT_FALSE(m.done());
  }
  ASSERT_TRUE(task->CommitPiece(PieceNumber{0}, 0).ok());
  for (auto& s : streams) {
    ASSERT_TRUE(s->reader->Read(&m));
    ASSERT_EQ(m.piece_numbers_size(), 1);
    EXPECT_EQ(m.piece_numbers(0), 0u);
    EXPECT_TRUE(m.done());
    EXPECT_FALSE(s->reader->Read(&m));
    grpc::Status st = s->reader->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
  }
  for (int i = 0; i < 100 && upload_service_->open_streams() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(upload_service_->open_streams(), 0u);
}

// A child that goes away ends its stream on the parent (nothing is left open), and deleting the
// task ends the streams still open with NOT_FOUND.
TEST_F(ServicesTest, AvailabilityStreamsEndWhenTheChildGoesAwayOrTheTaskIsDeleted) {
  StartServices();
  const std::string id = UnknownId();
  auto task = UnfinishedTask(id);
  OpenStream leaving, staying;
  dv1::SyncPiecesRequest req;
  req.set_task_id(id);
  dv1::PieceAvailability m;
  for (OpenStream* s : {&leaving, &staying}) {
    SetDeadline(&s->ctx, 30);
    s->reader = upload_->SyncPieces(&s->ctx, req);
    ASSERT_TRUE(s->reader->Read(&m));
  }
  ASSERT_EQ(upload_service_->open_streams(), 2u);
  leaving.ctx.TryCancel();
  EXPECT_EQ(leaving.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  for (int i = 0; i < 250 && upload_service_->open_streams() > 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(upload_service_->open_streams(), 1u) << "the parent kept a stream nobody reads";
  task.reset();
  ASSERT_TRUE(store_->DeleteTask(id).ok());
  EXPECT_FALSE(staying.reader->Read(&m));
  grpc::Status st = staying.reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
}

// Shutting the service's streams down (the daemon's first step of Shutdown) ends them at once
// with UNAVAILABLE, and refuses new ones the same way.
TEST_F(ServicesTest, StoppedAvailabilityStreamsEndUnavailable) {
  StartServices();
  const std::string id = UnknownId();
  auto task = UnfinishedTask(id);
  OpenStream s;
  SetDeadline(&s.ctx, 30);
  dv1::SyncPiecesRequest req;
  req.set_task_id(id);
  s.reader = upload_->SyncPieces(&s.ctx, req);
  dv1::PieceAvailability m;
  ASSERT_TRUE(s.reader->Read(&m));
  upload_service_->StopStreams();
  EXPECT_FALSE(s.reader->Read(&m));
  EXPECT_EQ(s.reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  std::vector<dv1::PieceAvailability> got;
  EXPECT_EQ(SyncPieces(id, "", &got).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The cap on open availability streams: one stream past it is refused with RESOURCE_EXHAUSTED
// and a reason, the streams already open go on getting pieces, and a stream that ends makes
// room for a new one.
TEST_F(ServicesTest, AvailabilityStreamsPastTheCapAreRefusedAndAFreedSlotIsReused) {
  constexpr size_t kCap = 4;
  StartServices(kCap);
  const std::string id = UnknownId();
  auto task = UnfinishedTask(id);
  std::vector<std::unique_ptr<OpenStream>> streams;
  dv1::SyncPiecesRequest req;
  req.set_task_id(id);
  dv1::PieceAvailability m;
  auto open = [&] {
    auto s = std::make_unique<OpenStream>();
    SetDeadline(&s->ctx, 30);
    s->reader = upload_->SyncPieces(&s->ctx, req);
    return s;
  };
  for (size_t i = 0; i < kCap; ++i) {
    streams.push_back(open());
    ASSERT_TRUE(streams.back()->reader->Read(&m));
  }
  ASSERT_EQ(upload_service_->open_streams(), kCap);

  auto refused = open();
  EXPECT_FALSE(refused->reader->Read(&m));
  grpc::Status st = refused->reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("too many availability streams"), std::string::npos)
      << st.error_message();

  ASSERT_TRUE(task->CommitPiece(PieceNumber{1}, 0).ok());
  for (auto& s : streams) {
    ASSERT_TRUE(s->reader->Read(&m)) << "a stream under the cap lost its piece";
    ASSERT_EQ(m.piece_numbers_size(), 1);
    EXPECT_EQ(m.piece_numbers(0), 1u);
  }

  streams.front()->ctx.TryCancel();
  EXPECT_EQ(streams.front()->reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  streams.erase(streams.begin());
  for (int i = 0; i < 250 && upload_service_->open_streams() >= kCap; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(upload_service_->open_streams(), kCap - 1);
  streams.push_back(open());
  ASSERT_TRUE(streams.back()->reader->Read(&m)) << "the freed slot was not reused";
  ASSERT_EQ(m.piece_numbers_size(), 1);
  EXPECT_EQ(m.piece_numbers(0), 1u);
}

// An HTTP/2 client that asks one unary RPC and then never lets the answer through: its
// SETTINGS give the server a flow-control window of 0, so a response message (a DATA frame)
// can never be sent, only headers. The connection stays open until the object goes.
class StalledCall {
 public:
  StalledCall(int port, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::cerr << "connect 127.0.0.1:" << port << ": " << std::strerror(errno) << "\n";
      return;
    }
    std::string out = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    Frame(&out, 0x4, 0, 0, std::string("\x00\x04\x00\x00\x00\x00", 6));  // INITIAL_WINDOW 0
    std::string headers;
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, std::string>>{{":method", "POST"},
                                                          {":scheme", "http"},
                                                          {":path", path},
                                                          {":authority", "127.0.0.1"},
                                                          {"content-type", "application/grpc"},
                                                          {"te", "trailers"}}) {
      headers += '\x00';  // literal without indexing, new name, no Huffman (lengths < 127)
      headers += static_cast<char>(name.size());
      headers += name;
      headers += static_cast<char>(value.size());
      headers += value;
    }
    Frame(&out, 0x1, 0x4, 1, headers);                                 // END_HEADERS
    Frame(&out, 0x0, 0x1, 1, std::string("\x00\x00\x00\x00\x00", 5));  // empty message
    sent_ = ::send(fd_, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size());
  }
  ~StalledCall() {
    if (fd_ >= 0) ::close(fd_);
  }
  StalledCall(const StalledCall&) = delete;
  StalledCall& operator=(const StalledCall&) = delete;
  bool sent() const { return sent_; }

 private:
  static void Frame(std::string* out, uint8_t type, uint8_t flags, uint32_t stream,
                    const std::string& payload) {
    const uint32_t n = static_cast<uint32_t>(payload.size());
    const char head[9] = {static_cast<char>(n >> 16),
                          static_cast<char>(n >> 8),
                          static_cast<char>(n),
                          static_cast<char>(type),
                          static_cast<char>(flags),
                          static_cast<char>(stream >> 24),
                          static_cast<char>(stream >> 16),
                          static_cast<char>(stream >> 8),
                          static_cast<char>(stream)};
    out->append(head, 9);
    out->append(payload);
  }
  int fd_ = -1;
  bool sent_ = false;
};

// The unary calls of both services used to run on the synchronous server, whose thread stays
// with a call until its answer is sent: 300 clients that never take their ListTasks answer held
// 300 threads (the local API had no cap). On the callback API they hold none, and the daemon
// keeps answering.
TEST_F(ServicesTest, UnaryAnswersNobodyReadsHoldNoThread) {
  StartServices();
  const std::string id = UnknownId();
  auto task = UnfinishedTask(id);
  dv1::StatTaskResponse stat;
  ASSERT_TRUE(StatTask(id, &stat).ok());  // the server's pools are warm
  const size_t threads_before = ThreadCount();
  std::vector<std::unique_ptr<StalledCall>> calls;
  for (int i = 0; i < 300; ++i) {
    calls.push_back(
        std::make_unique<StalledCall>(port_, "/df.dfdaemon.v1.DfdaemonDownload/ListTasks"));
    ASSERT_TRUE(calls.back()->sent());
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // every call reached its handler
  const size_t threads_stalled = ThreadCount();
  EXPECT_LT(threads_stalled, threads_before + 50)
      << "300 unread answers took " << threads_stalled - threads_before << " threads";
  EXPECT_TRUE(StatTask(id, &stat).ok());
  dv1::ListTasksResponse listed;
  grpc::ClientContext c;
  SetDeadline(&c, 10);
  grpc::Status st = download_->ListTasks(&c, dv1::ListTasksRequest(), &listed);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(listed.tasks_size(), 1);
}

// ---- TriggerDownloadTask ----

TEST_F(ServicesTest, TriggerOnANonSeedIsFailedPrecondition) {
  trust_.scheduler_ips = {"127.0.0.1"};
  StartOrigin(kPiece);
  StartServices();
  EXPECT_EQ(Trigger(TriggerOf(url())).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_TRUE(store_->ListTasks().empty());
}

TEST_F(ServicesTest, TriggerOnASeedFromAnAddressNotItsSchedulersIsPermissionDenied) {
  trust_.seed = true;
  StartOrigin(kPiece);
  StartServices();
  // No scheduler configured: nobody may trigger.
  EXPECT_EQ(Trigger(TriggerOf(url())).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  trust_.scheduler_ips = {"10.255.255.1", "::1"};
  EXPECT_EQ(Trigger(TriggerOf(url())).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_TRUE(store_->ListTasks().empty());
  EXPECT_EQ(origin_->Requests(), 0);
}

TEST_F(ServicesTest, TriggerWithATokenConfiguredNeedsTheTokenEvenFromTheScheduler) {
  BecomeSeedOfLoopbackScheduler();
  UseToken();
  StartOrigin(kPiece);
  StartServices();
  EXPECT_EQ(Trigger(TriggerOf(url())).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(manager_->running(), 0u);
  grpc::Status s = Trigger(TriggerOf(url()), kToken);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto task = manager_->Find(Request().task_id);
  ASSERT_NE(task, nullptr);
  ASSERT_TRUE(task->WaitFinished(30000));
}

TEST_F(ServicesTest, TriggerWithATaskIdThatIsNotItsUrlsIsPermissionDenied) {
  BecomeSeedOfLoopbackScheduler();
  StartOrigin(kPiece);
  StartServices();
  auto req = TriggerOf(url());
  // The id of a task the caller would like to fill with this URL's bytes.
  req.mutable_task()->set_task_id(TaskId(TaskIdInput{origin_->Url("other.bin"), "", "", 0, {}}));
  EXPECT_EQ(Trigger(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  req = TriggerOf(url());
  req.mutable_task()->set_tag("v2");  // the id no longer covers every field of the spec
  EXPECT_EQ(Trigger(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  req = TriggerOf(url());
  req.mutable_task()->clear_task_id();
  EXPECT_EQ(Trigger(req).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_TRUE(store_->ListTasks().empty());
  EXPECT_EQ(origin_->Requests(), 0);
}

TEST_F(ServicesTest, TriggerOfAFileUrlIsInvalidArgument) {
  BecomeSeedOfLoopbackScheduler();
  StartServices();
  EXPECT_EQ(Trigger(TriggerOf("file:///etc/passwd")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_TRUE(store_->ListTasks().empty());
}

TEST_F(ServicesTest, TriggerOfBadInputIsInvalidArgument) {
  BecomeSeedOfLoopbackScheduler();
  StartOrigin(kPiece);
  StartServices();
  std::vector<std::pair<std::string, dv1::TriggerDownloadTaskRequest>> cases;
  cases.emplace_back("empty request", dv1::TriggerDownloadTaskRequest());
  cases.emplace_back("ftp url", TriggerOf("ftp://127.0.0.1/f.bin"));
  cases.emplace_back("url beyond kMaxUrlBytes",
                     TriggerOf(url() + "?q=" + std::string(kMaxUrlBytes, 'a')));
  auto odd_piece = TriggerOf(url());
  odd_piece.mutable_task()->set_piece_length(5 * 1024 * 1024);
  cases.emplace_back("piece length not a power of two", odd_piece);
  auto bad_digest = TriggerOf(url());
  bad_digest.mutable_task()->set_digest("sha256:not-hex");
  cases.emplace_back("malformed digest", bad_digest);
  auto long_app = TriggerOf(url());
  long_app.mutable_task()->set_application(std::string(5000, 'a'));
  cases.emplace_back("application beyond 1024 bytes", long_app);
  for (const auto& [name, req] : cases) {
    SCOPED_TRACE(name);
    grpc::Status s = Trigger(req);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_FALSE(s.error_message().empty());
  }
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_TRUE(store_->ListTasks().empty());
  EXPECT_EQ(origin_->Requests(), 0);
}

TEST_F(ServicesTest, TriggerWithAHeaderThatWouldAddAnotherIsInvalidArgument) {
  BecomeSeedOfLoopbackScheduler();
  StartOrigin(kPiece);
  StartServices();
  auto req = TriggerOf(url());
  (*req.mutable_task()->mutable_request_headers())["X-Forwarded"] = "a\r\nX-Test: injected";
  grpc::Status s = Trigger(req);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(manager_->running(), 0u);
  EXPECT_EQ(origin_->Requests(), 0) << "the injected header reached the origin";
}

TEST_F(ServicesTest, TriggerOverMaxRunningTasksIsResourceExhausted) {
  BecomeSeedOfLoopbackScheduler();
  config_.max_running_tasks = 1;
  StartOrigin(4 * kPiece, "1m");  // ~16 s: the first download is still running for the second
  StartServices();
  grpc::Status s = Trigger(TriggerOf(url()));
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto other = TriggerOf(url() + "?v=2");
  s = Trigger(other);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_NE(s.error_message().find("max_running_tasks"), std::string::npos) << s.error_message();
  EXPECT_EQ(manager_->Find(other.task().task_id()), nullptr);
  // A second trigger of the running task shares it.
  s = Trigger(TriggerOf(url()));
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(manager_->running(), 1u);
}

TEST_F(ServicesTest, AValidTriggerDownloadsTheTaskFromTheOrigin) {
  BecomeSeedOfLoopbackScheduler();
  StartOrigin(2 * kPiece + 99);
  StartServices();
  auto req = TriggerOf(url());
  (*req.mutable_task()->mutable_request_headers())["X-Test"] = "seed-trigger";
  grpc::Status s = Trigger(req);
  ASSERT_TRUE(s.ok()) << s.error_message();
  auto task = manager_->Find(Request().task_id);
  ASSERT_NE(task, nullptr) << "the trigger started no download";
  ASSERT_TRUE(task->WaitFinished(30000));
  ASSERT_TRUE(task->Progress().status.ok()) << task->Progress().status.ToString();
  auto stored = store_->FindTask(Request().task_id);
  ASSERT_NE(stored, nullptr);
  EXPECT_TRUE(stored->done());
  EXPECT_EQ(Sha256File(stored->content_path()).value(), sha256_);
  // The trigger's headers went to the origin with the request.
  auto logged = origin_->LoggedHeader();
  ASSERT_FALSE(logged.empty());
  for (const auto& h : logged) EXPECT_EQ(h, "seed-trigger");
}

}  // namespace
}  // namespace df
