#include "common/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <netdb.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

namespace df {

bool IsIpv4Literal(const std::string& ip) {
  in_addr addr{};
  return inet_pton(AF_INET, ip.c_str(), &addr) == 1;
}

Result<UniqueFd> ListenTcp(const std::string& ip, uint16_t port, uint16_t* bound_port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return InvalidArgument("'" + ip + "' is not an IPv4 address");
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket", errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Status(StatusCode::kUnavailable,
                  "bind " + ip + ":" + std::to_string(port) + ": " + std::strerror(errno));
  }
  if (::listen(fd.get(), 1024) != 0) return ErrnoStatus("listen", errno);
  socklen_t len = sizeof addr;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  if (bound_port) *bound_port = ntohs(addr.sin_port);
  return fd;
}

Result<UniqueFd> ConnectTcp(const std::string& ip, uint16_t port, int timeout_ms) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return InvalidArgument("'" + ip + "' is not an IPv4 address");
  }
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus("socket", errno);
  std::string where = ip + ":" + std::to_string(port);
  int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  if (rc != 0 && errno != EINPROGRESS)
    return Unavailable("connect " + where + ": " + std::strerror(errno));
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n == 0) return Status(StatusCode::kDeadlineExceeded, "connect " + where + ": timed out");
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (n < 0 || err != 0)
      return Unavailable("connect " + where + ": " + std::strerror(err ? err : errno));
  }
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

namespace {

// An IPv4 or IPv6 literal as a socket address; false for anything else (names included).
bool ParseIpLiteral(const std::string& ip, uint16_t port, sockaddr_storage* out, socklen_t* len) {
  *out = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// Waits up to `timeout_ms` for `fd` to become writable, or `cancel_fd` (when >= 0) readable.
// Returns 1 when writable, 0 on timeout, -1 when cancelled; retries EINTR with the time left.
int WaitWritable(int fd, int cancel_fd, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p[2] = {{fd, POLLOUT, 0}, {cancel_fd, POLLIN, 0}};
    // Rounded up: poll's millisecond timeout must not end the wait before the deadline.
    auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    int n = ::poll(p, cancel_fd >= 0 ? 2 : 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return 1;  // let SO_ERROR tell what happened
    if (cancel_fd >= 0 && (p[1].revents & POLLIN)) return -1;
    if (n == 0 && std::chrono::steady_clock::now() < deadline) continue;
    return n == 0 ? 0 : 1;
  }
}

// One handshake: the time from connect(2) to an established connection.
Result<std::chrono::nanoseconds> TimeOneHandshake(const sockaddr_storage& addr, socklen_t len,
                                                  const std::string& where,
                                                  const TcpRttOptions& options) {
  UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return ErrnoStatus("socket", errno);
  const auto start = std::chrono::steady_clock::now();
  int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len);
  if (rc != 0 && errno != EINPROGRESS) {
    return Unavailable("connect " + where + ": " + std::strerror(errno));
  }
  if (rc != 0) {
    int w = WaitWritable(fd.get(), options.cancel_fd, options.timeout_ms);
    if (w < 0) return Status(StatusCode::kCancelled, "connect " + where + ": cancelled");
    if (w == 0) {
      return Status(StatusCode::kDeadlineExceeded, "connect " + where + ": no answer within " +
                                                       std::to_string(options.timeout_ms) + " ms");
    }
  }
  const auto end = std::chrono::steady_clock::now();
  int err = 0;
  socklen_t err_len = sizeof err;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &err_len) != 0) err = errno;
  if (err != 0) return Unavailable("connect " + where + ": " + std::strerror(err));
  return std::max(end - start, std::chrono::nanoseconds(1));
}

}  // namespace

Result<std::chrono::nanoseconds> MeasureTcpRtt(const std::string& ip, uint16_t port,
                                               const TcpRttOptions& options) {
  sockaddr_storage addr;
  socklen_t len = 0;
  if (!ParseIpLiteral(ip, port, &addr, &len)) {
    return InvalidArgument("'" + ip + "' is not an IP address");
  }
  if (port == 0) return InvalidArgument("port 0");
  const std::string where =
      (addr.ss_family == AF_INET6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
  std::chrono::nanoseconds best = std::chrono::nanoseconds::max();
  for (int i = 0; i < std::max(options.handshakes, 1); ++i) {
    if (i > 0 && options.spacing_ms > 0) {
      // The pause doubles as a cancellation point: poll on the cancel fd alone.
      pollfd p{options.cancel_fd, POLLIN, 0};
      if (::poll(&p, options.cancel_fd >= 0 ? 1 : 0, options.spacing_ms) > 0) {
        return Status(StatusCode::kCancelled, "connect " + where + ": cancelled");
      }
    }
    auto rtt = TimeOneHandshake(addr, len, where, options);
    if (!rtt.ok()) {
      if (best != std::chrono::nanoseconds::max()) break;
      return rtt.status();
    }
    best = std::min(best, rtt.value());
  }
  return best;
}

void SetSocketTimeouts(int fd, int timeout_ms) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void SetCongestionControl(int fd, const std::string& name) {
  ::setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name.data(), static_cast<socklen_t>(name.size()));
}

Status ReadFull(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r == 0) {
      return Unavailable("connection closed by peer");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Status(StatusCode::kDeadlineExceeded, "read timed out");
    } else {
      return Unavailable(std::string("read: ") + std::strerror(errno));
    }
  }
  return Status::Ok();
}

Status WriteFull(int fd, const void* buf, size_t n) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
    if (r >= 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return Status(StatusCode::kDeadlineExceeded, "write timed out");
    } else {
      return Unavailable(std::string("write: ") + std::strerror(errno));
    }
  }
  return Status::Ok();
}

std::string DefaultIp() {
  ifaddrs* ifs = nullptr;
  if (getifaddrs(&ifs) != 0) return "127.0.0.1";
  std::string out = "127.0.0.1";
  for (ifaddrs* i = ifs; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    auto* a = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    if (std::strncmp(buf, "127.", 4) != 0) {
      out = buf;
      break;
    }
  }
  freeifaddrs(ifs);
  return out;
}

}  // namespace df

namespace df {

std::vector<std::string> ResolveHostIps(const std::string& host_port) {
  std::string host = host_port;
  if (!host.empty() && host[0] == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (std::count(host.begin(), host.end(), ':') == 1) {
    host = host.substr(0, host.find(':'));
  }
  std::vector<std::string> ips;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (host.empty() || ::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return ips;
  for (addrinfo* a = res; a; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    const void* addr =
        a->ai_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
            : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
    if (::inet_ntop(a->ai_family, addr, buf, sizeof buf) &&
        std::find(ips.begin(), ips.end(), buf) == ips.end()) {
      ips.emplace_back(buf);
    }
  }
  ::freeaddrinfo(res);
  return ips;
}

Result<std::vector<std::string>> ParseSchedulerAddresses(const std::string& list) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string a = list.substr(start, comma - start);
    a.erase(0, a.find_first_not_of(" \t"));
    a.erase(a.find_last_not_of(" \t") + 1);
    if (a.empty()) return InvalidArgument("scheduler: empty address in '" + list + "'");
    const size_t colon = a.rfind(':');
    if (colon == std::string::npos || colon + 1 == a.size() || colon == 0) {
      return InvalidArgument("scheduler must be HOST:PORT[,HOST:PORT...], got '" + a + "'");
    }
    if (!seen.insert(a).second) return InvalidArgument("scheduler: '" + a + "' listed twice");
    out.push_back(a);
    start = comma + 1;
  }
  return out;
}

uint64_t RendezvousScore(const std::string& a, const std::string& b) {
  // FNV-1a, 64 bits: the same value in every process and on every machine, unlike std::hash.
  uint64_t h = 14695981039346656037ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  mix(std::string(1, '\0'));
  mix(b);
  // FNV's low bits mix poorly for similar inputs; a final avalanche (splitmix64) fixes that.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

}  // namespace df
