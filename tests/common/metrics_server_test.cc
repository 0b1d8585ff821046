// Specifications of the metrics/health HTTP server: real sockets on 127.0.0.1, ephemeral port.
#include <gtest/gtest.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/net.h"

namespace df {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int MsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

struct Reply {
  int status = 0;  // 0 = no complete reply (see error)
  std::string head;
  std::string body;
  std::string error;
};

// One blocking client connection with its own read buffer (replies may arrive pipelined).
class TestClient {
 public:
  explicit TestClient(int port) {
    auto fd = ConnectTcp("127.0.0.1", static_cast<uint16_t>(port), 1000);
    if (fd.ok()) fd_ = std::move(fd.value());
  }
  bool connected() const { return static_cast<bool>(fd_); }
  int fd() const { return fd_.get(); }

  bool Send(const std::string& bytes) {
    return fd_ && ::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
                      static_cast<ssize_t>(bytes.size());
  }

  // Reads one reply within `timeout_ms`. A reply to HEAD has no body whatever its length says.
  Reply Read(int timeout_ms, bool head_request = false) {
    Reply r;
    auto deadline = Clock::now() + milliseconds(timeout_ms);
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline, &r.error)) return r;
    }
    r.head = buf_.substr(0, end + 4);
    buf_.erase(0, end + 4);
    size_t length = head_request ? 0 : ContentLength(r.head);
    while (buf_.size() < length) {
      if (!Fill(deadline, &r.error)) return r;
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
    if (r.head.compare(0, 9, "HTTP/1.1 ") == 0) r.status = std::atoi(r.head.c_str() + 9);
    return r;
  }

  Reply Get(const std::string& path, int timeout_ms = 1000) {
    if (!Send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) return {};
    return Read(timeout_ms);
  }

  // True when the server closes the connection (EOF or reset) within `timeout_ms`; bytes
  // arriving before that are discarded.
  bool WaitClosed(int timeout_ms) {
    auto deadline = Clock::now() + milliseconds(timeout_ms);
    std::string error;
    while (Fill(deadline, &error)) buf_.clear();
    return error != "timeout";
  }

 private:
  static size_t ContentLength(const std::string& head) {
    size_t at = head.find("Content-Length: ");
    return at == std::string::npos ? 0 : std::stoul(head.substr(at + 16));
  }

  // Appends what arrives before `deadline`; false with `error` on timeout, EOF or error.
  bool Fill(Clock::time_point deadline, std::string* error) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, MsUntil(deadline)) <= 0) {
      *error = "timeout";
      return false;
    }
    char chunk[16384];
    ssize_t n = ::recv(fd_.get(), chunk, sizeof chunk, 0);
    if (n <= 0) {
      *error = n == 0 ? "eof" : "reset";
      return false;
    }
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  UniqueFd fd_;
  std::string buf_;
};

// Connections that each send one byte of a request line every `interval`, on their own thread,
// until destroyed. All are connected and have sent their first byte when the constructor returns.
class SlowSenders {
 public:
  SlowSenders(int port, int count, milliseconds interval) : interval_(interval) {
    for (int i = 0; i < count; ++i) {
      auto fd = ConnectTcp("127.0.0.1", static_cast<uint16_t>(port), 1000);
      if (fd.ok()) fds_.push_back(std::move(fd.value()));
    }
    SendNextByte();
    thread_ = std::thread([this] { Run(); });
  }
  ~SlowSenders() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  size_t connected() const { return fds_.size(); }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval_, [this] { return stop_; })) SendNextByte();
  }
  void SendNextByte() {
    static const std::string kRequest = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    char c = kRequest[sent_++ % kRequest.size()];
    for (auto& fd : fds_) (void)::send(fd.get(), &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  const milliseconds interval_;
  std::vector<UniqueFd> fds_;
  size_t sent_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;
};

// A started server on an ephemeral loopback port.
std::unique_ptr<MetricsServer> StartServer(MetricsServerLimits limits = MetricsServerLimits()) {
  auto server = std::make_unique<MetricsServer>(limits);
  Status s = server->Start("127.0.0.1:0");
  EXPECT_TRUE(s.ok()) << s.ToString();
  return server;
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(MetricsServer, ServesRegisteredCounters) {
  auto server = StartServer();
  auto& family = prometheus::BuildCounter()
                     .Name("df_test_requests_total")
                     .Help("requests seen by the test")
                     .Register(server->registry());
  family.Add({{"kind", "probe"}}).Increment(3);

  TestClient client(server->port());
  Reply r = client.Get("/metrics");
  ASSERT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(Has(r.head, "Content-Type: text/plain; version=0.0.4")) << r.head;
  EXPECT_TRUE(Has(r.body, "df_test_requests_total{kind=\"probe\"} 3")) << r.body;
  EXPECT_TRUE(Has(r.body, "df_healthy 1")) << r.body;
}

TEST(MetricsServer, HealthzAnswersTheCheckAndTheFlag) {
  auto server = StartServer();
  TestClient client(server->port());
  Reply r = client.Get("/healthz");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_EQ(r.body, "ok\n");

  server->SetHealthCheck([] { return std::string("scheduler unreachable"); });
  r = client.Get("/healthz");
  EXPECT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(r.body, "scheduler unreachable\n");
  EXPECT_TRUE(Has(client.Get("/metrics").body, "df_healthy 0"));

  server->SetHealthCheck([] { return std::string(); });
  EXPECT_EQ(client.Get("/healthz").status, 200);

  server->SetHealthy(false);
  r = client.Get("/healthz");
  EXPECT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(r.body, "not serving\n");
  server->SetHealthy(true);
  EXPECT_EQ(client.Get("/healthz").status, 200);
}

TEST(MetricsServer, AHealthCheckThatThrowsMeansUnhealthy) {
  auto server = StartServer();
  server->SetHealthCheck([]() -> std::string { throw std::runtime_error("boom"); });
  TestClient client(server->port());
  Reply r = client.Get("/healthz");
  EXPECT_EQ(r.status, 503) << r.error;
  EXPECT_EQ(r.body, "health check failed: boom\n");
}

TEST(MetricsServer, UnknownPathIs404AndHeadHasNoBody) {
  auto server = StartServer();
  TestClient client(server->port());
  EXPECT_EQ(client.Get("/nope").status, 404);
  EXPECT_EQ(client.Get("/metrics?x=1").status, 200);
  ASSERT_TRUE(client.Send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  Reply r = client.Read(1000, /*head_request=*/true);
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(Has(r.head, "Content-Length: 3")) << r.head;
  // The body was not sent: the next reply on the connection starts right away.
  EXPECT_EQ(client.Get("/healthz").body, "ok\n");
}

TEST(MetricsServer, ServesRegisteredHandlersUntilRemoved) {
  auto server = StartServer();
  EXPECT_FALSE(server->SetHandler("/metrics", [] { return MetricsServer::HttpBody{}; }).ok());
  EXPECT_FALSE(server->SetHandler("/healthz", [] { return MetricsServer::HttpBody{}; }).ok());
  EXPECT_FALSE(server->SetHandler("api", [] { return MetricsServer::HttpBody{}; }).ok());
  ASSERT_TRUE(server
                  ->SetHandler("/api/v1/things",
                               [] {
                                 return MetricsServer::HttpBody{"application/json", "[]"};
                               })
                  .ok());
  ASSERT_TRUE(server
                  ->SetHandler("/api/v1/boom",
                               []() -> MetricsServer::HttpBody { throw std::runtime_error("x"); })
                  .ok());
  TestClient client(server->port());
  Reply r = client.Get("/api/v1/things?limit=3");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(Has(r.head, "Content-Type: application/json")) << r.head;
  EXPECT_EQ(r.body, "[]");
  EXPECT_EQ(client.Get("/api/v1/boom").status, 500);
  ASSERT_TRUE(server->SetHandler("/api/v1/things", nullptr).ok());
  EXPECT_EQ(client.Get("/api/v1/things").status, 404);
}

TEST(MetricsServer, OtherMethodsAre405AndTheConnectionStaysUsable) {
  auto server = StartServer();
  TestClient client(server->port());
  ASSERT_TRUE(client.Send("DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
  Reply r = client.Read(1000);
  EXPECT_EQ(r.status, 405) << r.error;
  EXPECT_TRUE(Has(r.head, "Allow: GET, HEAD")) << r.head;
  EXPECT_EQ(client.Get("/healthz").status, 200);

  // A request with a body is answered, then closed: its body is never parsed as a request.
  TestClient post(server->port());
  ASSERT_TRUE(post.Send("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /"));
  EXPECT_EQ(post.Read(1000).status, 405);
  EXPECT_TRUE(post.WaitClosed(1000));
}

TEST(MetricsServer, GarbageIs400ThenCloseAndTheServerKeepsServing) {
  auto server = StartServer();
  const std::vector<std::string> garbage = {
      std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 16),  // TLS hello
      "GET\r\n\r\n",
      "GET /metrics\r\n\r\n",
      "GET metrics HTTP/1.1\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
      std::string("GET /metrics HTTP/1.1\r\nHost: a\0b\r\n\r\n", 37),
      "GET /metrics HTTP/x.y\r\n\r\n",
  };
  for (const std::string& bytes : garbage) {
    TestClient client(server->port());
    ASSERT_TRUE(client.Send(bytes));
    Reply r = client.Read(1000);
    EXPECT_EQ(r.status, 400) << testing::PrintToString(bytes) << " " << r.error;
    EXPECT_TRUE(Has(r.head, "Connection: close"));
    EXPECT_TRUE(client.WaitClosed(1000)) << testing::PrintToString(bytes);
  }
  TestClient version(server->port());
  ASSERT_TRUE(version.Send("GET /metrics HTTP/2.0\r\n\r\n"));
  EXPECT_EQ(version.Read(1000).status, 505);

  TestClient after(server->port());
  EXPECT_EQ(after.Get("/metrics").status, 200);
}

TEST(MetricsServer, AnOversizedHeadIs431ThenCloseAndTheServerKeepsServing) {
  auto server = StartServer();
  TestClient client(server->port());
  std::string head = "GET /metrics HTTP/1.1\r\nX-Big: " + std::string(16 << 10, 'a') + "\r\n\r\n";
  ASSERT_TRUE(client.Send(head));
  Reply r = client.Read(1000);
  EXPECT_EQ(r.status, 431) << r.error;
  EXPECT_TRUE(client.WaitClosed(3000));

  // A head of exactly the limit is still fine.
  TestClient limit(server->port());
  std::string prefix = "GET /healthz HTTP/1.1\r\nX-Pad: ";
  std::string fits = prefix + std::string(MetricsServer::kMaxHeadBytes - prefix.size() - 4, 'b');
  ASSERT_TRUE(limit.Send(fits + "\r\n\r\n"));
  EXPECT_EQ(limit.Read(1000).status, 200);

  TestClient after(server->port());
  EXPECT_EQ(after.Get("/metrics").status, 200);
}

TEST(MetricsServer, KeepsConnectionsAliveAndAnswersPipelinedRequestsInOrder) {
  auto server = StartServer();
  TestClient client(server->port());
  ASSERT_TRUE(client.Send("GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /healthz"));
  EXPECT_EQ(client.Read(1000).status, 200);
  EXPECT_EQ(client.Read(1000).status, 404);
  ASSERT_TRUE(client.Send(" HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(client.Read(1000).status, 200);
  EXPECT_EQ(client.Get("/healthz").status, 200);

  // Connection: close, and HTTP/1.0 without keep-alive, end the connection after the reply.
  TestClient close(server->port());
  ASSERT_TRUE(close.Send("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"));
  Reply r = close.Read(1000);
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(Has(r.head, "Connection: close"));
  EXPECT_TRUE(close.WaitClosed(1000));
  TestClient http10(server->port());
  ASSERT_TRUE(http10.Send("GET /healthz HTTP/1.0\n\n"));
  EXPECT_EQ(http10.Read(1000).status, 200);
  EXPECT_TRUE(http10.WaitClosed(1000));
  TestClient http10_keep(server->port());
  ASSERT_TRUE(http10_keep.Send("GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  EXPECT_EQ(http10_keep.Read(1000).status, 200);
  EXPECT_EQ(http10_keep.Get("/healthz").status, 200);
}

TEST(MetricsServer, ClosesIdleConnections) {
  MetricsServerLimits limits;
  limits.idle_timeout_ms = 300;
  auto server = StartServer(limits);
  TestClient silent(server->port());
  TestClient used(server->port());
  EXPECT_EQ(used.Get("/healthz").status, 200);
  auto start = Clock::now();
  EXPECT_TRUE(silent.WaitClosed(3000));
  EXPECT_TRUE(used.WaitClosed(3000));
  EXPECT_GE(Clock::now() - start, milliseconds(200));
}

TEST(MetricsServer, ClosesConnectionsWhoseRequestHeadIsTooSlow) {
  MetricsServerLimits limits;
  limits.head_timeout_ms = 300;
  auto server = StartServer(limits);
  TestClient slow(server->port());
  ASSERT_TRUE(slow.Send("GET /metr"));
  EXPECT_TRUE(slow.WaitClosed(3000));
}

TEST(MetricsServer, WhenFullClosesTheOldestIdleConnectionToAdmitANewOne) {
  MetricsServerLimits limits;
  limits.max_connections = 3;
  auto server = StartServer(limits);
  TestClient oldest(server->port());
  EXPECT_EQ(oldest.Get("/healthz").status, 200);  // admitted before the next ones connect
  TestClient partial(server->port());
  ASSERT_TRUE(partial.Send("GET /hea"));
  TestClient idle(server->port());
  EXPECT_EQ(idle.Get("/healthz").status, 200);

  TestClient fresh(server->port());
  EXPECT_EQ(fresh.Get("/healthz").status, 200);
  EXPECT_TRUE(oldest.WaitClosed(1000));
  // The idle connection goes before the one that is in the middle of a request.
  TestClient another(server->port());
  EXPECT_EQ(another.Get("/healthz").status, 200);
  EXPECT_TRUE(idle.WaitClosed(1000));
  ASSERT_TRUE(partial.Send("lthz HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(partial.Read(1000).status, 200);
}

TEST(MetricsServer, AClientThatDoesNotReadDoesNotBlockOthers) {
  auto server = StartServer();
  auto& family = prometheus::BuildGauge().Name("df_test_padding").Register(server->registry());
  for (int i = 0; i < 2000; ++i) family.Add({{"i", std::to_string(i)}}).Set(i);
  TestClient hog(server->port());
  int small = 4096;
  ::setsockopt(hog.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  // Pipeline requests until the socket pushes back; never read a reply.
  std::string request = "GET /metrics HTTP/1.1\r\n\r\n";
  size_t sent = 0;
  for (int i = 0; i < 100000; ++i) {
    ssize_t n = ::send(hog.fd(), request.data(), request.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  EXPECT_GT(sent, 0u);

  auto start = Clock::now();
  TestClient fresh(server->port());
  Reply r = fresh.Get("/metrics");
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_TRUE(Has(r.body, "df_test_padding{i=\"1999\"} 1999"));
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(MetricsServer, DropsAConnectionThatLeavesMoreThanTheCapUnread) {
  MetricsServerLimits limits;
  limits.max_output_bytes = 1 << 20;
  auto server = StartServer(limits);
  // 8 MB of metrics: more than the kernel buffers of both ends hold (tcp_wmem max is 4 MB).
  auto& family = prometheus::BuildGauge().Name("df_test_padding").Register(server->registry());
  std::string pad(1000, 'p');
  for (int i = 0; i < 8000; ++i) family.Add({{"i", std::to_string(i)}, {"pad", pad}}).Set(i);
  TestClient hog(server->port());
  ASSERT_TRUE(hog.Send("GET /metrics HTTP/1.1\r\n\r\n"));
  // The hog reads nothing until the loop has answered it (its request arrived first).
  TestClient fresh(server->port());
  EXPECT_EQ(fresh.Get("/healthz").status, 200);

  Reply r = hog.Read(5000);
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.error, "timeout");
  EXPECT_TRUE(Has(r.head, "HTTP/1.1 200 OK")) << r.head.substr(0, 100);
}

TEST(MetricsServer, SurvivesRandomBytesOnManyConnections) {
  MetricsServerLimits limits;
  limits.max_connections = 64;  // so that admission also evicts
  auto server = StartServer(limits);
  const std::vector<std::string> pieces = {"GET ",
                                           "HEAD ",
                                           "POST ",
                                           "/metrics",
                                           "/healthz",
                                           " HTTP/1.1",
                                           " HTTP/1.0",
                                           "\r\n",
                                           "\n",
                                           "Connection: close\r\n",
                                           "Content-Length: 3\r\n",
                                           "Transfer-Encoding: chunked\r\n",
                                           "Host: x\r\n",
                                           "\r\n\r\n",
                                           ":",
                                           " ",
                                           std::string(1, '\0'),
                                           "\x80\xff"};
  std::mt19937 random(20240611);
  std::vector<std::unique_ptr<TestClient>> clients;
  for (int round = 0; round < 400; ++round) {
    if (clients.size() < 100 || random() % 4 == 0) {
      clients.push_back(std::make_unique<TestClient>(server->port()));
    }
    std::string bytes;
    for (int i = random() % 8; i >= 0; --i) {
      if (random() % 3 == 0) {
        for (int j = random() % 64; j >= 0; --j) bytes += static_cast<char>(random());
      } else {
        bytes += pieces[random() % pieces.size()];
      }
    }
    TestClient& client = *clients[random() % clients.size()];
    (void)::send(client.fd(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  TestClient after(server->port());
  EXPECT_EQ(after.Get("/metrics").status, 200);
}

TEST(MetricsServer, StartFailsWhenThePortIsTakenOrTheAddressIsBad) {
  auto first = StartServer();
  MetricsServer second;
  Status s = second.Start("127.0.0.1:" + std::to_string(first->port()));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(Has(s.message(), "in use")) << s.message();
  EXPECT_EQ(second.port(), 0);
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:0", "::1:0",
                          "[::1]", "127.0.0.1:0x10", "300.0.0.1:0"}) {
    EXPECT_EQ(second.Start(bad).code(), StatusCode::kUnavailable) << bad;
  }
  EXPECT_TRUE(second.Start("127.0.0.1:0").ok());
  EXPECT_GT(second.port(), 0);
  EXPECT_EQ(second.Start("127.0.0.1:0").code(), StatusCode::kInvalidArgument);
}

// Regression: the prometheus-cpp Exposer (civetweb, one worker) stopped accepting while idle
// connections were held open, so anyone could blind the scraper.
TEST(MetricsServer, ServesAFreshClientWhileIdleAndSlowConnectionsAreHeld) {
  MetricsServer server;
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  int port = server.port();
  ASSERT_GT(port, 0);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 300; ++i) {
    auto fd = ConnectTcp("127.0.0.1", static_cast<uint16_t>(port), 1000);
    if (fd.ok()) idle.push_back(std::move(fd.value()));
  }
  EXPECT_EQ(idle.size(), 300u);
  SlowSenders slow(port, 20, milliseconds(200));
  EXPECT_EQ(slow.connected(), 20u);

  auto start = Clock::now();
  TestClient fresh(port);
  ASSERT_TRUE(fresh.connected());
  Reply r = fresh.Get("/metrics", MsUntil(start + milliseconds(1000)));
  EXPECT_EQ(r.status, 200) << r.error;
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

}  // namespace
}  // namespace df
