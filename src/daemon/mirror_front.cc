#include "daemon/mirror_front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <prometheus/counter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <optional>
#include <deque>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "common/log.h"
#include "common/net.h"
#include "common/thread_name.h"
#include "daemon/intercept_ca.h"
#include "daemon/registry_upstream.h"

namespace df {
namespace {

using FrontClock = std::chrono::steady_clock;

constexpr std::string_view kConnect = "CONNECT ";
// Reads and writes of a connection: as the mirror's HTTP server had them.
constexpr int kReadTimeoutMs = 30000;
constexpr int kWriteTimeoutMs = 60000;
// Waits are cut into slices this long so that Stop() is seen promptly.
constexpr int kPollSliceMs = 200;
constexpr size_t kWorkerThreads = 64;
// Bytes a client may send between two responses: the mirror serves GET and HEAD, whose requests
// are a head (cpp-httplib 0.11 does not bound a header line: a 1 MiB header would be buffered
// whole, per connection). Past this the connection is closed. Pipelined heads count together.
constexpr size_t kMaxUnansweredBytes = 64 << 10;
// Lines likewise (Apache allows 100 header fields): a registry client sends a few dozen, and this
// bounds how many one request makes cpp-httplib store (6,000 short ones fit in 64 KiB).
constexpr size_t kMaxUnansweredLines = 128;
// How long an accepted connection may stay silent before it is closed (AcceptLoop).
constexpr auto kFirstByteTimeout = std::chrono::seconds(10);
constexpr size_t kTunnelBufferBytes = 64 << 10;

int MsLeft(FrontClock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - FrontClock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Polls `fd` for `events` up to `timeout_ms`, in slices, giving up when `stopping` is set. True
// when an event (or an error/hang-up, which the following call reports) came.
bool PollFd(int fd, short events, int timeout_ms, const std::atomic<bool>& stopping) {
  const auto deadline = FrontClock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (stopping) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, std::min(kPollSliceMs, MsLeft(deadline)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
    if (MsLeft(deadline) == 0) return false;
  }
}

bool SendAll(int fd, std::string_view data, const std::atomic<bool>& stopping) {
  while (!data.empty()) {
    if (!PollFd(fd, POLLOUT, kWriteTimeoutMs, stopping)) return false;
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void AddressOf(int fd, bool peer, std::string& ip, int& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  const int rc = peer ? ::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len)
                      : ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (rc != 0) return;
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
  }
  ip = buf;
}

// What both kinds of connection share: the socket, its addresses, writability, and the budget of
// bytes a client may send before it gets a response.
class SocketStream : public ConnectionStream {
 public:
  SocketStream(int fd, const std::atomic<bool>& stopping) : fd_(fd), stopping_(stopping) {}
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return !stopping_ && ::poll(&p, 1, kWriteTimeoutMs) > 0 && !(p.revents & (POLLERR | POLLHUP));
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    AddressOf(fd_, true, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    AddressOf(fd_, false, ip, port);
  }
  socket_t socket() const override { return fd_; }

 protected:
  // How much a read may take; 0 once kMaxUnansweredBytes or kMaxUnansweredLines were read since
  // the last response.
  size_t ReadBudget(size_t size) const {
    if (unanswered_lines_ >= kMaxUnansweredLines) return 0;
    return std::min(size, kMaxUnansweredBytes - std::min(unanswered_, kMaxUnansweredBytes));
  }
  void CountRead(const char* data, ssize_t n) {
    if (n <= 0) return;
    unanswered_ += static_cast<size_t>(n);
    for (const char* p = data;
         (p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(data + n - p)))) !=
         nullptr;
         ++p) {
      ++unanswered_lines_;
    }
  }
  void CountResponse() { unanswered_ = unanswered_lines_ = 0; }

  const int fd_;
  const std::atomic<bool>& stopping_;

 private:
  size_t unanswered_ = 0;        // bytes read since the last response was written
  size_t unanswered_lines_ = 0;  // and the line ends among them
};

// The connection's socket, read through a small buffer: cpp-httplib reads a request's line and
// headers one byte at a time, and a poll and a recv per byte cost ~2 ms of CPU per KiB (a 64 KiB
// head of garbage took ~150 ms of a core).
class PlainStream : public SocketStream {
 public:
  using SocketStream::SocketStream;
  bool is_readable() const override { return WaitReadable(kReadTimeoutMs); }
  ssize_t read(char* ptr, size_t size) override {
    size = ReadBudget(size);
    if (size == 0) return -1;
    if (begin_ == end_) {
      for (;;) {
        if (!PollFd(fd_, POLLIN, kReadTimeoutMs, stopping_)) return -1;
        const ssize_t n = ::recv(fd_, buffer_, sizeof buffer_, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n <= 0) return n;
        begin_ = 0;
        end_ = static_cast<size_t>(n);
        break;
      }
    }
    const size_t n = std::min(size, end_ - begin_);
    std::memcpy(ptr, buffer_ + begin_, n);
    begin_ += n;
    CountRead(ptr, static_cast<ssize_t>(n));
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    CountResponse();
    return SendAll(fd_, std::string_view(ptr, size), stopping_) ? static_cast<ssize_t>(size) : -1;
  }
  bool WaitReadable(int timeout_ms) const override {
    return begin_ < end_ || PollFd(fd_, POLLIN, timeout_ms, stopping_);
  }

 private:
  char buffer_[4096];
  size_t begin_ = 0;  // buffer_[begin_, end_) was received and not read yet
  size_t end_ = 0;
};

// The plaintext inside an intercepted tunnel. The socket is blocking with SO_RCVTIMEO and
// SO_SNDTIMEO, which bound a record that arrives in parts.
class TlsStream : public SocketStream {
 public:
  TlsStream(SSL* ssl, int fd, const std::atomic<bool>& stopping)
      : SocketStream(fd, stopping), ssl_(ssl) {}
  bool is_readable() const override { return WaitReadable(kReadTimeoutMs); }
  ssize_t read(char* ptr, size_t size) override {
    size = ReadBudget(size);
    if (size == 0 || !is_readable()) return -1;
    const int n = SSL_read(ssl_, ptr, static_cast<int>(size));
    if (n > 0) {
      CountRead(ptr, n);
      return n;
    }
    return SSL_get_error(ssl_, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
  }
  ssize_t write(const char* ptr, size_t size) override {
    CountResponse();
    size_t done = 0;
    while (done < size) {
      if (stopping_) return -1;
      const int n =
          SSL_write(ssl_, ptr + done, static_cast<int>(std::min<size_t>(size - done, 1 << 30)));
      if (n <= 0) return -1;
      done += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(size);
  }
  bool WaitReadable(int timeout_ms) const override {
    return SSL_pending(ssl_) > 0 || PollFd(fd_, POLLIN, timeout_ms, stopping_);
  }

 private:
  SSL* ssl_;
};

std::string StatusLine(int status, const char* reason) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
}

std::string ErrorResponse(int status, const char* reason, const std::string& message) {
  const std::string body = message + "\n";
  return StatusLine(status, reason) + "X-Dragonfly-Error-Type: proxy\r\n" +
         "Content-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

// Sends an error response and closes gracefully: a close with unread request bytes would reset
// the connection, and the client could lose the response. So stop sending, then read and drop
// what the client still sends for a moment.
void RefuseAndDrain(int fd, const std::string& response, const std::atomic<bool>& stopping) {
  if (!SendAll(fd, response, stopping)) return;
  ::shutdown(fd, SHUT_WR);
  const auto deadline = FrontClock::now() + std::chrono::seconds(1);
  char buf[4096];
  size_t dropped = 0;
  while (dropped < (256u << 10) && PollFd(fd, POLLIN, MsLeft(deadline), stopping)) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return;
    dropped += static_cast<size_t>(n);
  }
}

// Connects to host:port (a name or an address literal) within kUpstreamConnectTimeout: a
// blocking socket, or Unavailable naming the target.
Result<UniqueFd> ConnectHostPort(const std::string& host_port, const std::atomic<bool>& stopping) {
  const size_t colon = host_port.rfind(':');
  std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) {
    return Unavailable(host_port + " does not resolve");
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(res, ::freeaddrinfo);
  const auto deadline = FrontClock::now() + kUpstreamConnectTimeout;
  std::string why = "no address";
  for (addrinfo* a = res; a; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) continue;
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      why = std::strerror(errno);
      continue;
    }
    if (!PollFd(fd.get(), POLLOUT, MsLeft(deadline), stopping)) {
      why = "timed out";
      break;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      why = std::strerror(err);
      continue;
    }
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK);
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return Unavailable("cannot connect to " + host_port + ": " + why);
}

// One direction of a tunnel: bytes read from `from` and not yet written to the other side.
struct Half {
  int from = -1;
  std::vector<char> buffer = std::vector<char>(kTunnelBufferBytes);
  size_t begin = 0, end = 0;
  bool eof = false;   // `from` said it sends nothing more
  bool shut = false;  // and the other side was told so (shutdown SHUT_WR)
  bool empty() const { return begin == end; }
};

}  // namespace

Result<std::string> ParseConnectHead(std::string_view head) {
  if (head.size() < 4 || head.substr(head.size() - 4) != "\r\n\r\n") {
    return InvalidArgument("the request head does not end with an empty line");
  }
  const size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  if (line.substr(0, kConnect.size()) != kConnect) return InvalidArgument("not a CONNECT request");
  line.remove_prefix(kConnect.size());
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) return InvalidArgument("no HTTP version");
  const std::string_view target = line.substr(0, space), version = line.substr(space + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return InvalidArgument("HTTP version must be HTTP/1.0 or HTTP/1.1");
  }
  for (size_t start = eol + 2; start < head.size() - 2;) {
    const size_t end = head.find("\r\n", start);
    const std::string_view header = head.substr(start, end - start);
    const size_t colon = header.find(':');
    if (colon == 0 || colon == std::string_view::npos ||
        header.substr(0, colon).find_first_of(" \t") != std::string_view::npos) {
      return InvalidArgument("malformed header line");
    }
    start = end + 2;
  }
  auto host_port = ParseHostPort(target, 0);
  if (!host_port.ok()) return InvalidArgument("CONNECT target: " + host_port.status().message());
  return host_port;
}

ConnectPolicy ConnectPolicyFor(const DaemonConfig& config, const std::string& host_port) {
  auto listed = [&](const std::vector<std::string>& hosts) {
    return std::find(hosts.begin(), hosts.end(), host_port) != hosts.end();
  };
  if (!config.proxy_ca_cert.empty() && listed(config.proxy_intercept_hosts)) {
    return ConnectPolicy::kIntercept;
  }
  if (listed(config.proxy_connect_hosts)) return ConnectPolicy::kTunnel;
  return ConnectPolicy::kRefused;
}

struct MirrorFront::Impl {
  Impl(const DaemonConfig& c, HttpConnectionHandler h, prometheus::Registry* registry)
      : config(c), http(std::move(h)) {
    if (registry) {
      connects = &prometheus::BuildCounter()
                      .Name("df_daemon_proxy_connects_total")
                      .Help(
                          "CONNECT requests on the mirror port by outcome: tunnel (bytes "
                          "relayed), intercept (TLS terminated, served by the mirror), refused "
                          "(host not allowed, 403), bad_request (400), busy (503), error "
                          "(upstream unreachable or TLS handshake failed)")
                      .Register(*registry);
    }
  }

  void Count(const char* outcome) {
    if (connects) connects->Add({{"outcome", outcome}}).Increment();
  }

  void AcceptLoop();
  void ServeConnection(UniqueFd fd);
  // Whether the connection starts with "CONNECT ": nullopt when it closed or sent nothing in
  // time. Only peeks.
  std::optional<bool> StartsWithConnect(int fd);
  void HandleConnect(int fd);
  // The CONNECT head, consumed byte by byte (nothing after it is read); InvalidArgument when it
  // is malformed or over kMaxConnectHeadBytes, DeadlineExceeded after kConnectHeadTimeout.
  Result<std::string> ReadConnectHead(int fd);
  void Tunnel(int client, const std::string& host_port);
  void Intercept(int client, const std::string& host_port);
  // Relays bytes between `a` and `b` until both directions ended, an error, kTunnelIdleTimeout
  // without a byte, or Stop().
  void Relay(int a, int b);

  const DaemonConfig& config;
  HttpConnectionHandler http;
  prometheus::Family<prometheus::Counter>* connects = nullptr;
  std::unique_ptr<InterceptCa> ca;  // set by Start when interception is configured
  UniqueFd listen_fd;
  uint16_t port = 0;
  std::thread acceptor;
  std::unique_ptr<httplib::ThreadPool> workers;
  std::atomic<bool> stopping{false};
  std::atomic<size_t> connections{0};
  std::atomic<uint32_t> tunnels{0};
};

// Accepted connections wait here, in the acceptor's own poll, until their first byte arrives:
// only then do they take a worker thread. So connections that send nothing (half-open, idle)
// cost a file descriptor, not one of the kWorkerThreads workers that real requests need; they
// are closed after kFirstByteTimeout, and when kMaxConnections are open the one that waited
// longest without a byte makes room for a new one (a client with a request sends it at once
// and leaves the waiting room within milliseconds).
void MirrorFront::Impl::AcceptLoop() {
  struct Waiting {
    UniqueFd fd;
    FrontClock::time_point since;
  };
  std::deque<Waiting> waiting;  // oldest first
  std::vector<pollfd> polled;
  auto dispatch = [this](UniqueFd fd) {
    auto shared = std::make_shared<UniqueFd>(std::move(fd));
    workers->enqueue([this, shared] {
      ServeConnection(std::move(*shared));
      connections.fetch_sub(1);
    });
  };
  while (!stopping) {
    polled.assign(1, pollfd{listen_fd.get(), POLLIN, 0});
    for (const Waiting& w : waiting) polled.push_back(pollfd{w.fd.get(), POLLIN, 0});
    if (::poll(polled.data(), polled.size(), kPollSliceMs) < 0) {
      if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    const auto now = FrontClock::now();
    std::deque<Waiting> still;
    for (size_t i = 0; i < waiting.size(); ++i) {
      const short ev = polled[i + 1].revents;
      if (ev & (POLLIN | POLLHUP | POLLERR)) {
        dispatch(std::move(waiting[i].fd));  // a byte, or the end: the worker sees which
      } else if (now - waiting[i].since >= kFirstByteTimeout) {
        connections.fetch_sub(1);  // closed: nothing in kFirstByteTimeout
      } else {
        still.push_back(std::move(waiting[i]));
      }
    }
    waiting.swap(still);
    if (!(polled[0].revents & POLLIN)) continue;
    UniqueFd fd(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EMFILE || errno == ENFILE) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      continue;
    }
    if (connections.fetch_add(1) >= kMaxConnections) {
      if (waiting.empty()) {
        connections.fetch_sub(1);
        continue;  // every connection is at work: this one is closed, the client retries
      }
      waiting.pop_front();  // the longest wait without a byte makes room
      connections.fetch_sub(1);
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    waiting.push_back(Waiting{std::move(fd), now});
  }
  connections.fetch_sub(waiting.size());
}

std::optional<bool> MirrorFront::Impl::StartsWithConnect(int fd) {
  const auto deadline = FrontClock::now() + std::chrono::milliseconds(kReadTimeoutMs);
  char buf[8];
  for (;;) {
    if (!PollFd(fd, POLLIN, MsLeft(deadline), stopping)) return std::nullopt;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return std::nullopt;
    if (n < 0) continue;
    const std::string_view got(buf, static_cast<size_t>(n));
    if (got != kConnect.substr(0, got.size())) return false;
    if (got.size() == kConnect.size()) return true;
    // A prefix of "CONNECT " so far: the peek sees the same bytes until more arrive.
    if (MsLeft(deadline) == 0) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void MirrorFront::Impl::ServeConnection(UniqueFd fd) {
  const std::optional<bool> connect = StartsWithConnect(fd.get());
  if (!connect) return;
  if (*connect) return HandleConnect(fd.get());
  PlainStream stream(fd.get(), stopping);
  try {
    http(stream, "");
  } catch (const std::exception& e) {  // cpp-httplib's own code may throw (std::regex, alloc)
    DF_LOG_WARN("mirror: connection ended by an exception: {}", e.what());
  }
}

// Takes the head and nothing after it (the tunnel's first bytes stay in the socket): peeks at
// what has arrived, then receives up to the end of the head only.
Result<std::string> MirrorFront::Impl::ReadConnectHead(int fd) {
  const auto deadline = FrontClock::now() + kConnectHeadTimeout;
  std::string head;
  char buf[4096];
  for (;;) {
    if (head.size() >= kMaxConnectHeadBytes) {
      return InvalidArgument("request head over " + std::to_string(kMaxConnectHeadBytes) +
                             " bytes");
    }
    if (!PollFd(fd, POLLIN, MsLeft(deadline), stopping)) {
      return Status(StatusCode::kDeadlineExceeded, "request head not complete in time");
    }
    const size_t room = std::min(sizeof buf, kMaxConnectHeadBytes - head.size());
    const ssize_t peeked = ::recv(fd, buf, room, MSG_PEEK | MSG_DONTWAIT);
    if (peeked < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (peeked <= 0) return Unavailable("the client closed the connection");
    // The end of the head may straddle what was read before and what was peeked now.
    const size_t carried = std::min<size_t>(head.size(), 3);
    std::string window = head.substr(head.size() - carried);
    window.append(buf, static_cast<size_t>(peeked));
    const size_t end = window.find("\r\n\r\n");
    const size_t take = end == std::string::npos ? static_cast<size_t>(peeked) : end + 4 - carried;
    const ssize_t got = ::recv(fd, buf, take, MSG_DONTWAIT);  // bytes the peek saw: no wait
    if (got != static_cast<ssize_t>(take)) return Unavailable("the client closed the connection");
    if (std::memchr(buf, '\0', take) != nullptr) {
      return InvalidArgument("NUL byte in the request head");
    }
    head.append(buf, take);
    if (end != std::string::npos) return head;
  }
}

void MirrorFront::Impl::HandleConnect(int fd) {
  auto head = ReadConnectHead(fd);
  if (!head.ok() && head.status().code() == StatusCode::kUnavailable) return;
  auto host_port = head.ok() ? ParseConnectHead(head.value()) : Result<std::string>(head.status());
  if (!host_port.ok()) {
    Count("bad_request");
    const bool timeout = host_port.status().code() == StatusCode::kDeadlineExceeded;
    RefuseAndDrain(fd,
                   ErrorResponse(timeout ? 408 : 400, timeout ? "Request Timeout" : "Bad Request",
                                 "bad CONNECT request: " + host_port.status().message()),
                   stopping);
    return;
  }
  const ConnectPolicy policy = ConnectPolicyFor(config, host_port.value());
  if (policy == ConnectPolicy::kRefused) {
    Count("refused");
    RefuseAndDrain(
        fd,
        ErrorResponse(403, "Forbidden",
                      "CONNECT to " + host_port.value() +
                          " is not allowed (proxy_connect_hosts, proxy_intercept_hosts)"),
        stopping);
    return;
  }
  if (tunnels.fetch_add(1) >= config.proxy_max_tunnels) {
    tunnels.fetch_sub(1);
    Count("busy");
    RefuseAndDrain(fd,
                   ErrorResponse(503, "Service Unavailable",
                                 "too many tunnels open (proxy_max_tunnels " +
                                     std::to_string(config.proxy_max_tunnels) + ")"),
                   stopping);
    return;
  }
  if (policy == ConnectPolicy::kIntercept) {
    Intercept(fd, host_port.value());
  } else {
    Tunnel(fd, host_port.value());
  }
  tunnels.fetch_sub(1);
}

void MirrorFront::Impl::Tunnel(int client, const std::string& host_port) {
  auto upstream = ConnectHostPort(host_port, stopping);
  if (!upstream.ok()) {
    Count("error");
    RefuseAndDrain(client, ErrorResponse(502, "Bad Gateway", upstream.status().message()),
                   stopping);
    return;
  }
  Count("tunnel");
  if (!SendAll(client, StatusLine(200, "Connection Established") + "\r\n", stopping)) return;
  Relay(client, upstream.value().get());
}

void MirrorFront::Impl::Relay(int a, int b) {
  Half halves[2];
  halves[0].from = a;  // a -> b
  halves[1].from = b;  // b -> a
  auto last_byte = FrontClock::now();
  while (!stopping) {
    if (halves[0].shut && halves[1].shut) return;
    pollfd p[2] = {{a, 0, 0}, {b, 0, 0}};
    for (int i = 0; i < 2; ++i) {
      Half& h = halves[i];
      if (!h.eof && h.empty()) p[i].events |= POLLIN;
      if (!h.empty()) p[1 - i].events |= POLLOUT;
    }
    const int n = ::poll(p, 2, kPollSliceMs);
    if (n < 0 && errno != EINTR) return;
    const auto before = last_byte;
    if (n <= 0) {
      if (FrontClock::now() - last_byte > kTunnelIdleTimeout) return;
      continue;
    }
    for (int i = 0; i < 2; ++i) {
      Half& h = halves[i];
      const int to = i == 0 ? b : a;
      if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) && !h.eof && h.empty()) {
        const ssize_t got = ::recv(h.from, h.buffer.data(), h.buffer.size(), MSG_DONTWAIT);
        if (got > 0) {
          h.begin = 0;
          h.end = static_cast<size_t>(got);
          last_byte = FrontClock::now();
        } else if (got == 0) {
          h.eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          return;  // reset: the whole tunnel ends
        }
      }
      if ((p[1 - i].revents & (POLLOUT | POLLERR | POLLHUP)) && !h.empty()) {
        const ssize_t put =
            ::send(to, h.buffer.data() + h.begin, h.end - h.begin, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (put > 0) {
          h.begin += static_cast<size_t>(put);
          last_byte = FrontClock::now();
        } else if (put < 0 && errno != EAGAIN && errno != EINTR) {
          return;
        }
      }
      if (h.eof && h.empty() && !h.shut) {
        ::shutdown(to, SHUT_WR);
        h.shut = true;
      }
    }
    // A hang-up is reported even when not asked for: without this, a side that hung up while
    // the other cannot take its last bytes yet would spin.
    if (last_byte == before) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void MirrorFront::Impl::Intercept(int client, const std::string& host_port) {
  const std::string host = host_port.substr(0, host_port.rfind(':'));
  auto upstream = ParseRegistryUpstream("https://" + host_port);
  auto ctx = ca->ServerContext(host);
  if (!upstream.ok() || !ctx.ok()) {
    Count("error");
    RefuseAndDrain(client,
                   ErrorResponse(500, "Internal Server Error",
                                 "cannot intercept " + host_port + ": " +
                                     (upstream.ok() ? ctx.status() : upstream.status()).message()),
                   stopping);
    return;
  }
  if (!SendAll(client, StatusLine(200, "Connection Established") + "\r\n", stopping)) return;
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.value().get()), SSL_free);
  SetSocketTimeouts(client, kReadTimeoutMs);
  if (!ssl || SSL_set_fd(ssl.get(), client) != 1 || SSL_accept(ssl.get()) != 1) {
    Count("error");
    DF_LOG_DEBUG("mirror: TLS handshake for {} failed (does the client trust the proxy CA?)",
                 host_port);
    return;
  }
  Count("intercept");
  TlsStream stream(ssl.get(), client, stopping);
  try {
    http(stream, upstream.value());
  } catch (const std::exception& e) {
    DF_LOG_WARN("mirror: intercepted connection to {} ended by an exception: {}", host_port,
                e.what());
  }
  SSL_shutdown(ssl.get());
}

MirrorFront::MirrorFront(const DaemonConfig& config, HttpConnectionHandler http,
                         prometheus::Registry* registry)
    : impl_(std::make_unique<Impl>(config, std::move(http), registry)) {}

MirrorFront::~MirrorFront() { Stop(); }

uint16_t MirrorFront::port() const { return impl_->port; }

Status MirrorFront::Start() {
  const DaemonConfig& c = impl_->config;
  if (!c.proxy_ca_cert.empty()) {
    auto ca = InterceptCa::Load(c.proxy_ca_cert, c.proxy_ca_key);
    if (!ca.ok()) return ca.status();
    impl_->ca = std::move(ca).value();
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string where = c.proxy_ip + ":" + std::to_string(c.proxy_port);
  if (::getaddrinfo(c.proxy_ip.c_str(), std::to_string(c.proxy_port).c_str(), &hints, &res) != 0 ||
      !res) {
    return Unavailable("registry mirror: cannot resolve " + c.proxy_ip);
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> list(res, ::freeaddrinfo);
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  if (fd) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!fd || ::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0 ||
      ::listen(fd.get(), 1024) != 0) {
    return Unavailable("registry mirror: cannot listen on " + where + ": " + std::strerror(errno));
  }
  std::string ip;
  int port = 0;
  AddressOf(fd.get(), false, ip, port);
  impl_->port = static_cast<uint16_t>(port);
  impl_->listen_fd = std::move(fd);
  impl_->workers = std::make_unique<httplib::ThreadPool>(kWorkerThreads + c.proxy_max_tunnels);
  Impl* impl = impl_.get();
  impl_->acceptor = NamedThread("df-mirror", [impl] { impl->AcceptLoop(); });
  return Status::Ok();
}

void MirrorFront::Stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  if (impl_->acceptor.joinable()) impl_->acceptor.join();
  if (impl_->workers) impl_->workers->shutdown();
  impl_->listen_fd.Reset();
}

}  // namespace df
