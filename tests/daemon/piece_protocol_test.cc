// Specifications of the piece data protocol: a real PieceServer and PieceClient on loopback,
// serving from a real PieceStore in a temporary directory.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/net.h"
#include "daemon/piece_client.h"
#include "daemon/piece_protocol.h"
#include "daemon/piece_server.h"
#include "storage/piece_store.h"

namespace df {
namespace {

namespace pp = piece_protocol;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kPieceLength = 256 * 1024;
constexpr uint32_t kPieces = 10;  // last one is short
constexpr uint64_t kContentLength = (kPieces - 1) * kPieceLength + 1000;
const std::string kTaskId(64, 'a');
const std::string kOtherTaskId(64, 'b');

class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "piece_protocol_test.XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ContentBytes(uint64_t length) {
  std::string s(length, '\0');
  uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245 + 12345;
    c = static_cast<char>(x >> 16);
  }
  return s;
}

// Raw frame for handcrafted (possibly malformed) requests.
std::string Frame(uint16_t magic, uint8_t version, uint8_t type, uint32_t body_length,
                  const std::string& body) {
  uint8_t h[pp::kHeaderBytes];
  pp::EncodeHeader({magic, version, static_cast<pp::FrameType>(type), 0, body_length}, h);
  return std::string(reinterpret_cast<char*>(h), sizeof h) + body;
}

std::string RequestBody(const std::string& task_id, uint32_t piece) {
  uint8_t n[4];
  pp::PutU32(n, piece);
  return task_id + std::string(reinterpret_cast<char*>(n), 4);
}

class PieceProtocolTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(PieceServerOptions{}); }

  // Stores `kTaskId` with every piece but `missing` committed.
  void StartServer(PieceServerOptions options, uint32_t missing = kPieces - 2) {
    parent_store_ = PieceStore::Open(parent_dir_.path() + "/store").value();
    child_store_ = PieceStore::Open(child_dir_.path() + "/store").value();
    content_ = ContentBytes(kContentLength);
    TaskMeta meta{.task_id = kTaskId,
                  .content_length = static_cast<int64_t>(kContentLength),
                  .piece_length = kPieceLength};
    source_ = parent_store_->OpenTask(meta).value();
    ASSERT_EQ(::pwrite(source_->content_fd(), content_.data(), content_.size(), 0),
              static_cast<ssize_t>(content_.size()));
    PieceLayout layout = source_->layout();
    for (uint32_t n = 0; n < kPieces; ++n) {
      if (n == missing) continue;
      const char* p = content_.data() + layout.offset(PieceNumber{n});
      ASSERT_TRUE(
          source_->CommitPiece(PieceNumber{n}, Crc32c(p, layout.length(PieceNumber{n}))).ok());
    }
    dest_ = child_store_->OpenTask(meta).value();
    options.ip = "127.0.0.1";
    options.port = 0;
    PieceStore* store = parent_store_.get();
    server_ = std::make_unique<PieceServer>(
        options, [store](const std::string& id) { return store->FindTask(id); });
    ASSERT_TRUE(server_->Start().ok());
  }

  void TearDown() override {
    if (server_) server_->Stop();
  }

  // The parent closes connections idle for 100 ms.
  void RestartWithShortIdleTimeout() {
    server_->Stop();
    PieceServerOptions options;
    options.idle_timeout_ms = 100;
    StartServer(options);
  }

  // Fetches piece 0, then stays idle until the parent has closed the connection.
  void FetchAndIdleUntilClosed(PieceClient& client) {
    ASSERT_TRUE(Fetch(client, 0).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  }

  PieceClient MakeClient(PieceClientOptions options = {}) {
    return PieceClient("127.0.0.1", server_->port(), options);
  }

  Result<FetchedPiece> Fetch(PieceClient& client, uint32_t n) {
    PieceLayout layout = source_->layout();
    return client.FetchPiece(kTaskId, PieceNumber{n}, layout.offset(PieceNumber{n}),
                             layout.length(PieceNumber{n}), dest_->content_fd());
  }

  std::string DestBytes(uint32_t n) {
    PieceLayout layout = source_->layout();
    std::string out(layout.length(PieceNumber{n}), '\0');
    EXPECT_EQ(::pread(dest_->content_fd(), out.data(), out.size(),
                      static_cast<off_t>(layout.offset(PieceNumber{n}))),
              static_cast<ssize_t>(out.size()));
    return out;
  }

  std::string SourceBytes(uint32_t n) {
    PieceLayout layout = source_->layout();
    return content_.substr(layout.offset(PieceNumber{n}), layout.length(PieceNumber{n}));
  }

  // Sends raw bytes on a fresh connection; returns the error code of the answer frame and
  // whether the server then closed the connection.
  void ExpectErrorAndClose(const std::string& bytes, pp::ErrorCode expected) {
    auto fd = ConnectTcp("127.0.0.1", server_->port(), 2000);
    ASSERT_TRUE(fd.ok());
    SetSocketTimeouts(fd->get(), 5000);
    ASSERT_TRUE(WriteFull(fd->get(), bytes.data(), bytes.size()).ok());
    uint8_t h[pp::kHeaderBytes];
    ASSERT_TRUE(ReadFull(fd->get(), h, sizeof h).ok());
    pp::FrameHeader header = pp::DecodeHeader(h);
    ASSERT_EQ(header.magic, pp::kMagic);
    ASSERT_EQ(header.type, pp::FrameType::kError);
    ASSERT_TRUE(pp::BodyLengthValid(header.type, header.body_length));
    std::vector<uint8_t> body(header.body_length);
    ASSERT_TRUE(ReadFull(fd->get(), body.data(), body.size()).ok());
    EXPECT_EQ(pp::GetU16(body.data()), static_cast<uint16_t>(expected));
    char extra;
    EXPECT_EQ(::recv(fd->get(), &extra, 1, 0), 0) << "server must close after a fatal error";
  }

  TempDir parent_dir_, child_dir_;
  std::unique_ptr<PieceStore> parent_store_, child_store_;
  std::shared_ptr<TaskStorage> source_, dest_;
  std::string content_;
  std::unique_ptr<PieceServer> server_;
};

TEST(PieceProtocolFormat, HeadersRoundTripBigEndian) {
  uint8_t b[pp::kHeaderBytes];
  pp::EncodeHeader({.type = pp::FrameType::kPiece, .flags = 7, .body_length = 24}, b);
  EXPECT_EQ(b[0], 0xDF);
  EXPECT_EQ(b[1], 0x50);
  EXPECT_EQ(b[11], 24);
  pp::FrameHeader h = pp::DecodeHeader(b);
  EXPECT_EQ(h.type, pp::FrameType::kPiece);
  EXPECT_EQ(h.flags, 7u);
  uint8_t p[pp::kPieceBodyBytes];
  pp::EncodePieceHeader({3, 0xCAFEBABE, 1ull << 40, 5}, p);
  pp::PieceHeader d = pp::DecodePieceHeader(p);
  EXPECT_EQ(d.piece_number, 3u);
  EXPECT_EQ(d.crc32c, 0xCAFEBABEu);
  EXPECT_EQ(d.offset, 1ull << 40);
  EXPECT_EQ(d.length, 5u);
  EXPECT_FALSE(pp::BodyLengthValid(static_cast<pp::FrameType>(9), 8));
  EXPECT_FALSE(pp::BodyLengthValid(pp::FrameType::kError, 1u << 20));
}

TEST_F(PieceProtocolTest, FetchesManyPiecesOverOneConnection) {
  PieceClient client = MakeClient();
  uint64_t bytes = 0;
  for (int round = 0; round < 3; ++round) {
    for (uint32_t n = 0; n < kPieces; ++n) {
      if (n == kPieces - 2) continue;  // not committed
      auto r = Fetch(client, n);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->crc32c, r->parent_crc32c);
      EXPECT_EQ(r->length, source_->layout().length(PieceNumber{n}));
      EXPECT_GT(r->cost_ns, 0u);
      EXPECT_EQ(DestBytes(n), SourceBytes(n)) << "piece " << n;
      bytes += r->length;
    }
  }
  EXPECT_EQ(client.connects(), 1u);
  EXPECT_EQ(server_->accepted_connections(), 1u);
  EXPECT_EQ(server_->pieces_uploaded(), 3u * (kPieces - 1));
  EXPECT_EQ(server_->bytes_uploaded(), bytes);
  EXPECT_EQ(server_->upload_failures(), 0u);
  EXPECT_EQ(server_->concurrent_uploads(), 0);
}

// With `sha256` the client hashes each piece as it arrives: the digest is the one of the bytes
// the parent holds (so the engine verifies without reading the piece back), and the bytes land
// as without it, in a destination opened write-only too (nothing is read back or mapped).
TEST_F(PieceProtocolTest, ASha256ComputedOnArrivalIsThePiecesDigest) {
  PieceClient plain = MakeClient();
  PieceClient hashing = MakeClient({.sha256 = true});
  for (uint32_t n : {0u, 1u, 2u, kPieces - 1}) {
    auto r = Fetch(n % 2 ? hashing : plain, n);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(DestBytes(n), SourceBytes(n)) << "piece " << n;
    ASSERT_EQ(r->sha256.has_value(), n % 2 == 1) << "piece " << n;
    if (r->sha256) {
      Sha256 want;
      const std::string bytes = SourceBytes(n);
      want.Update(bytes.data(), bytes.size());
      EXPECT_EQ(*r->sha256, want.FinalBytes()) << "piece " << n;
    }
  }
  std::string path = child_dir_.path() + "/write-only";
  UniqueFd wo(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ASSERT_TRUE(wo);
  PieceLayout layout = source_->layout();
  for (uint32_t n : {1u, kPieces - 1}) {
    PieceNumber pn{n};
    auto r = hashing.FetchPiece(kTaskId, pn, layout.offset(pn), layout.length(pn), wo.get());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    std::string got(layout.length(pn), '\0');
    UniqueFd rd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_EQ(::pread(rd.get(), got.data(), got.size(), static_cast<off_t>(layout.offset(pn))),
              static_cast<ssize_t>(got.size()));
    EXPECT_EQ(got, SourceBytes(n)) << "piece " << n;
    ASSERT_TRUE(r->sha256.has_value());
    Sha256 want;
    want.Update(got.data(), got.size());
    EXPECT_EQ(*r->sha256, want.FinalBytes()) << "piece " << n;
  }
}

TEST_F(PieceProtocolTest, UnfinishedOrUnknownPieceIsNotFoundAndConnectionStaysUsable) {
  PieceClient client = MakeClient();
  auto missing = Fetch(client, kPieces - 2);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  EXPECT_NE(missing.status().message().find("NOT_READY"), std::string::npos);
  EXPECT_TRUE(client.connected());

  auto out_of_range = client.FetchPiece(kTaskId, PieceNumber{kPieces}, 0, 1, dest_->content_fd());
  EXPECT_EQ(out_of_range.status().code(), StatusCode::kNotFound);
  auto other_task =
      client.FetchPiece(kOtherTaskId, PieceNumber{0}, 0, kPieceLength, dest_->content_fd());
  EXPECT_EQ(other_task.status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(Fetch(client, 0).ok());
  EXPECT_EQ(client.connects(), 1u);
  EXPECT_EQ(server_->accepted_connections(), 1u);
}

TEST_F(PieceProtocolTest, PieceCommittedLaterIsServedOnTheSameConnection) {
  PieceClient client = MakeClient();
  uint32_t n = kPieces - 2;
  EXPECT_EQ(Fetch(client, n).status().code(), StatusCode::kNotFound);
  std::string bytes = SourceBytes(n);
  ASSERT_TRUE(source_->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
  auto r = Fetch(client, n);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(DestBytes(n), bytes);
  EXPECT_EQ(client.connects(), 1u);
}

TEST_F(PieceProtocolTest, MalformedFramesGetAnErrorFrameAndCloseWhileOthersAreServed) {
  PieceClient bystander = MakeClient();
  ASSERT_TRUE(Fetch(bystander, 0).ok());

  std::string good_body = RequestBody(kTaskId, 0);
  ExpectErrorAndClose(std::string(12, '\x42'), pp::ErrorCode::kBadRequest);  // garbage
  ExpectErrorAndClose(Frame(0xBEEF, 1, 1, 68, good_body), pp::ErrorCode::kBadRequest);
  ExpectErrorAndClose(Frame(pp::kMagic, 2, 1, 68, good_body), pp::ErrorCode::kUnsupportedVersion);
  ExpectErrorAndClose(Frame(pp::kMagic, 1, 1, 1u << 31, good_body), pp::ErrorCode::kBadRequest);
  ExpectErrorAndClose(Frame(pp::kMagic, 1, 1, 67, good_body.substr(0, 67)),
                      pp::ErrorCode::kBadRequest);
  ExpectErrorAndClose(Frame(pp::kMagic, 1, 99, 0, ""), pp::ErrorCode::kBadRequest);
  ExpectErrorAndClose(Frame(pp::kMagic, 1, 2, 24, std::string(24, '\0')),  // PIECE to a parent
                      pp::ErrorCode::kBadRequest);
  ExpectErrorAndClose(Frame(pp::kMagic, 1, 1, 68, RequestBody(std::string(64, 'Z'), 0)),
                      pp::ErrorCode::kBadRequest);
  EXPECT_EQ(server_->protocol_errors(), 8u);

  // A connection that dies in the middle of a header is just dropped.
  {
    auto fd = ConnectTcp("127.0.0.1", server_->port(), 2000);
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(WriteFull(fd->get(), "\xDF\x50\x01", 3).ok());
  }

  for (uint32_t n = 1; n < 4; ++n) ASSERT_TRUE(Fetch(bystander, n).ok());
  EXPECT_EQ(bystander.connects(), 1u);
  PieceClient newcomer = MakeClient();
  ASSERT_TRUE(Fetch(newcomer, 5).ok());
}

TEST_F(PieceProtocolTest, CorruptedPieceUnderACommitIsDataLoss) {
  PieceLayout layout = source_->layout();
  char flipped = static_cast<char>(content_[layout.offset(PieceNumber{3}) + 77] ^ 0x01);
  ASSERT_EQ(::pwrite(source_->content_fd(), &flipped, 1,
                     static_cast<off_t>(layout.offset(PieceNumber{3}) + 77)),
            1);
  PieceClient client = MakeClient();
  auto r = Fetch(client, 3);
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
  ASSERT_TRUE(Fetch(client, 4).ok());  // the connection is intact
  EXPECT_EQ(client.connects(), 1u);
}

TEST_F(PieceProtocolTest, MismatchedPieceGeometryIsAProtocolErrorAndReconnects) {
  PieceClient client = MakeClient();
  PieceLayout layout = source_->layout();
  auto r = client.FetchPiece(kTaskId, PieceNumber{1}, layout.offset(PieceNumber{1}),
                             kPieceLength / 2, dest_->content_fd());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
  EXPECT_FALSE(client.connected());
  ASSERT_TRUE(Fetch(client, 1).ok());
  EXPECT_EQ(client.connects(), 2u);
}

TEST_F(PieceProtocolTest, PingMeasuresRoundTrip) {
  PieceClient client = MakeClient();
  for (int i = 0; i < 5; ++i) {
    auto rtt = client.Ping();
    ASSERT_TRUE(rtt.ok()) << rtt.status().ToString();
    EXPECT_GT(*rtt, 0u);
    EXPECT_LT(*rtt, 1'000'000'000u);
  }
  ASSERT_TRUE(Fetch(client, 0).ok());  // pings and pieces share the connection
  EXPECT_EQ(server_->accepted_connections(), 1u);
}

TEST_F(PieceProtocolTest, StopWithOpenConnectionsReturnsPromptly) {
  std::vector<std::unique_ptr<PieceClient>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(std::make_unique<PieceClient>("127.0.0.1", server_->port()));
    ASSERT_TRUE(clients.back()->Ping().ok());
  }
  auto idle = ConnectTcp("127.0.0.1", server_->port(), 2000);  // never sends anything
  ASSERT_TRUE(idle.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(server_->active_connections(), 5);

  auto start = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(server_->active_connections(), 0);
  auto r = Fetch(*clients[0], 0);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

// The open-connection gauges (df_daemon_piece_connections{side}) under churn: clients on 8
// threads connect, ping, close, reconnect and are interrupted from other threads while a reader
// samples both counts. The client count never leaves [0, threads], neither goes negative, and
// both come back to where they started: no update is lost or doubled. (Under DF_TSAN the same run
// checks the counts for data races.)
TEST_F(PieceProtocolTest, ConnectionGaugesStayInBoundsAndReturnToZeroUnderChurn) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 25;
  const int64_t before = PieceClient::open_connections();
  std::atomic<bool> done{false};
  std::atomic<int64_t> client_min{before}, client_max{before};
  std::atomic<int> server_min{0};
  std::thread reader([&] {
    while (!done.load()) {
      const int64_t c = PieceClient::open_connections();
      const int s = server_->active_connections();
      client_min.store(std::min(client_min.load(), c));
      client_max.store(std::max(client_max.load(), c));
      server_min.store(std::min(server_min.load(), s));
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        PieceClient client("127.0.0.1", server_->port());
        if (!client.Ping().ok()) continue;
        if (round % 3 == 0) {
          client.Close();
          (void)client.Ping();  // reconnects
        }
        if ((round + t) % 4 == 0) {
          std::thread interrupter([&client] { client.Interrupt(); });
          (void)client.Ping();  // races the interrupt: fails or succeeds, never leaks
          interrupter.join();
        }
      }  // the destructor closes
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(PieceClient::open_connections(), before);
  for (int i = 0; i < 200 && server_->active_connections() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  done.store(true);
  reader.join();
  EXPECT_EQ(server_->active_connections(), 0);
  EXPECT_GE(client_min.load(), before);
  EXPECT_LE(client_max.load(), before + kThreads);
  EXPECT_GT(client_max.load(), before)
      << "the reader never saw a connection: the test shows nothing";
  EXPECT_GE(server_min.load(), 0);  // (closed connections linger server side: no upper bound)
}

TEST_F(PieceProtocolTest, StopCutsARateLimitedUploadPromptly) {
  server_->Stop();
  PieceServerOptions options;
  options.upload_rate_bytes_per_sec = 64 * 1024;  // past the first burst a piece takes ~4 s
  StartServer(options);
  PieceClient client = MakeClient();
  std::thread fetcher([&] { EXPECT_FALSE(Fetch(client, 0).ok() && Fetch(client, 1).ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(server_->concurrent_uploads(), 1);
  auto start = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  fetcher.join();
  EXPECT_EQ(server_->upload_failures(), 1u);
}

// Endgame cuts the slow copy of a piece from another thread: the blocked receive returns at once
// and the client never reconnects (a reconnect would resume writing where the winner wrote).
TEST_F(PieceProtocolTest, InterruptCutsABlockedReceiveAndTheClientStaysDown) {
  server_->Stop();
  PieceServerOptions options;
  options.upload_rate_bytes_per_sec = 16 * 1024;  // past the burst (piece 0) a piece takes ~16 s
  StartServer(options);
  PieceClient client = MakeClient();
  Result<FetchedPiece> slow = Status(StatusCode::kInternal, "not run");
  std::thread fetcher([&] {
    ASSERT_TRUE(Fetch(client, 0).ok());
    slow = Fetch(client, 1);
  });
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (server_->pieces_uploaded() < 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // polls for the event
  }
  ASSERT_EQ(server_->pieces_uploaded(), 1u);
  auto start = Clock::now();
  client.Interrupt();
  fetcher.join();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_FALSE(slow.ok());
  auto again = Fetch(client, 0);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kCancelled) << again.status().ToString();
  EXPECT_FALSE(client.connected());
}

TEST_F(PieceProtocolTest, RateLimitPacesUploads) {
  server_->Stop();
  PieceServerOptions options;
  options.upload_rate_bytes_per_sec = 4 * 1024 * 1024;
  StartServer(options);
  PieceClient client = MakeClient();
  auto start = Clock::now();
  for (uint32_t n = 0; n < 8; ++n) ASSERT_TRUE(Fetch(client, n).ok());  // 2 MiB
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  // 2 MiB at 4 MiB/s minus the initial burst (~0.4 MiB) is ~0.4 s.
  EXPECT_GT(seconds, 0.3);
  EXPECT_LT(seconds, 3.0);
}

TEST_F(PieceProtocolTest, ConnectionLimitAnswersBusy) {
  server_->Stop();
  PieceServerOptions options;
  options.max_connections = 1;
  options.evict_idle_ms = 60'000;  // the first connection is never idle enough to be closed
  StartServer(options);
  PieceClient first = MakeClient();
  ASSERT_TRUE(first.Ping().ok());
  PieceClient second = MakeClient();
  auto r = second.Ping();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("BUSY"), std::string::npos);
  first.Close();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_TRUE(second.Ping().ok());  // the slot was freed
}

// Waits up to `timeout_ms` for the server to close `fd`; true when it did (EOF or reset).
bool ClosedByServerWithin(int fd, int timeout_ms) {
  SetSocketTimeouts(fd, timeout_ms);
  char sink[256];
  for (;;) {
    ssize_t r = ::recv(fd, sink, sizeof sink, 0);
    if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
    if (r < 0) return false;  // timed out: still open
  }
}

// Half-open: connects and never sends. The idle timeout (120 s) does not protect its slot.
TEST_F(PieceProtocolTest, ConnectionThatSendsNothingIsClosedAfterTheRequestTimeout) {
  server_->Stop();
  PieceServerOptions options;
  options.request_timeout_ms = 200;
  StartServer(options);
  auto silent = ConnectTcp("127.0.0.1", server_->port(), 2000);
  ASSERT_TRUE(silent.ok());
  auto start = Clock::now();
  EXPECT_TRUE(ClosedByServerWithin(silent->get(), 3000));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(150));
  EXPECT_EQ(server_->request_timeouts(), 1u);
}

// Slowloris: a valid PING sent one byte at a time never trips a per-read timeout; the frame
// deadline closes it. A client that sends whole frames may idle longer than the deadline.
TEST_F(PieceProtocolTest, SlowSenderIsClosedWhenItsFrameIsLateButAnIdleClientIsNot) {
  server_->Stop();
  PieceServerOptions options;
  options.request_timeout_ms = 300;
  StartServer(options);
  PieceClient idle = MakeClient();
  ASSERT_TRUE(idle.Ping().ok());

  auto slow = ConnectTcp("127.0.0.1", server_->port(), 2000);
  ASSERT_TRUE(slow.ok());
  std::string ping = Frame(pp::kMagic, 1, 4, 8, std::string(8, '\x07'));
  bool cut = false;
  for (char c : ping) {
    if (::send(slow->get(), &c, 1, MSG_NOSIGNAL) != 1) {
      cut = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // 20 bytes: 1 s
  }
  EXPECT_TRUE(cut || ClosedByServerWithin(slow->get(), 100));
  EXPECT_EQ(server_->request_timeouts(), 1u);

  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // idle 1.2 s > 300 ms
  EXPECT_TRUE(idle.Ping().ok());
  EXPECT_EQ(idle.connects(), 1u);
}

// Held connections cannot lock children out: at the limit the one idle longest makes room.
TEST_F(PieceProtocolTest, AtTheLimitANewConnectionClosesTheConnectionIdleLongest) {
  server_->Stop();
  PieceServerOptions options;
  options.max_connections = 2;
  options.evict_idle_ms = 100;
  StartServer(options);
  auto oldest = ConnectTcp("127.0.0.1", server_->port(), 2000);  // never sends
  ASSERT_TRUE(oldest.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  PieceClient active = MakeClient();
  ASSERT_TRUE(active.Ping().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ASSERT_TRUE(active.Ping().ok());  // the only frame-less connection is `oldest`

  PieceClient newcomer = MakeClient();
  auto r = newcomer.Ping();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(server_->evicted_connections(), 1u);
  EXPECT_TRUE(ClosedByServerWithin(oldest->get(), 1000));
  EXPECT_TRUE(active.Ping().ok());
  EXPECT_EQ(active.connects(), 1u);
}

// A connection in the middle of sending a piece is never the one closed for a newcomer.
TEST_F(PieceProtocolTest, AtTheLimitAConnectionSendingAPieceIsKept) {
  server_->Stop();
  PieceServerOptions options;
  options.max_connections = 1;
  options.evict_idle_ms = 0;
  options.upload_rate_bytes_per_sec = 256 * 1024;  // piece 0 is the burst, piece 1 takes ~1 s
  StartServer(options);
  PieceClient downloader = MakeClient();
  std::thread fetcher([&] { EXPECT_TRUE(Fetch(downloader, 0).ok() && Fetch(downloader, 1).ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(server_->concurrent_uploads(), 1);
  PieceClient newcomer = MakeClient();
  auto r = newcomer.Ping();
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  EXPECT_NE(r.status().message().find("BUSY"), std::string::npos);
  fetcher.join();
  EXPECT_EQ(server_->evicted_connections(), 0u);
  EXPECT_EQ(server_->upload_failures(), 0u);
}

TEST_F(PieceProtocolTest, ClientReconnectsAfterTheParentClosedAnIdleConnection) {
  RestartWithShortIdleTimeout();
  PieceClient client = MakeClient();
  FetchAndIdleUntilClosed(client);
  auto r = Fetch(client, 1);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(client.connects(), 2u);
}

// Requests queued on one connection are answered in order; a NOT_READY answer in the middle
// leaves the connection and the answers behind it intact.
TEST_F(PieceProtocolTest, PipelinedRequestsAreAnsweredInOrderOnOneConnection) {
  PieceClient client = MakeClient();
  PieceLayout layout = source_->layout();
  auto receive = [&](uint32_t n) {
    PieceNumber pn{n};
    return client.ReceivePiece(pn, layout.offset(pn), layout.length(pn), dest_->content_fd());
  };
  const uint32_t missing = kPieces - 2;
  for (uint32_t n : {3u, 0u, missing, kPieces - 1}) {
    ASSERT_TRUE(client.SendRequest(kTaskId, PieceNumber{n}).ok());
  }
  EXPECT_EQ(client.outstanding(), 4u);
  auto wrong_order = receive(0);
  EXPECT_EQ(wrong_order.status().code(), StatusCode::kInternal);
  for (uint32_t n : {3u, 0u, missing, kPieces - 1}) {
    auto r = receive(n);
    if (n == missing) {
      EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
      continue;
    }
    ASSERT_TRUE(r.ok()) << "piece " << n << ": " << r.status().ToString();
    EXPECT_EQ(DestBytes(n), SourceBytes(n)) << "piece " << n;
    EXPECT_GT(r->cost_ns, 0u);
  }
  EXPECT_EQ(client.outstanding(), 0u);
  EXPECT_EQ(client.connects(), 1u);
  // The parent counts a piece after its last byte left, which may be after the child read it.
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (server_->pieces_uploaded() < 3u && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(server_->pieces_uploaded(), 3u);
}

// Requests pipelined on a connection the parent closed while it was idle are sent again on a
// new one, all of them.
TEST_F(PieceProtocolTest, PipelinedRequestsSurviveAConnectionClosedWhileIdle) {
  RestartWithShortIdleTimeout();
  PieceClient client = MakeClient();
  FetchAndIdleUntilClosed(client);
  PieceLayout layout = source_->layout();
  for (uint32_t n : {1u, 2u}) ASSERT_TRUE(client.SendRequest(kTaskId, PieceNumber{n}).ok());
  for (uint32_t n : {1u, 2u}) {
    PieceNumber pn{n};
    auto r = client.ReceivePiece(pn, layout.offset(pn), layout.length(pn), dest_->content_fd());
    ASSERT_TRUE(r.ok()) << "piece " << n << ": " << r.status().ToString();
    EXPECT_EQ(DestBytes(n), SourceBytes(n)) << "piece " << n;
  }
  EXPECT_EQ(client.connects(), 2u);
}

TEST_F(PieceProtocolTest, UnreachableParentIsUnavailable) {
  uint16_t port = server_->port();
  server_->Stop();
  PieceClient client("127.0.0.1", port);
  auto r = Fetch(client, 0);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
}

// A parent that answers with a cut-through PIECE the child never asked for (or with a CRC in
// it) breaks the protocol: the child refuses it and drops the connection.
TEST_F(PieceProtocolTest, AnUnrequestedCutThroughPieceIsAProtocolViolation) {
  for (bool asked : {false, true}) {
    uint16_t port = 0;
    auto listener = ListenTcp("127.0.0.1", 0, &port);
    ASSERT_TRUE(listener.ok());
    std::thread parent([&] {
      int fd = ::accept(listener->get(), nullptr, nullptr);
      ASSERT_GE(fd, 0);
      uint8_t request[pp::kHeaderBytes + pp::kRequestBodyBytes];
      ASSERT_TRUE(ReadFull(fd, request, sizeof request).ok());
      uint8_t frame[pp::kHeaderBytes + pp::kPieceBodyBytes];
      pp::EncodeHeader({.type = pp::FrameType::kPiece,
                        .flags = pp::kPieceFlagCutThrough,
                        .body_length = pp::kPieceBodyBytes},
                       frame);
      // Asked with cut-through: a CRC where 0 is due. Not asked: any cut-through answer.
      pp::EncodePieceHeader({0, asked ? 1234u : 0u, 0, kPieceLength}, frame + pp::kHeaderBytes);
      (void)WriteFull(fd, frame, sizeof frame);
      ::close(fd);
    });
    PieceClient client("127.0.0.1", port, {.accept_cut_through = asked});
    auto r = Fetch(client, 0);
    parent.join();
    EXPECT_EQ(r.status().code(), StatusCode::kInternal) << r.status().ToString();
    EXPECT_FALSE(client.connected());
  }
}

TEST_F(PieceProtocolTest, SilentParentIsDeadlineExceeded) {
  // A listener that accepts (backlog) but never answers.
  uint16_t port = 0;
  auto listener = ListenTcp("127.0.0.1", 0, &port);
  ASSERT_TRUE(listener.ok());
  PieceClientOptions options;
  options.read_timeout_ms = 200;
  PieceClient client("127.0.0.1", port, options);
  auto start = Clock::now();
  auto r = Fetch(client, 0);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
}

// ---- Cut-through: a piece the parent is still receiving (docs/piece_protocol.md).

// Plays the parent's own download of piece `n`: announces the receive, then makes `bytes` of
// it land in `steps` equal steps, `pause` apart (the bytes are already in the parent's file).
void Trickle(TaskStorage& task, uint32_t n, uint64_t bytes, int steps,
             std::chrono::milliseconds pause) {
  for (int i = 1; i <= steps; ++i) {
    std::this_thread::sleep_for(pause);
    task.AdvanceReceive(PieceNumber{n}, bytes * static_cast<uint64_t>(i) / steps);
  }
}

TEST_F(PieceProtocolTest, CutThroughForwardsAPieceAsItArrivesThenConfirmsIt) {
  const uint32_t n = kPieces - 2;
  const std::string bytes = SourceBytes(n);
  source_->BeginReceive(PieceNumber{n});
  std::thread parent([&] {
    Trickle(*source_, n, bytes.size(), 8, std::chrono::milliseconds(30));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the parent's own verify
    ASSERT_TRUE(source_->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
  });
  PieceClient client = MakeClient({.chunk_bytes = 16 * 1024, .accept_cut_through = true});
  std::vector<uint64_t> progress;
  PieceLayout layout = source_->layout();
  auto start = Clock::now();
  ASSERT_TRUE(client.SendRequest(kTaskId, PieceNumber{n}).ok());
  auto r = client.ReceivePiece(PieceNumber{n}, layout.offset(PieceNumber{n}), bytes.size(),
                               dest_->content_fd(), [&](uint64_t b) { progress.push_back(b); });
  parent.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->cut_through);
  EXPECT_EQ(r->crc32c, r->parent_crc32c);
  EXPECT_EQ(DestBytes(n), bytes);
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(240));  // paced by the parent
  // The bytes came as they landed at the parent, not in one piece at the end.
  ASSERT_GE(progress.size(), 4u);
  EXPECT_LT(progress.front(), bytes.size());
  EXPECT_EQ(progress.back(), bytes.size());
  // Counted once PIECE_END left, which may be after the child read it.
  auto deadline = Clock::now() + std::chrono::seconds(2);
  while (server_->pieces_forwarded() < 1u && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(server_->pieces_forwarded(), 1u);
  // The connection carries on: a finished piece next.
  ASSERT_TRUE(Fetch(client, 0).ok());
  EXPECT_EQ(client.connects(), 1u);
}

TEST_F(PieceProtocolTest, CutThroughOfAReceiveThatFailsIsAbortedAndNotTheParentsFault) {
  const uint32_t n = kPieces - 2;
  const std::string bytes = SourceBytes(n);
  source_->BeginReceive(PieceNumber{n});
  std::thread parent([&] {
    Trickle(*source_, n, bytes.size() / 2, 4, std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    source_->AbandonReceive(PieceNumber{n});  // its parent lied, say
  });
  PieceClient client = MakeClient({.accept_cut_through = true});
  auto r = Fetch(client, n);
  parent.join();
  EXPECT_EQ(r.status().code(), StatusCode::kAborted) << r.status().ToString();
  EXPECT_FALSE(client.connected());
  EXPECT_EQ(server_->forwards_abandoned(), 1u);
  EXPECT_FALSE(source_->HasPiece(PieceNumber{n}));
  // A retry of the piece is a new receive; this one completes.
  source_->BeginReceive(PieceNumber{n});
  std::thread retry([&] {
    Trickle(*source_, n, bytes.size(), 2, std::chrono::milliseconds(20));
    ASSERT_TRUE(source_->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
  });
  auto again = Fetch(client, n);
  retry.join();
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(DestBytes(n), bytes);
}

TEST_F(PieceProtocolTest, CutThroughPieceWhoseCommitDiffersIsDataLoss) {
  // The parent forwards bytes, then commits a CRC32C that is not theirs (its bytes changed
  // under it): the child must not take the piece.
  const uint32_t n = kPieces - 2;
  const std::string bytes = SourceBytes(n);
  source_->BeginReceive(PieceNumber{n});
  std::thread parent([&] {
    Trickle(*source_, n, bytes.size(), 2, std::chrono::milliseconds(20));
    ASSERT_TRUE(source_->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size()) ^ 1).ok());
  });
  PieceClient client = MakeClient({.accept_cut_through = true});
  auto r = Fetch(client, n);
  parent.join();
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
}

TEST_F(PieceProtocolTest, APieceBeingReceivedIsNotReadyWithoutCutThrough) {
  const uint32_t n = kPieces - 2;
  source_->BeginReceive(PieceNumber{n});
  source_->AdvanceReceive(PieceNumber{n}, 1000);
  PieceClient plain = MakeClient();  // an older child: never asks for cut-through
  auto r = Fetch(plain, n);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_TRUE(plain.connected());
  // A parent with cut-through off answers the same to a child that asks for it.
  server_->Stop();
  PieceServerOptions off;
  off.cut_through = false;
  StartServer(off);
  source_->BeginReceive(PieceNumber{n});
  source_->AdvanceReceive(PieceNumber{n}, 1000);
  PieceClient asking = MakeClient({.accept_cut_through = true});
  auto refused = Fetch(asking, n);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << refused.status().ToString();
  EXPECT_EQ(server_->pieces_forwarded(), 0u);
}

TEST_F(PieceProtocolTest, APieceIsForwardedOnlyWhileItIsTheParentsOneReceive) {
  // Two pieces arriving at once (two parents, or ranged GETs to the origin): each comes at a
  // fraction of the link, so neither is forwarded; once one is done the other is. A second task
  // of the parent, with nothing committed yet.
  TaskMeta meta{.task_id = kOtherTaskId,
                .content_length = static_cast<int64_t>(kContentLength),
                .piece_length = kPieceLength};
  std::shared_ptr<TaskStorage> other = parent_store_->OpenTask(meta).value();
  ASSERT_EQ(::pwrite(other->content_fd(), content_.data(), content_.size(), 0),
            static_cast<ssize_t>(content_.size()));
  const uint32_t n = 3, m = 1;
  for (uint32_t p : {n, m}) {
    other->BeginReceive(PieceNumber{p});
    other->AdvanceReceive(PieceNumber{p}, 1000);
  }
  EXPECT_EQ(other->ActiveReceives(), 2);
  PieceClient client = MakeClient({.accept_cut_through = true});
  PieceLayout layout = other->layout();
  auto fetch = [&](uint32_t piece) {
    PieceNumber pn{piece};
    return client.FetchPiece(kOtherTaskId, pn, layout.offset(pn), layout.length(pn),
                             dest_->content_fd());
  };
  auto refused = fetch(n);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << refused.status().ToString();
  EXPECT_TRUE(client.connected());
  const std::string bytes_m = SourceBytes(m);
  ASSERT_TRUE(other->CommitPiece(PieceNumber{m}, Crc32c(bytes_m.data(), bytes_m.size())).ok());
  EXPECT_EQ(other->ActiveReceives(), 1);
  const std::string bytes = SourceBytes(n);
  std::thread parent([&] {
    Trickle(*other, n, bytes.size(), 2, std::chrono::milliseconds(20));
    ASSERT_TRUE(other->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
  });
  auto r = fetch(n);
  parent.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->cut_through);
  EXPECT_EQ(DestBytes(n), bytes);
  EXPECT_EQ(other->ActiveReceives(), 0);
}

TEST_F(PieceProtocolTest, APieceStillArrivingIsForwardedToOneChildAtATime) {
  const uint32_t n = kPieces - 2;
  const std::string bytes = SourceBytes(n);
  source_->BeginReceive(PieceNumber{n});
  source_->AdvanceReceive(PieceNumber{n}, 1000);
  PieceClient first = MakeClient({.accept_cut_through = true});
  std::thread following([&] {
    auto r = Fetch(first, n);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->cut_through);
  });
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (server_->concurrent_uploads() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // A second child gets NOT_READY (and takes the piece once it is finished, or from the first).
  PieceClient second = MakeClient({.accept_cut_through = true});
  auto refused = Fetch(second, n);
  EXPECT_EQ(refused.status().code(), StatusCode::kNotFound) << refused.status().ToString();
  EXPECT_TRUE(second.connected());
  Trickle(*source_, n, bytes.size(), 2, std::chrono::milliseconds(10));
  ASSERT_TRUE(source_->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
  following.join();
  ASSERT_TRUE(Fetch(second, n).ok());
}

TEST_F(PieceProtocolTest, CutThroughReceiveWithNoByteIsNotReadyAndTheConnectionStays) {
  const uint32_t n = kPieces - 2;
  source_->BeginReceive(PieceNumber{n});
  std::thread parent([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    source_->AbandonReceive(PieceNumber{n});
  });
  PieceClient client = MakeClient({.accept_cut_through = true});
  auto start = Clock::now();
  auto r = Fetch(client, n);
  parent.join();
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  EXPECT_TRUE(client.connected());
  ASSERT_TRUE(Fetch(client, 0).ok());
}

TEST_F(PieceProtocolTest, StopCutsAForwardWaitingForBytesPromptly) {
  const uint32_t n = kPieces - 2;
  source_->BeginReceive(PieceNumber{n});
  source_->AdvanceReceive(PieceNumber{n}, 1000);  // then nothing more arrives
  std::thread child([&] {
    PieceClient client = MakeClient({.accept_cut_through = true});
    auto r = Fetch(client, n);
    EXPECT_FALSE(r.ok());
  });
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (server_->concurrent_uploads() == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto start = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  child.join();
}

}  // namespace
}  // namespace df
