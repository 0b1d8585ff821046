#include "daemon/piece_client.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/fd.h"
#include "common/net.h"
#include "daemon/piece_protocol.h"

namespace df {

namespace pp = piece_protocol;

namespace {

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

Status ProtocolViolation(const std::string& what) {
  return Internal("protocol violation: " + what);
}

Status ErrorFrameStatus(uint16_t code, const std::string& message) {
  switch (static_cast<pp::ErrorCode>(code)) {
    case pp::ErrorCode::kNotFound:
      return NotFound("NOT_FOUND: " + message);
    case pp::ErrorCode::kNotReady:
      return NotFound("NOT_READY: " + message);
    case pp::ErrorCode::kBusy:
      return Unavailable("BUSY: " + message);
    case pp::ErrorCode::kInternal:
      return Unavailable("INTERNAL: " + message);
    case pp::ErrorCode::kBadRequest:
      return Internal("BAD_REQUEST: " + message);
    case pp::ErrorCode::kUnsupportedVersion:
      return Internal("UNSUPPORTED_VERSION: " + message);
  }
  return ProtocolViolation("error code " + std::to_string(code) + ": " + message);
}

// Connections open over every client of the process; SetFd() keeps it.
std::atomic<int64_t> g_open_connections{0};

}  // namespace

PieceClient::PieceClient(std::string ip, uint16_t port, PieceClientOptions options)
    : ip_(std::move(ip)), port_(port), options_(std::move(options)) {}

PieceClient::~PieceClient() { SetFd(UniqueFd()); }

int64_t PieceClient::open_connections() {
  return g_open_connections.load(std::memory_order_relaxed);
}

std::string PieceClient::Where() const { return "parent " + ip_ + ":" + std::to_string(port_); }

void PieceClient::SetFd(UniqueFd fd) {
  std::lock_guard<std::mutex> l(fd_mu_);
  const int64_t opened = static_cast<int64_t>(static_cast<bool>(fd));
  g_open_connections.fetch_add(opened - static_cast<int64_t>(static_cast<bool>(fd_)),
                               std::memory_order_relaxed);
  fd_ = std::move(fd);
  if (fd_ && interrupted_.load()) ::shutdown(fd_.get(), SHUT_RDWR);
}

void PieceClient::Interrupt() {
  std::lock_guard<std::mutex> l(fd_mu_);
  interrupted_.store(true);
  if (fd_) ::shutdown(fd_.get(), SHUT_RDWR);
}

Status PieceClient::Fail(const Status& s) {
  SetFd(UniqueFd());
  outstanding_.clear();
  return Status(s.code(), Where() + ": " + s.message());
}

Status PieceClient::Connect() {
  if (interrupted_.load()) return Status(StatusCode::kCancelled, "interrupted");
  auto fd = ConnectTcp(ip_, port_, options_.connect_timeout_ms);
  if (!fd.ok()) return fd.status();
  SetFd(std::move(fd).value());
  ++connects_;
  SetSocketTimeouts(fd_.get(), options_.read_timeout_ms);
  if (!options_.congestion_control.empty())
    SetCongestionControl(fd_.get(), options_.congestion_control);
  if (options_.receive_buffer_bytes > 0) {
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &options_.receive_buffer_bytes,
                 sizeof options_.receive_buffer_bytes);
  }
  return Status::Ok();
}

Status PieceClient::Exchange(const uint8_t* request, size_t request_bytes, uint8_t* header) {
  for (int attempt = 0;; ++attempt) {
    bool reused = static_cast<bool>(fd_);
    if (!reused) {
      Status s = Connect();
      if (!s.ok()) return Fail(s);
    }
    Status s = WriteFull(fd_.get(), request, request_bytes);
    if (s.ok()) s = ReadFull(fd_.get(), header, pp::kHeaderBytes);
    if (s.ok()) return s;
    // A parent closes idle connections; the first request on a stale one fails at once.
    if (reused && attempt == 0 && s.code() == StatusCode::kUnavailable) {
      SetFd(UniqueFd());
      continue;
    }
    return Fail(s);
  }
}

void PieceClient::EncodeRequest(const Outstanding& o, uint8_t* out) const {
  pp::EncodeHeader({.type = pp::FrameType::kRequestPiece,
                    .flags = options_.accept_cut_through ? pp::kRequestFlagCutThrough : 0,
                    .body_length = pp::kRequestBodyBytes},
                   out);
  pp::EncodePieceRequest(o.task_id, o.piece, out + pp::kHeaderBytes);
}

Status PieceClient::SendRequest(const std::string& task_id, PieceNumber n) {
  if (!pp::IsWireTaskId(task_id)) {
    return InvalidArgument("task id '" + task_id + "' is not 64 lowercase hex characters");
  }
  if (!fd_) {
    Status s = Connect();
    if (!s.ok()) return Fail(s);
    stale_possible_ = false;
  } else if (outstanding_.empty()) {
    stale_possible_ = true;  // idle since the last answer: the parent may have closed it
  }
  outstanding_.push_back({task_id, n.value, NowNs()});
  uint8_t request[pp::kHeaderBytes + pp::kRequestBodyBytes];
  EncodeRequest(outstanding_.back(), request);
  Status s = WriteFull(fd_.get(), request, sizeof request);
  if (!s.ok() && stale_possible_ && s.code() == StatusCode::kUnavailable) s = Resend();
  return s.ok() ? s : Fail(s);
}

Status PieceClient::Resend() {
  stale_possible_ = false;
  SetFd(UniqueFd());
  DF_RETURN_IF_ERROR(Connect());
  for (auto& o : outstanding_) {
    uint8_t request[pp::kHeaderBytes + pp::kRequestBodyBytes];
    EncodeRequest(o, request);
    o.sent_ns = NowNs();
    DF_RETURN_IF_ERROR(WriteFull(fd_.get(), request, sizeof request));
  }
  return Status::Ok();
}

Status PieceClient::ReadErrorFrame(uint32_t body_length) {
  uint8_t body[pp::kErrorFixedBytes + pp::kMaxErrorMessageBytes];
  Status s = ReadFull(fd_.get(), body, body_length);
  if (!s.ok()) return Fail(s);
  uint16_t code = pp::GetU16(body);
  std::string message(reinterpret_cast<const char*>(body) + pp::kErrorFixedBytes,
                      body_length - pp::kErrorFixedBytes);
  Status mapped = ErrorFrameStatus(code, message);
  if (mapped.code() == StatusCode::kNotFound) {
    return Status(mapped.code(), Where() + ": " + mapped.message());  // connection stays usable
  }
  return Fail(mapped);
}

Result<FetchedPiece> PieceClient::FetchPiece(const std::string& task_id, PieceNumber n,
                                             uint64_t expected_offset, uint64_t expected_length,
                                             int dest_fd) {
  if (!outstanding_.empty()) {
    return Internal("FetchPiece with " + std::to_string(outstanding_.size()) +
                    " pipelined requests outstanding");
  }
  DF_RETURN_IF_ERROR(SendRequest(task_id, n));
  return ReceivePiece(n, expected_offset, expected_length, dest_fd);
}

Result<FetchedPiece> PieceClient::ReceivePiece(PieceNumber n, uint64_t expected_offset,
                                               uint64_t expected_length, int dest_fd,
                                               const ReceiveProgress& progress) {
  if (outstanding_.empty() || outstanding_.front().piece != n.value) {
    return Internal("piece " + std::to_string(n.value) + " is not the next answer expected from " +
                    Where());
  }
  uint8_t header_bytes[pp::kHeaderBytes];
  // Outstanding requests imply a connection: Fail() and Close() drop both together.
  Status s = ReadFull(fd_.get(), header_bytes, pp::kHeaderBytes);
  // A parent closes idle connections; the first answer on a reused one then fails at once.
  if (!s.ok() && stale_possible_ && s.code() == StatusCode::kUnavailable) {
    s = Resend();
    if (s.ok()) s = ReadFull(fd_.get(), header_bytes, pp::kHeaderBytes);
  }
  stale_possible_ = false;
  if (!s.ok()) return Fail(s);
  // The link carried this piece from when it was asked for or when the previous answer ended,
  // whichever is later: queueing behind the previous answer is not part of its cost.
  uint64_t start_ns = std::max(outstanding_.front().sent_ns, last_answer_end_ns_);
  outstanding_.pop_front();
  pp::FrameHeader h = pp::DecodeHeader(header_bytes);
  if (h.magic != pp::kMagic || h.version != pp::kVersion ||
      !pp::BodyLengthValid(h.type, h.body_length)) {
    return Fail(ProtocolViolation("malformed frame header"));
  }
  if (h.type == pp::FrameType::kError) {
    Status e = ReadErrorFrame(h.body_length);
    last_answer_end_ns_ = NowNs();
    return e;
  }
  if (h.type != pp::FrameType::kPiece) {
    return Fail(ProtocolViolation("frame type " + std::to_string(static_cast<int>(h.type)) +
                                  " in answer to a piece request"));
  }
  uint8_t body[pp::kPieceBodyBytes];
  s = ReadFull(fd_.get(), body, sizeof body);
  if (!s.ok()) return Fail(s);
  pp::PieceHeader piece = pp::DecodePieceHeader(body);
  if (piece.piece_number != n.value || piece.offset != expected_offset ||
      piece.length != expected_length) {
    return Fail(ProtocolViolation(
        "piece " + std::to_string(piece.piece_number) + " offset " + std::to_string(piece.offset) +
        " length " + std::to_string(piece.length) + ", expected piece " + std::to_string(n.value) +
        " offset " + std::to_string(expected_offset) + " length " +
        std::to_string(expected_length)));
  }
  FetchedPiece out;
  out.cut_through = (h.flags & pp::kPieceFlagCutThrough) != 0;
  if (out.cut_through && (!options_.accept_cut_through || piece.crc32c != 0)) {
    return Fail(ProtocolViolation("cut-through piece not asked for, or with a CRC32C"));
  }
  std::array<uint8_t, 32> sha{};
  Status received = ReceivePayload(piece.offset, piece.length, dest_fd, &out.crc32c,
                                   options_.sha256 ? &sha : nullptr, progress);
  if (!received.ok()) {
    // A forwarded piece cut in the middle: the parent's own receive of it failed.
    if (out.cut_through && received.code() == StatusCode::kUnavailable) {
      return Status(StatusCode::kAborted, received.message());
    }
    return received;
  }
  out.parent_crc32c = piece.crc32c;
  if (out.cut_through) DF_RETURN_IF_ERROR(ReadPieceEnd(n, &out.parent_crc32c));
  last_answer_end_ns_ = NowNs();
  out.length = piece.length;
  out.cost_ns = last_answer_end_ns_ - start_ns;
  if (out.crc32c != out.parent_crc32c) {
    return DataLoss(Where() + ": piece " + std::to_string(n.value) + " CRC32C mismatch");
  }
  if (options_.sha256) out.sha256 = sha;
  return out;
}

Status PieceClient::ReadPieceEnd(PieceNumber n, uint32_t* crc) {
  uint8_t frame[pp::kHeaderBytes + pp::kPieceEndBodyBytes];
  Status s = ReadFull(fd_.get(), frame, sizeof frame);
  if (!s.ok()) {
    // The payload is all here but the parent never confirmed it: it may have failed to verify
    // its own copy. Not the parent's fault, like a cut in the middle.
    return Fail(s.code() == StatusCode::kUnavailable ? Status(StatusCode::kAborted, s.message())
                                                     : s);
  }
  pp::FrameHeader h = pp::DecodeHeader(frame);
  if (h.magic != pp::kMagic || h.version != pp::kVersion || h.type != pp::FrameType::kPieceEnd ||
      h.body_length != pp::kPieceEndBodyBytes) {
    return Fail(ProtocolViolation("expected PIECE_END after a cut-through piece"));
  }
  pp::PieceEnd end = pp::DecodePieceEnd(frame + pp::kHeaderBytes);
  if (end.piece_number != n.value) {
    return Fail(ProtocolViolation("PIECE_END for piece " + std::to_string(end.piece_number) +
                                  ", expected " + std::to_string(n.value)));
  }
  *crc = end.crc32c;
  return Status::Ok();
}

Status PieceClient::ReceivePayload(uint64_t offset, uint64_t length, int dest_fd, uint32_t* crc,
                                   std::array<uint8_t, 32>* sha, const ReceiveProgress& progress) {
  // recv into a buffer small enough to stay in cache while it is checked and written. (Receiving
  // straight into a shared mapping of the file, one copy less, was measured slower on tmpfs as
  // well as on ext4: allocating the pages with MADV_POPULATE_WRITE and unmapping them cost twice
  // the copy it saved. docs/piece_protocol.md.)
  if (!buffer_) buffer_ = std::make_unique_for_overwrite<uint8_t[]>(options_.chunk_bytes);
  std::optional<Sha256> digest;
  if (sha) digest.emplace();
  uint32_t c = 0;
  uint64_t done = 0;
  while (done < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length - done, options_.chunk_bytes));
    uint8_t* dst = buffer_.get();
    // MSG_WAITALL fills the chunk in one call in the common case: fewer CRC/pwrite calls.
    ssize_t r = ::recv(fd_.get(), dst, want, MSG_WAITALL);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Fail(Unavailable("connection closed in the middle of a piece"));
    if (r < 0) {
      bool timeout = errno == EAGAIN || errno == EWOULDBLOCK;
      return Fail(timeout ? Status(StatusCode::kDeadlineExceeded, "read timed out")
                          : Unavailable(std::string("read: ") + std::strerror(errno)));
    }
    c = Crc32cExtend(c, dst, static_cast<size_t>(r));
    if (digest) digest->Update(dst, static_cast<size_t>(r));
    Status s = WriteAllAt(dest_fd, dst, static_cast<size_t>(r), offset + done, "write piece");
    if (!s.ok()) return Fail(s);  // the rest of the payload is unread: drop the connection
    done += static_cast<uint64_t>(r);
    if (progress) progress(done);
  }
  *crc = c;
  if (digest) *sha = digest->FinalBytes();
  return Status::Ok();
}

Result<uint64_t> PieceClient::Ping() {
  if (!outstanding_.empty()) return Internal("Ping with pipelined piece requests outstanding");
  if (!fd_) {
    Status s = Connect();
    if (!s.ok()) return Fail(s);
  }
  uint64_t nonce = NowNs();
  uint8_t request[pp::kHeaderBytes + pp::kPingBodyBytes];
  pp::EncodeHeader({.type = pp::FrameType::kPing, .body_length = pp::kPingBodyBytes}, request);
  pp::PutU64(request + pp::kHeaderBytes, nonce);
  uint8_t header_bytes[pp::kHeaderBytes];
  DF_RETURN_IF_ERROR(Exchange(request, sizeof request, header_bytes));
  pp::FrameHeader h = pp::DecodeHeader(header_bytes);
  if (h.magic != pp::kMagic || h.version != pp::kVersion ||
      !pp::BodyLengthValid(h.type, h.body_length)) {
    return Fail(ProtocolViolation("malformed frame header"));
  }
  if (h.type == pp::FrameType::kError) return ReadErrorFrame(h.body_length);
  if (h.type != pp::FrameType::kPong) return Fail(ProtocolViolation("expected PONG"));
  uint8_t body[pp::kPingBodyBytes];
  Status s = ReadFull(fd_.get(), body, sizeof body);
  if (!s.ok()) return Fail(s);
  if (pp::GetU64(body) != nonce) return Fail(ProtocolViolation("PONG nonce mismatch"));
  return NowNs() - nonce;
}

}  // namespace df
