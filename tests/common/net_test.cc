// MeasureTcpRtt against real sockets on loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <thread>
#include <vector>

#include "common/net.h"

namespace df {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Binds 127.0.0.1:0 without listening: connects are refused and the port stays ours.
UniqueFd BoundNotListening(uint16_t* port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// A listener whose accept queue is full (backlog 0, one connection never accepted): Linux drops
// further SYNs, so a connect hangs as it would towards a black-holed address. Empty when this
// kernel answers anyway (then the timeout cannot be shown on loopback).
struct BlackHole {
  BlackHole() {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(fd.get(), 0) != 0) {
      return;
    }
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    listener = std::move(fd);
    for (int i = 0; i < 8; ++i) {
      auto c = ConnectTcp("127.0.0.1", port, 200);
      if (!c.ok()) {
        full = c.status().code() == StatusCode::kDeadlineExceeded;
        return;
      }
      fillers.push_back(std::move(c).value());
    }
  }
  uint16_t port = 0;
  bool full = false;
  UniqueFd listener;
  std::vector<UniqueFd> fillers;
};

TEST(MeasureTcpRtt, HandshakeToAListeningSocketTakesPositiveTime) {
  uint16_t port = 0;
  auto listener = ListenTcp("127.0.0.1", 0, &port);
  ASSERT_TRUE(listener.ok());
  auto rtt = MeasureTcpRtt("127.0.0.1", port, TcpRttOptions{});
  ASSERT_TRUE(rtt.ok()) << rtt.status().ToString();
  EXPECT_GT(rtt.value().count(), 0);
  EXPECT_LT(rtt.value(), 100ms) << "loopback";
}

TEST(MeasureTcpRtt, ClosedPortFailsFastWithTheReason) {
  uint16_t port = 0;
  UniqueFd reserved = BoundNotListening(&port);
  TcpRttOptions o;
  o.timeout_ms = 2000;
  const auto start = Clock::now();
  auto rtt = MeasureTcpRtt("127.0.0.1", port, o);
  EXPECT_LT(Clock::now() - start, 1s);
  ASSERT_FALSE(rtt.ok());
  EXPECT_EQ(rtt.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(rtt.status().message().find("refused"), std::string::npos) << rtt.status().message();
}

TEST(MeasureTcpRtt, NamesAreNeverResolved) {
  for (const char* ip : {"localhost", "", "1.2.3", "127.0.0.1:80", "example.com"}) {
    auto rtt = MeasureTcpRtt(ip, 80, TcpRttOptions{});
    EXPECT_EQ(rtt.status().code(), StatusCode::kInvalidArgument) << ip;
  }
  EXPECT_EQ(MeasureTcpRtt("127.0.0.1", 0, TcpRttOptions{}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(MeasureTcpRtt, TimeoutIsHonouredWhenNoSynAckComes) {
  BlackHole hole;
  if (!hole.full) GTEST_SKIP() << "this kernel answers SYNs past a full accept queue";
  TcpRttOptions o;
  o.timeout_ms = 300;
  const auto start = Clock::now();
  auto rtt = MeasureTcpRtt("127.0.0.1", hole.port, o);
  const auto took = Clock::now() - start;
  EXPECT_EQ(rtt.status().code(), StatusCode::kDeadlineExceeded) << rtt.status().ToString();
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 900ms) << "one timeout, not one per handshake";
}

TEST(MeasureTcpRtt, CancelFdAbandonsAHandshakeAtOnce) {
  BlackHole hole;
  if (!hole.full) GTEST_SKIP() << "this kernel answers SYNs past a full accept queue";
  UniqueFd cancel(::eventfd(0, EFD_CLOEXEC));
  TcpRttOptions o;
  o.timeout_ms = 10'000;
  o.cancel_fd = cancel.get();
  std::thread canceller([&] {
    std::this_thread::sleep_for(100ms);
    uint64_t one = 1;
    (void)!::write(cancel.get(), &one, sizeof one);
  });
  const auto start = Clock::now();
  auto rtt = MeasureTcpRtt("127.0.0.1", hole.port, o);
  canceller.join();
  EXPECT_EQ(rtt.status().code(), StatusCode::kCancelled);
  EXPECT_LT(Clock::now() - start, 2s);
}

}  // namespace
}  // namespace df
