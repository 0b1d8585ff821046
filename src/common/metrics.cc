#include "common/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <prometheus/text_serializer.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/fd.h"
#include "common/http_syntax.h"
#include "common/log.h"

namespace df {

struct MetricsServer::Reply {
  int status = 200;
  std::string content_type;
  std::string body;
};

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kTextContentType[] = "text/plain; charset=utf-8";
constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
// A connection's next request is parsed only while less than this is waiting to be sent, so
// pipelined requests from a client that does not read cannot pile replies up in memory.
constexpr size_t kLowWaterBytes = 64 << 10;
// Requests answered per connection per loop turn.
constexpr int kRequestsPerTurn = 1;
// epoll user data of the two non-connection descriptors; connections count up from 2.
constexpr uint64_t kListenerId = 0;
constexpr uint64_t kWakeId = 1;
// How long accepting pauses after accept() fails for want of descriptors or memory (the
// listener stays readable, so retrying at once would spin).
constexpr auto kAcceptPause = std::chrono::milliseconds(100);

// ---- HTTP request heads -------------------------------------------------------------------

struct Request {
  std::string method;
  std::string path;  // target without query or fragment
  bool keep_alive = true;
  bool has_body = false;  // Content-Length > 0 or Transfer-Encoding: its bytes are never read
};

enum class HeadState { kIncomplete, kComplete, kMalformed, kBadVersion };

struct ParsedHead {
  HeadState state = HeadState::kIncomplete;
  size_t length = 0;  // bytes through the blank line, when complete
  Request request;
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Visible ASCII only: no spaces, controls or bytes >= 0x80 in a request target.
bool IsTarget(std::string_view s) {
  return !s.empty() && s[0] == '/' &&
         std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Length of the head at the start of `in` (through the first blank line), 0 while incomplete.
// Lines end in CRLF or, leniently, LF.
size_t HeadLength(std::string_view in) {
  for (size_t pos = 0;;) {
    size_t nl = in.find('\n', pos);
    if (nl == std::string_view::npos) return 0;
    if (nl == pos || (nl == pos + 1 && in[pos] == '\r')) return nl + 1;
    pos = nl + 1;
  }
}

// The lines of a complete head without their line ends, the blank line excluded.
std::vector<std::string_view> HeadLines(std::string_view head) {
  std::vector<std::string_view> lines;
  while (!head.empty()) {
    size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) break;
    lines.push_back(line);
    head.remove_prefix(nl + 1);
  }
  return lines;
}

// "METHOD SP /target SP HTTP/1.x".
HeadState ParseRequestLine(std::string_view line, Request* request, int* minor_version) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return HeadState::kMalformed;
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (!http::IsToken(method) || !IsTarget(target)) return HeadState::kMalformed;
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !IsDigit(version[5]) ||
      version[6] != '.' || !IsDigit(version[7])) {
    return HeadState::kMalformed;
  }
  if (version[5] != '1') return HeadState::kBadVersion;
  *minor_version = version[7] - '0';
  request->method = std::string(method);
  request->path = std::string(target.substr(0, target.find_first_of("?#")));
  return HeadState::kComplete;
}

// Applies one header line; false when it is malformed.
bool ParseHeader(std::string_view line, Request* request, bool* close, bool* keep_alive) {
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view name = line.substr(0, colon);
  std::string_view value = Trim(line.substr(colon + 1));
  if (!http::IsToken(name) || !http::IsFieldValue(value)) return false;
  if (EqualsIgnoreCase(name, "Connection")) {
    while (!value.empty()) {
      size_t comma = value.find(',');
      std::string_view option = Trim(value.substr(0, comma));
      if (EqualsIgnoreCase(option, "close")) *close = true;
      if (EqualsIgnoreCase(option, "keep-alive")) *keep_alive = true;
      value.remove_prefix(comma == std::string_view::npos ? value.size() : comma + 1);
    }
  } else if (EqualsIgnoreCase(name, "Content-Length")) {
    if (value.empty() || !std::all_of(value.begin(), value.end(), IsDigit)) return false;
    if (value.find_first_not_of('0') != std::string_view::npos) request->has_body = true;
  } else if (EqualsIgnoreCase(name, "Transfer-Encoding")) {
    request->has_body = true;
  }
  return true;
}

// Parses the request head at the start of `in` (leading blank lines already skipped).
ParsedHead ParseHead(std::string_view in) {
  ParsedHead parsed;
  parsed.length = HeadLength(in);
  if (parsed.length == 0) return parsed;
  std::vector<std::string_view> lines = HeadLines(in.substr(0, parsed.length));
  if (lines.empty()) {
    parsed.state = HeadState::kMalformed;
    return parsed;
  }
  int minor_version = 1;
  parsed.state = ParseRequestLine(lines.front(), &parsed.request, &minor_version);
  if (parsed.state != HeadState::kComplete) return parsed;
  bool close = false;
  bool keep_alive = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    // A line starting with white space would continue the previous one (obsolete folding).
    if (lines[i][0] == ' ' || lines[i][0] == '\t' ||
        !ParseHeader(lines[i], &parsed.request, &close, &keep_alive)) {
      parsed.state = HeadState::kMalformed;
      return parsed;
    }
  }
  parsed.request.keep_alive = !close && (minor_version >= 1 || keep_alive);
  return parsed;
}

// Drops the empty lines a client may send before a request line (RFC 9112 section 2.2).
void SkipBlankLines(std::string* in) {
  size_t skip = 0;
  while (skip < in->size()) {
    if ((*in)[skip] == '\n') {
      skip += 1;
    } else if ((*in)[skip] == '\r' && skip + 1 < in->size() && (*in)[skip + 1] == '\n') {
      skip += 2;
    } else {
      break;
    }
  }
  in->erase(0, skip);
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Internal Server Error";
  }
}

// ---- Listening address --------------------------------------------------------------------

struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t length = 0;
};

// Port digits to a number; -1 when not a port.
int ParsePort(std::string_view s) {
  if (s.empty() || s.size() > 5 || !std::all_of(s.begin(), s.end(), IsDigit)) return -1;
  int port = std::stoi(std::string(s));
  return port <= 65535 ? port : -1;
}

// "IPv4:PORT" or "[IPv6]:PORT", numeric only (no name lookups).
Result<ListenAddress> ParseListenAddress(const std::string& address) {
  auto bad = [&] { return Unavailable("metrics listen on '" + address + "': not IP:PORT"); };
  bool bracketed = !address.empty() && address[0] == '[';
  size_t colon = bracketed ? address.find("]:") : address.rfind(':');
  if (colon == std::string::npos) return bad();
  std::string host = bracketed ? address.substr(1, colon - 1) : address.substr(0, colon);
  int port = ParsePort(std::string_view(address).substr(colon + (bracketed ? 2 : 1)));
  if (port < 0) return bad();
  ListenAddress out;
  if (!bracketed) {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&out.addr);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) != 1) return bad();
    out.length = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.addr);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) != 1) return bad();
    out.length = sizeof(sockaddr_in6);
  }
  return out;
}

int BoundPort(int fd) {
  sockaddr_storage addr{};
  socklen_t length = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return 0;
  return ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

// A non-blocking listening socket bound exactly to `address`.
Result<UniqueFd> Listen(const std::string& address) {
  Result<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok()) return parsed.status();
  auto fail = [&](const char* what, int err) {
    return Unavailable("metrics listen on " + address + ": " + what + ": " + std::strerror(err));
  };
  int family = parsed->addr.ss_family;
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail("socket", errno);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&parsed->addr), parsed->length) != 0) {
    return fail("bind", errno);
  }
  if (::listen(fd.get(), 1024) != 0) return fail("listen", errno);
  return fd;
}

}  // namespace

// ---- The event loop -----------------------------------------------------------------------

// One thread, one epoll set, level-triggered. Connections are touched by the loop thread only;
// the other threads only construct and destroy the Loop.
class MetricsServer::Loop {
 public:
  using Handler = std::function<Reply(const std::string& method, const std::string& path)>;

  // Takes the listening socket; Unavailable when epoll, the eventfd or the thread fail.
  static Result<std::unique_ptr<Loop>> Start(UniqueFd listener, const MetricsServerLimits& limits,
                                             Handler handler);
  // Wakes the thread through the eventfd and joins it; then closes every connection.
  ~Loop();

 private:
  struct Connection {
    UniqueFd fd;
    std::string in;   // unparsed request bytes, at most kMaxHeadBytes
    std::string out;  // reply bytes; out[0, sent) already written
    size_t sent = 0;
    Clock::time_point idle_since;    // accept or last complete request
    Clock::time_point head_started;  // meaningful while `in` is not empty
    Clock::time_point linger_until;  // meaningful while lingering
    bool peer_eof = false;           // the client shut its write side
    bool closing = false;            // answer what is pending, then close
    bool lingering = false;          // our write side shut; draining input until EOF
    bool dead = false;               // close at the end of the current event
    bool more = false;               // may hold more requests: wake up again (via EPOLLOUT)
    uint32_t events = 0;             // registered epoll interest

    size_t pending() const { return out.size() - sent; }
  };

  Loop(UniqueFd listener, UniqueFd epoll, UniqueFd wake, const MetricsServerLimits& limits,
       Handler handler);
  bool Register(int fd, uint64_t id, uint32_t events);
  void Run();
  int WaitMs() const;
  void Watch(Clock::time_point deadline) { next_deadline_ = std::min(next_deadline_, deadline); }

  void AcceptAll();
  void PauseAccepting(int err);
  void Admit(UniqueFd fd);
  uint64_t Victim() const;
  void Sweep();
  Clock::time_point Deadline(const Connection& c) const;

  void OnEvent(uint64_t id, uint32_t events);
  void ReadInput(Connection& c);
  void Drain(Connection& c);
  void Serve(Connection& c);
  bool AnswerNext(Connection& c);
  void Answer(Connection& c, const Request& request);
  void Fail(Connection& c, int status);
  void AppendReply(Connection& c, const Reply& reply, bool head_only, bool keep_alive);
  void Flush(Connection& c);
  void StartLinger(Connection& c);
  void UpdateInterest(uint64_t id, Connection& c);

  const MetricsServerLimits limits_;
  const Handler handler_;
  const UniqueFd listener_;
  const UniqueFd epoll_;
  const UniqueFd wake_;
  // Loop thread only:
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_id_ = 2;
  Clock::time_point next_deadline_ = Clock::time_point::max();  // no connection expires before
  bool accept_paused_ = false;
  Clock::time_point accept_resume_;
  std::thread thread_;  // last: started once everything above exists
};

Result<std::unique_ptr<MetricsServer::Loop>> MetricsServer::Loop::Start(
    UniqueFd listener, const MetricsServerLimits& limits, Handler handler) {
  UniqueFd epoll(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll) return Unavailable(std::string("metrics: epoll_create1: ") + std::strerror(errno));
  UniqueFd wake(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!wake) return Unavailable(std::string("metrics: eventfd: ") + std::strerror(errno));
  std::unique_ptr<Loop> loop(
      new Loop(std::move(listener), std::move(epoll), std::move(wake), limits, std::move(handler)));
  if (!loop->Register(loop->listener_.get(), kListenerId, EPOLLIN) ||
      !loop->Register(loop->wake_.get(), kWakeId, EPOLLIN)) {
    return Unavailable(std::string("metrics: epoll_ctl: ") + std::strerror(errno));
  }
  try {
    loop->thread_ = std::thread([l = loop.get()] { l->Run(); });
  } catch (const std::system_error& e) {
    return Unavailable(std::string("metrics: start thread: ") + e.what());
  }
  return loop;
}

MetricsServer::Loop::Loop(UniqueFd listener, UniqueFd epoll, UniqueFd wake,
                          const MetricsServerLimits& limits, Handler handler)
    : limits_(limits),
      handler_(std::move(handler)),
      listener_(std::move(listener)),
      epoll_(std::move(epoll)),
      wake_(std::move(wake)) {}

MetricsServer::Loop::~Loop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  // An eventfd write fails only when the counter would overflow, which leaves it readable.
  (void)!::write(wake_.get(), &one, sizeof one);
  thread_.join();
}

bool MetricsServer::Loop::Register(int fd, uint64_t id, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

void MetricsServer::Loop::Run() {
  epoll_event events[64];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 64, WaitMs());
    if (n < 0 && errno != EINTR) {
      DF_LOG_ERROR("metrics server stopped: epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == kWakeId) return;
      if (id == kListenerId) {
        AcceptAll();
      } else {
        OnEvent(id, events[i].events);
      }
    }
    Sweep();
  }
}

int MetricsServer::Loop::WaitMs() const {
  Clock::time_point wake = next_deadline_;
  if (accept_paused_) wake = std::min(wake, accept_resume_);
  if (wake == Clock::time_point::max()) return -1;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(wake - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, INT_MAX));
}

// ---- Connections: admission, eviction, deadlines ------------------------------------------

void MetricsServer::Loop::AcceptAll() {
  // Bounded per wake-up so that a flood of connects cannot starve the established ones.
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      Admit(UniqueFd(fd));
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return;
    } else if (errno != EINTR && errno != ECONNABORTED && errno != EPROTO) {
      PauseAccepting(errno);
      return;
    }
  }
}

void MetricsServer::Loop::PauseAccepting(int err) {
  DF_LOG_WARN("metrics server: accept: {}; pausing {} ms", std::strerror(err),
              kAcceptPause.count());
  epoll_event ev{};
  ev.data.u64 = kListenerId;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener_.get(), &ev);
  accept_paused_ = true;
  accept_resume_ = Clock::now() + kAcceptPause;
}

void MetricsServer::Loop::Admit(UniqueFd fd) {
  if (static_cast<int>(connections_.size()) >= std::max(1, limits_.max_connections)) {
    connections_.erase(Victim());
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint64_t id = next_id_++;
  if (!Register(fd.get(), id, EPOLLIN)) return;  // dropped: fd closes here
  auto c = std::make_unique<Connection>();
  c->fd = std::move(fd);
  c->idle_since = Clock::now();
  c->events = EPOLLIN;
  Watch(c->idle_since + std::chrono::milliseconds(limits_.idle_timeout_ms));
  connections_.emplace(id, std::move(c));
}

// Lingering connections first (they are done), then idle ones, then the rest; the one that
// has gone longest without completing a request within its class.
uint64_t MetricsServer::Loop::Victim() const {
  auto rank = [](const Connection& c) {
    if (c.lingering) return 0;
    return c.in.empty() && c.pending() == 0 ? 1 : 2;
  };
  uint64_t victim = 0;
  const Connection* worst = nullptr;
  for (const auto& [id, c] : connections_) {
    if (!worst || rank(*c) < rank(*worst) ||
        (rank(*c) == rank(*worst) && c->idle_since < worst->idle_since)) {
      victim = id;
      worst = c.get();
    }
  }
  return victim;
}

Clock::time_point MetricsServer::Loop::Deadline(const Connection& c) const {
  if (c.lingering) return c.linger_until;
  Clock::time_point deadline = c.idle_since + std::chrono::milliseconds(limits_.idle_timeout_ms);
  if (!c.in.empty()) {
    deadline =
        std::min(deadline, c.head_started + std::chrono::milliseconds(limits_.head_timeout_ms));
  }
  return deadline;
}

// Closes expired connections and resumes accepting; runs only when something is due, so the
// scan over all connections happens at most once per expiry.
void MetricsServer::Loop::Sweep() {
  Clock::time_point now = Clock::now();
  if (accept_paused_ && now >= accept_resume_) {
    accept_paused_ = false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerId;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listener_.get(), &ev);
  }
  if (now < next_deadline_) return;
  next_deadline_ = Clock::time_point::max();
  for (auto it = connections_.begin(); it != connections_.end();) {
    Clock::time_point deadline = Deadline(*it->second);
    if (deadline <= now) {
      it = connections_.erase(it);
    } else {
      Watch(deadline);
      ++it;
    }
  }
}

// ---- Connections: reading, answering, writing ---------------------------------------------

void MetricsServer::Loop::OnEvent(uint64_t id, uint32_t events) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;  // closed earlier in this batch
  Connection& c = *it->second;
  if (events & (EPOLLERR | EPOLLHUP)) {
    c.dead = true;  // reset, or both directions shut: nothing more can be read or written
  } else if (c.lingering) {
    if (events & EPOLLIN) Drain(c);
  } else {
    if (events & EPOLLIN) ReadInput(c);
    if (!c.dead) Serve(c);
  }
  if (c.dead) {
    connections_.erase(it);
  } else {
    UpdateInterest(id, c);
  }
}

void MetricsServer::Loop::ReadInput(Connection& c) {
  size_t room = kMaxHeadBytes - std::min(c.in.size(), kMaxHeadBytes);
  if (room == 0) return;
  char buf[kMaxHeadBytes];
  ssize_t n = ::recv(c.fd.get(), buf, room, 0);
  if (n == 0) {
    c.peer_eof = true;
  } else if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) c.dead = true;
  } else {
    if (c.in.empty()) {
      c.head_started = Clock::now();
      Watch(c.head_started + std::chrono::milliseconds(limits_.head_timeout_ms));
    }
    c.in.append(buf, static_cast<size_t>(n));
  }
}

void MetricsServer::Loop::Drain(Connection& c) {
  char buf[4096];
  ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    c.dead = true;
  }
}

// Answers the buffered requests in order, writing as it goes: one request per turn, so that a
// client pipelining expensive scrapes takes turns with the others, and none while the reply
// backlog is large.
void MetricsServer::Loop::Serve(Connection& c) {
  c.more = false;
  for (int answered = 0;; ++answered) {
    Flush(c);
    if (c.dead || c.lingering || c.closing || c.pending() >= kLowWaterBytes) return;
    if (answered == kRequestsPerTurn) {
      c.more = true;
      return;
    }
    if (!AnswerNext(c)) break;
  }
  if (c.peer_eof) {
    // No complete request is left and none can come: finish writing, then close.
    c.closing = true;
    Flush(c);
  }
}

// Answers the request at the head of `c.in`; false when no complete request is buffered.
bool MetricsServer::Loop::AnswerNext(Connection& c) {
  SkipBlankLines(&c.in);
  if (c.in.empty()) return false;
  ParsedHead parsed = ParseHead(c.in);
  switch (parsed.state) {
    case HeadState::kIncomplete:
      if (c.in.size() < kMaxHeadBytes) return false;
      Fail(c, 431);
      return true;
    case HeadState::kMalformed:
      Fail(c, 400);
      return true;
    case HeadState::kBadVersion:
      Fail(c, 505);
      return true;
    case HeadState::kComplete:
      break;
  }
  c.in.erase(0, parsed.length);
  c.idle_since = Clock::now();
  if (!c.in.empty()) {
    c.head_started = c.idle_since;
    Watch(c.head_started + std::chrono::milliseconds(limits_.head_timeout_ms));
  }
  Answer(c, parsed.request);
  return true;
}

void MetricsServer::Loop::Answer(Connection& c, const Request& request) {
  Reply reply;
  // The handler runs library code (prometheus-cpp) and the owner's health check: a throw there
  // must cost one reply, not the server thread.
  try {
    reply = handler_(request.method, request.path);
  } catch (const std::exception& e) {
    reply = {500, kTextContentType, std::string("internal error: ") + e.what() + "\n"};
  } catch (...) {
    reply = {500, kTextContentType, "internal error\n"};
  }
  bool keep_alive = request.keep_alive && !request.has_body;
  AppendReply(c, reply, request.method == "HEAD", keep_alive);
  if (!keep_alive) c.closing = true;
}

// Answers a request that cannot be parsed; nothing after it on the connection can be trusted.
void MetricsServer::Loop::Fail(Connection& c, int status) {
  c.in.clear();
  AppendReply(c, {status, kTextContentType, std::string(ReasonPhrase(status)) + "\n"}, false,
              false);
  c.closing = true;
}

void MetricsServer::Loop::AppendReply(Connection& c, const Reply& reply, bool head_only,
                                      bool keep_alive) {
  std::string head = "HTTP/1.1 " + std::to_string(reply.status) + " " + ReasonPhrase(reply.status) +
                     "\r\nContent-Type: " + reply.content_type +
                     "\r\nContent-Length: " + std::to_string(reply.body.size()) + "\r\n";
  if (reply.status == 405) head += "Allow: GET, HEAD\r\n";
  head += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  c.out += head;
  if (!head_only) c.out += reply.body;
}

// Writes what the socket takes without blocking; drops the connection when the client leaves
// more than max_output_bytes unread.
void MetricsServer::Loop::Flush(Connection& c) {
  while (c.pending() > 0) {
    ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.pending(), MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      c.dead = true;
      return;
    }
  }
  if (c.pending() > limits_.max_output_bytes) {
    c.dead = true;
  } else if (c.pending() == 0) {
    c.out.clear();
    c.sent = 0;
    if (c.closing) StartLinger(c);
  }
}

// Closing right away with unread input would reset the connection, and a reset can destroy
// the reply (a 400 or 431) before the client reads it; so shut the write side and drain.
void MetricsServer::Loop::StartLinger(Connection& c) {
  if (c.peer_eof || ::shutdown(c.fd.get(), SHUT_WR) != 0) {
    c.dead = true;
    return;
  }
  c.in.clear();
  c.lingering = true;
  c.linger_until = Clock::now() + std::chrono::milliseconds(limits_.linger_timeout_ms);
  Watch(c.linger_until);
}

void MetricsServer::Loop::UpdateInterest(uint64_t id, Connection& c) {
  uint32_t want = 0;
  if (c.lingering) {
    want = EPOLLIN;
  } else {
    bool can_read =
        !c.peer_eof && !c.closing && c.in.size() < kMaxHeadBytes && c.pending() < kLowWaterBytes;
    if (can_read) want |= EPOLLIN;
    // A writable socket reports at once, which gives a connection with buffered requests its
    // next turn.
    if (c.pending() > 0 || c.more) want |= EPOLLOUT;
  }
  if (want == c.events) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) == 0) c.events = want;
}

// ---- MetricsServer ------------------------------------------------------------------------

namespace {

prometheus::MetricFamily HealthFamily(bool healthy) {
  prometheus::MetricFamily family;
  family.name = "df_healthy";
  family.help = "1 while /healthz answers 200";
  family.type = prometheus::MetricType::Gauge;
  prometheus::ClientMetric metric;
  metric.gauge.value = healthy ? 1 : 0;
  family.metric.push_back(metric);
  return family;
}

}  // namespace

MetricsServer::MetricsServer(MetricsServerLimits limits)
    : limits_(limits), registry_(std::make_shared<prometheus::Registry>()) {}

MetricsServer::~MetricsServer() = default;

Status MetricsServer::Start(const std::string& address) {
  if (loop_)
    return InvalidArgument("metrics server already started on port " + std::to_string(port_));
  Result<UniqueFd> listener = Listen(address);
  if (!listener.ok()) return listener.status();
  int port = BoundPort(listener->get());
  auto loop = Loop::Start(
      std::move(listener.value()), limits_,
      [this](const std::string& method, const std::string& path) { return Respond(method, path); });
  if (!loop.ok()) return loop.status();
  port_ = port;
  loop_ = std::move(loop.value());
  return Status::Ok();
}

void MetricsServer::SetHealthy(bool healthy) {
  std::lock_guard<std::mutex> lock(mu_);
  healthy_ = healthy;
}

void MetricsServer::SetHealthCheck(std::function<std::string()> check) {
  auto shared =
      check ? std::make_shared<const std::function<std::string()>>(std::move(check)) : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  check_ = std::move(shared);
}

MetricsServer::Reply MetricsServer::Respond(const std::string& method, const std::string& path) {
  if (method != "GET" && method != "HEAD") {
    return {405, kTextContentType, "only GET and HEAD\n"};
  }
  if (path == "/metrics") return MetricsReply();
  if (path == "/healthz") return HealthReply();
  std::shared_ptr<const std::function<HttpBody()>> handler;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = handlers_.find(path);
    if (it != handlers_.end()) handler = it->second;
  }
  if (handler) {
    HttpBody body = (*handler)();  // a throw is answered 500 by Loop::Answer
    return {200, std::move(body.content_type), std::move(body.body)};
  }
  return {404, kTextContentType, "not found; try /metrics or /healthz\n"};
}

Status MetricsServer::SetHandler(const std::string& path, std::function<HttpBody()> handler) {
  if (path.empty() || path[0] != '/' || path == "/metrics" || path == "/healthz") {
    return InvalidArgument("metrics server: cannot register a handler for '" + path + "'");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (handler) {
    handlers_[path] = std::make_shared<const std::function<HttpBody()>>(std::move(handler));
  } else {
    handlers_.erase(path);
  }
  return Status::Ok();
}

MetricsServer::Reply MetricsServer::MetricsReply() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  families.push_back(HealthFamily(Unhealthy().empty()));
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return {200, kMetricsContentType, out.str()};
}

MetricsServer::Reply MetricsServer::HealthReply() {
  std::string reason = Unhealthy();
  if (reason.empty()) return {200, kTextContentType, "ok\n"};
  return {503, kTextContentType, reason + "\n"};
}

std::string MetricsServer::Unhealthy() {
  std::shared_ptr<const std::function<std::string()>> check;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!healthy_) return "not serving";
    check = check_;
  }
  if (!check) return "";
  std::string reason;
  // The check is the owner's code, called on our thread: a throw means unhealthy.
  try {
    reason = (*check)();
  } catch (const std::exception& e) {
    reason = std::string("health check failed: ") + e.what();
  } catch (...) {
    reason = "health check failed";
  }
  // Keep the body one line whatever the check returned (a lone "\n" still means unhealthy).
  std::replace_if(
      reason.begin(), reason.end(), [](char c) { return c == '\r' || c == '\n'; }, ' ');
  return reason;
}

}  // namespace df
