#include "daemon/piece_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>

#include "common/log.h"
#include "common/net.h"
#include "common/thread_name.h"
#include "daemon/piece_protocol.h"

namespace df {

namespace pp = piece_protocol;

// Meters bytes for all connections of one server. Debt-based: a caller takes its tokens at
// once (the balance may go negative) and sleeps until the balance is back to zero, so a large
// chunk never starves behind small ones. Thread-safe.
class TokenBucket {
 public:
  explicit TokenBucket(uint64_t rate_bytes_per_sec)
      : rate_bytes_per_sec_(static_cast<double>(rate_bytes_per_sec)),
        burst_bytes_(std::max(rate_bytes_per_sec_ / 10, 256.0 * 1024)),
        tokens_(burst_bytes_),
        last_(Clock::now()) {}

  // Takes `bytes` tokens, sleeping as needed. False when `stopping` became true meanwhile.
  bool Acquire(uint64_t bytes, const std::atomic<bool>& stopping) {
    double wait_sec = 0;
    {
      std::lock_guard lock(mu_);
      auto now = Clock::now();
      tokens_ =
          std::min(burst_bytes_, tokens_ + rate_bytes_per_sec_ *
                                               std::chrono::duration<double>(now - last_).count());
      last_ = now;
      tokens_ -= static_cast<double>(bytes);
      if (tokens_ < 0) wait_sec = -tokens_ / rate_bytes_per_sec_;
    }
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(wait_sec));
    // Short sleeps so that Stop() is never held up by a slow rate.
    while (Clock::now() < deadline) {
      if (stopping.load(std::memory_order_relaxed)) return false;
      Clock::duration left = deadline - Clock::now();
      std::this_thread::sleep_for(std::min<Clock::duration>(left, std::chrono::milliseconds(20)));
    }
    return !stopping.load(std::memory_order_relaxed);
  }

 private:
  using Clock = std::chrono::steady_clock;
  const double rate_bytes_per_sec_;
  const double burst_bytes_;
  std::mutex mu_;
  double tokens_;           // GUARDED_BY(mu_)
  Clock::time_point last_;  // GUARDED_BY(mu_)
};

namespace {

constexpr uint64_t kRateLimitedChunkBytes = 256 * 1024;
constexpr uint64_t kMaxSendfileBytes = 1ull << 30;  // below sendfile's 0x7ffff000 cap
// How often a thread waiting on a piece still arriving (cut-through) looks at Stop().
constexpr auto kStopPollInterval = std::chrono::milliseconds(200);
// How long a cut-through request waits for the first bytes of a piece this parent is receiving
// before it answers NOT_READY. Receives are announced only once they have bytes, so a receive
// without any is a retry that just began (or the child's view is stale): short, the child does
// better asking someone else than waiting; and two peers that each ask the other for a piece
// both are retrying never hold each other for long.
constexpr auto kFirstByteWait = std::chrono::milliseconds(500);

// sendfile(2) has no MSG_NOSIGNAL: a connection thread blocks SIGPIPE for itself so that a
// child that hangs up yields EPIPE instead of killing the daemon.
void BlockSigpipeInThisThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// Half-closes and discards what the child still sends (bounded), so that our last frame is
// read by the child rather than lost to a reset caused by unread input.
void LingeringClose(int fd, int linger_ms) {
  ::shutdown(fd, SHUT_WR);
  char sink[4096];
  size_t drained = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(linger_ms);
  while (drained < 64 * 1024 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, std::min(linger_ms, 50)) <= 0) continue;
    ssize_t r = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (r <= 0) break;
    drained += static_cast<size_t>(r);
  }
}

bool SendAll(int fd, const uint8_t* data, size_t n, int flags) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, flags | MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool KeepsConnection(uint16_t code) {
  return code == static_cast<uint16_t>(pp::ErrorCode::kNotFound) ||
         code == static_cast<uint16_t>(pp::ErrorCode::kNotReady);
}

}  // namespace

PieceServer::PieceServer(PieceServerOptions options, TaskLookup lookup)
    : options_(std::move(options)), lookup_(std::move(lookup)) {
  if (options_.upload_rate_bytes_per_sec > 0) {
    bucket_ = std::make_unique<TokenBucket>(options_.upload_rate_bytes_per_sec);
  }
}

PieceServer::~PieceServer() { Stop(); }

Status PieceServer::Start() {
  auto fd = ListenTcp(options_.ip, options_.port, &port_);
  if (!fd.ok()) return fd.status();
  listen_fd_ = std::move(fd).value();
  accept_thread_ = NamedThread("df-piece-acc", [this] { AcceptLoop(); });
  DF_LOG_INFO("piece server listening addr={}:{} max_connections={} rate_limit_bytes_per_sec={}",
              options_.ip, port_, options_.max_connections, options_.upload_rate_bytes_per_sec);
  return Status::Ok();
}

void PieceServer::Stop() {
  if (stopping_.exchange(true)) return;
  // shutdown() wakes a thread blocked in accept() (it returns EINVAL); close() would not.
  if (listen_fd_) ::shutdown(listen_fd_.get(), SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  std::list<std::unique_ptr<Connection>> connections;
  {
    std::lock_guard lock(mu_);
    for (auto& c : connections_) {
      if (c->fd) ::shutdown(c->fd.get(), SHUT_RDWR);
    }
    connections.swap(connections_);
  }
  for (auto& c : connections) c->thread.join();
  listen_fd_.Reset();
}

void PieceServer::AcceptLoop() {
  while (!stopping_.load()) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      Admit(UniqueFd(fd));
      continue;
    }
    if (stopping_.load()) break;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    // EMFILE and friends: back off instead of spinning.
    DF_LOG_WARN("piece server accept failed: {}", std::strerror(errno));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void PieceServer::ReapFinishedLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->finished) {
      (*it)->thread.join();  // the thread has set `finished` as its last step
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

bool PieceServer::EvictIdleLocked() {
  const Clock::rep now = Clock::now().time_since_epoch().count();
  const Clock::rep min_idle =
      std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(options_.evict_idle_ms))
          .count();
  Connection* victim = nullptr;
  for (const auto& c : connections_) {
    if (c->finished || c->evicted || c->answering.load(std::memory_order_relaxed)) continue;
    Clock::rep last = c->last_frame.load(std::memory_order_relaxed);
    if (now - last < min_idle) continue;
    if (!victim || last < victim->last_frame.load(std::memory_order_relaxed)) victim = c.get();
  }
  if (!victim) return false;
  // Its thread sees EOF and ends; the fd stays open (and its number reserved) until then. If it
  // started answering since the check above, the child sees a cut piece and reconnects.
  victim->evicted = true;
  ::shutdown(victim->fd.get(), SHUT_RDWR);
  evicted_connections_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void PieceServer::Admit(UniqueFd fd) {
  std::unique_lock lock(mu_);
  ReapFinishedLocked();
  const size_t limit = static_cast<size_t>(std::max(options_.max_connections, 1));
  size_t evicted = 0;  // shut down, their threads ending: they hold no slot, but bound them too
  for (const auto& c : connections_) evicted += c->evicted ? 1 : 0;
  if (connections_.size() - evicted >= limit && (evicted >= limit || !EvictIdleLocked())) {
    lock.unlock();
    SendError(fd.get(), static_cast<uint16_t>(pp::ErrorCode::kBusy), "connection limit reached");
    return;
  }
  ConfigureSocket(fd.get());
  accepted_connections_.fetch_add(1, std::memory_order_relaxed);
  auto conn = std::make_unique<Connection>();
  conn->fd = std::move(fd);
  conn->last_frame.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  Connection* raw = conn.get();
  connections_.push_back(std::move(conn));
  raw->thread = NamedThread("df-piece-serve", [this, raw] { ServeConnection(raw); });
}

void PieceServer::ConfigureSocket(int fd) const {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!options_.congestion_control.empty()) SetCongestionControl(fd, options_.congestion_control);
  if (options_.send_buffer_bytes > 0) {
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options_.send_buffer_bytes,
                 sizeof options_.send_buffer_bytes);
  }
  // Receive deadlines are enforced with poll() in ReceiveBy(): SO_RCVTIMEO restarts with every
  // byte, so a 1 byte/s sender would never hit it.
  timeval send{options_.send_timeout_ms / 1000, (options_.send_timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send, sizeof send);
}

void PieceServer::ServeConnection(Connection* conn) {
  BlockSigpipeInThisThread();
  active_connections_.fetch_add(1, std::memory_order_relaxed);
  while (!stopping_.load(std::memory_order_relaxed) && HandleFrame(conn) == Next::kContinue) {
  }
  active_connections_.fetch_sub(1, std::memory_order_relaxed);
  // Close now rather than at reap time so the child sees the close at once. Under mu_: Stop()
  // shuts down connection fds under mu_ and must never touch a closed (maybe reused) number.
  std::lock_guard lock(mu_);
  conn->fd.Reset();
  conn->finished = true;
}

bool PieceServer::ReceiveBy(int fd, uint8_t* buf, size_t n, Clock::time_point deadline,
                            bool frame_deadline) {
  while (n > 0) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      if (frame_deadline) request_timeouts_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 60'000)));
    if (ready < 0 && errno != EINTR) return false;
    if (ready <= 0) continue;
    ssize_t got = ::recv(fd, buf, n, MSG_DONTWAIT);
    if (got == 0) return false;  // EOF, or Stop()/eviction shut the socket down
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return false;
    }
    buf += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

PieceServer::Next PieceServer::HandleFrame(Connection* conn) {
  const int fd = conn->fd.get();
  const auto request_timeout = std::chrono::milliseconds(options_.request_timeout_ms);
  // Waiting for a frame to start: the idle timeout, except that a connection must open with a
  // frame soon after the accept. Once it started, the whole frame is due within the request
  // timeout. Either way a miss simply ends the connection, as EOF, reset and Stop() do.
  Clock::time_point first_byte_by =
      conn->had_frame
          ? Clock::now() + std::chrono::milliseconds(options_.idle_timeout_ms)
          : Clock::time_point(Clock::duration(conn->last_frame.load())) + request_timeout;
  uint8_t header_bytes[pp::kHeaderBytes];
  if (!ReceiveBy(fd, header_bytes, 1, first_byte_by, !conn->had_frame)) return Next::kClose;
  const Clock::time_point frame_by = Clock::now() + request_timeout;
  if (!ReceiveBy(fd, header_bytes + 1, sizeof header_bytes - 1, frame_by, true)) {
    return Next::kClose;
  }
  pp::FrameHeader h = pp::DecodeHeader(header_bytes);
  auto bad = [&](pp::ErrorCode code, const std::string& why) {
    protocol_errors_.fetch_add(1, std::memory_order_relaxed);
    return SendError(fd, static_cast<uint16_t>(code), why);
  };
  switch (pp::CheckRequestHeader(h)) {
    case pp::RequestHeaderVerdict::kAccept:
      break;
    case pp::RequestHeaderVerdict::kBadMagic:
      return bad(pp::ErrorCode::kBadRequest, "bad magic");
    case pp::RequestHeaderVerdict::kUnsupportedVersion:
      return bad(pp::ErrorCode::kUnsupportedVersion,
                 "unsupported version " + std::to_string(h.version));
    case pp::RequestHeaderVerdict::kUnexpectedType:
      return bad(pp::ErrorCode::kBadRequest,
                 "unexpected frame type " + std::to_string(static_cast<int>(h.type)) +
                     " with body length " + std::to_string(h.body_length));
  }
  uint8_t body[pp::kRequestBodyBytes];  // the largest body a parent accepts
  static_assert(pp::kRequestBodyBytes >= pp::kPingBodyBytes);
  if (!ReceiveBy(fd, body, h.body_length, frame_by, true)) return Next::kClose;
  conn->had_frame = true;
  conn->last_frame.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed);
  conn->answering.store(true, std::memory_order_relaxed);
  Next next =
      h.type == pp::FrameType::kPing ? HandlePing(fd, body) : HandleRequestPiece(fd, h.flags, body);
  conn->answering.store(false, std::memory_order_relaxed);
  return next;
}

PieceServer::Next PieceServer::HandlePing(int fd, const uint8_t* body) {
  uint8_t frame[pp::kHeaderBytes + pp::kPingBodyBytes];
  pp::EncodeHeader({.type = pp::FrameType::kPong, .body_length = pp::kPingBodyBytes}, frame);
  std::memcpy(frame + pp::kHeaderBytes, body, pp::kPingBodyBytes);
  return SendAll(fd, frame, sizeof frame, 0) ? Next::kContinue : Next::kClose;
}

PieceServer::Next PieceServer::HandleRequestPiece(int fd, uint32_t flags, const uint8_t* body) {
  // thread_local: the id buffer is reused by every request of this connection thread, so
  // serving a piece allocates nothing.
  thread_local std::string task_id;
  pp::PieceRequest request = pp::DecodePieceRequest(body);
  task_id.assign(request.task_id);
  if (!pp::IsWireTaskId(task_id)) {
    protocol_errors_.fetch_add(1, std::memory_order_relaxed);
    return SendError(fd, static_cast<uint16_t>(pp::ErrorCode::kBadRequest), "malformed task id");
  }
  pieces_requested_.fetch_add(1, std::memory_order_relaxed);
  uint32_t piece = request.piece_number;
  std::shared_ptr<TaskStorage> task = lookup_(task_id);
  if (!task) return SendError(fd, static_cast<uint16_t>(pp::ErrorCode::kNotFound), "no such task");
  uint32_t crc = 0;
  if (!task->PieceCrc(PieceNumber{piece}, &crc)) {
    if (options_.cut_through && (flags & pp::kRequestFlagCutThrough) != 0) {
      // Only a parent receiving this one piece forwards it: with several receives at once
      // (several parents, or several ranged GETs to the origin) each arrives at a fraction of
      // its link, and the child would be held to that fraction on this connection while
      // finished pieces wait behind it (docs/piece_protocol.md).
      // And to one child at a time: children that all follow the parent's freshest piece split
      // its uplink between copies of the same bytes, where one of them could pass it on to the
      // others while they fetch something else (on `racks`, a rack's children all followed
      // their entry peer).
      TaskStorage::ReceiveView r = task->CurrentReceive(PieceNumber{piece});
      if (r.state == TaskStorage::ReceiveView::kReceiving && task->ActiveReceives() == 1) {
        auto key = std::make_pair(task_id, piece);
        bool first;
        {
          std::lock_guard lock(forwarding_mu_);
          first = forwarding_.insert(key).second;
        }
        if (first) {
          Next next = ForwardPiece(fd, *task, piece, r.generation);
          std::lock_guard lock(forwarding_mu_);
          forwarding_.erase(key);
          return next;
        }
      }
      // Committed between the two looks: served whole below.
      if (task->PieceCrc(PieceNumber{piece}, &crc)) {
        PieceLayout layout = task->layout();
        PieceNumber n{piece};
        return SendPiece(fd, *task, piece, crc, layout.offset(n), layout.length(n))
                   ? Next::kContinue
                   : Next::kClose;
      }
    }
    PieceLayout layout = task->layout();
    bool known = layout.piece_length > 0 && task->meta().content_length >= 0;
    if (known && piece >= layout.total_pieces()) {
      return SendError(fd, static_cast<uint16_t>(pp::ErrorCode::kNotFound),
                       "piece " + std::to_string(piece) + " out of range");
    }
    return SendError(fd, static_cast<uint16_t>(pp::ErrorCode::kNotReady),
                     "piece " + std::to_string(piece) + " not ready");
  }
  PieceLayout layout = task->layout();  // known: the piece is finished
  PieceNumber n{piece};
  return SendPiece(fd, *task, piece, crc, layout.offset(n), layout.length(n)) ? Next::kContinue
                                                                              : Next::kClose;
}

bool PieceServer::SendPiece(int fd, const TaskStorage& task, uint32_t piece, uint32_t crc,
                            uint64_t offset, uint64_t length) {
  uint8_t frame[pp::kHeaderBytes + pp::kPieceBodyBytes];
  pp::EncodeHeader({.type = pp::FrameType::kPiece, .body_length = pp::kPieceBodyBytes}, frame);
  pp::EncodePieceHeader({piece, crc, offset, length}, frame + pp::kHeaderBytes);
  concurrent_uploads_.fetch_add(1, std::memory_order_relaxed);
  // MSG_MORE: the header rides in the first segment of the payload.
  bool ok = SendAll(fd, frame, sizeof frame, length > 0 ? MSG_MORE : 0) &&
            SendFileRange(fd, task.content_fd(), offset, length);
  concurrent_uploads_.fetch_sub(1, std::memory_order_relaxed);
  if (ok) {
    pieces_uploaded_.fetch_add(1, std::memory_order_relaxed);
  } else {
    upload_failures_.fetch_add(1, std::memory_order_relaxed);
    DF_LOG_DEBUG("upload of piece {} of task {} failed: {}", piece, task.task_id(),
                 std::strerror(errno));
  }
  return ok;
}

PieceServer::Next PieceServer::ForwardPiece(int fd, const TaskStorage& task, uint32_t piece,
                                            uint32_t generation) {
  using View = TaskStorage::ReceiveView;
  const PieceNumber n{piece};
  const PieceLayout layout = task.layout();  // known: a receive began
  const uint64_t offset = layout.offset(n);
  const uint64_t length = layout.length(n);
  const auto stall = std::chrono::milliseconds(options_.send_timeout_ms);
  // Waits (in short slices, so Stop() is never held up) for receive `generation` to move past
  // `have` bytes or end; gives up after `stall` without progress.
  auto wait = [&](uint64_t have) {
    const auto give_up =
        std::chrono::steady_clock::now() +
        (have == 0 ? std::min<std::chrono::milliseconds>(stall, kFirstByteWait) : stall);
    for (;;) {
      auto slice = std::min(give_up, std::chrono::steady_clock::now() + kStopPollInterval);
      View v = task.WaitReceive(n, generation, have, slice);
      bool moved = v.generation != generation || v.state != View::kReceiving || v.bytes > have;
      if (moved || stopping_.load(std::memory_order_relaxed) ||
          std::chrono::steady_clock::now() >= give_up) {
        return v;
      }
    }
  };
  auto committed_here = [&](const View& v) {
    return v.generation == generation && v.state == View::kCommitted;
  };
  // Nothing goes out until the first bytes are in: a receive that ends before is NOT_READY and
  // the connection stays usable.
  View v = wait(0);
  if (!committed_here(v) && (v.generation != generation || v.state != View::kReceiving ||
                             v.bytes == 0 || stopping_.load(std::memory_order_relaxed))) {
    return SendError(fd, static_cast<uint16_t>(pp::ErrorCode::kNotReady),
                     "piece " + std::to_string(piece) + " not ready");
  }
  uint8_t frame[pp::kHeaderBytes + pp::kPieceBodyBytes];
  pp::EncodeHeader({.type = pp::FrameType::kPiece,
                    .flags = pp::kPieceFlagCutThrough,
                    .body_length = pp::kPieceBodyBytes},
                   frame);
  pp::EncodePieceHeader({piece, 0, offset, length}, frame + pp::kHeaderBytes);
  concurrent_uploads_.fetch_add(1, std::memory_order_relaxed);
  bool ok = SendAll(fd, frame, sizeof frame, MSG_MORE);
  uint64_t sent = 0;
  while (ok) {
    if (!committed_here(v) && (v.generation != generation || v.state != View::kReceiving)) {
      // The receive here failed or was cut: what went out is void. Closing in the middle of the
      // payload tells the child so; it asks someone else without blaming this parent.
      forwards_abandoned_.fetch_add(1, std::memory_order_relaxed);
      ok = false;
      break;
    }
    uint64_t in_place = committed_here(v) ? length : std::min(v.bytes, length);
    if (in_place > sent) {
      ok = SendFileRange(fd, task.content_fd(), offset + sent, in_place - sent);
      sent = in_place;
      continue;  // look again before waiting: more may have landed meanwhile
    }
    if (committed_here(v) && sent == length) break;
    View next = wait(sent);
    if (next.generation == generation && next.state == View::kReceiving && next.bytes <= sent) {
      ok = false;  // stalled, or Stop()
      break;
    }
    v = next;
  }
  uint32_t crc = 0;
  if (ok) ok = task.PieceCrc(n, &crc);
  if (ok) {
    uint8_t end[pp::kHeaderBytes + pp::kPieceEndBodyBytes];
    pp::EncodeHeader({.type = pp::FrameType::kPieceEnd, .body_length = pp::kPieceEndBodyBytes},
                     end);
    pp::EncodePieceEnd({piece, crc}, end + pp::kHeaderBytes);
    ok = SendAll(fd, end, sizeof end, 0);
  }
  concurrent_uploads_.fetch_sub(1, std::memory_order_relaxed);
  if (ok) {
    pieces_uploaded_.fetch_add(1, std::memory_order_relaxed);
    pieces_forwarded_.fetch_add(1, std::memory_order_relaxed);
    return Next::kContinue;
  }
  upload_failures_.fetch_add(1, std::memory_order_relaxed);
  DF_LOG_DEBUG("forwarding piece {} of task {} ended after {} of {} bytes", piece, task.task_id(),
               sent, length);
  return Next::kClose;
}

bool PieceServer::SendFileRange(int sock, int file_fd, uint64_t offset, uint64_t length) {
  off_t pos = static_cast<off_t>(offset);
  while (length > 0) {
    uint64_t chunk = std::min(length, bucket_ ? kRateLimitedChunkBytes : kMaxSendfileBytes);
    if (bucket_ && !bucket_->Acquire(chunk, stopping_)) return false;
    ssize_t sent = ::sendfile(sock, file_fd, &pos, static_cast<size_t>(chunk));
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) return false;  // error, send timeout, or the file is shorter than recorded
    length -= static_cast<uint64_t>(sent);
    bytes_uploaded_.fetch_add(static_cast<uint64_t>(sent), std::memory_order_relaxed);
  }
  return true;
}

PieceServer::Next PieceServer::SendError(int fd, uint16_t code, const std::string& message) {
  std::string_view text(message.data(), std::min(message.size(), pp::kMaxErrorMessageBytes));
  uint8_t frame[pp::kHeaderBytes + pp::kErrorFixedBytes + pp::kMaxErrorMessageBytes];
  uint32_t body_length = static_cast<uint32_t>(pp::kErrorFixedBytes + text.size());
  pp::EncodeHeader({.type = pp::FrameType::kError, .body_length = body_length}, frame);
  pp::PutU16(frame + pp::kHeaderBytes, code);
  pp::PutU16(frame + pp::kHeaderBytes + 2, 0);
  std::memcpy(frame + pp::kHeaderBytes + pp::kErrorFixedBytes, text.data(), text.size());
  bool sent = SendAll(fd, frame, pp::kHeaderBytes + body_length, 0);
  if (sent && KeepsConnection(code)) return Next::kContinue;
  // BUSY is sent from the accept thread, which must not stall on one rejected child.
  if (sent) LingeringClose(fd, code == static_cast<uint16_t>(pp::ErrorCode::kBusy) ? 20 : 200);
  return Next::kClose;
}

}  // namespace df
