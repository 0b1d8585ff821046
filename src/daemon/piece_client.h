// PieceClient: the child side of the piece data protocol (docs/piece_protocol.md).
//
// One persistent TCP connection to one parent, opened lazily on the first request and reopened
// lazily after an error. Pieces go through a buffer owned by the client: each chunk is
// CRC32C-checked (and, when asked, hashed with SHA-256) while it is in cache, then pwrite()n.
//
// Thread-safety: none, except Interrupt(). One request at a time per client; keep a small pool of
// clients per parent for parallel fetches. Nothing outside the client must outlive it.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/fd.h"
#include "common/piece.h"
#include "common/status.h"

namespace df {

struct PieceClientOptions {
  int connect_timeout_ms = 5'000;
  // A read or write that makes no progress for this long fails with DeadlineExceeded.
  int read_timeout_ms = 30'000;
  // TCP congestion control of the socket ("" = system default).
  std::string congestion_control;
  // Size of the receive buffer (one recv/CRC/pwrite step). Small enough to stay in L2 between
  // the recv copy and the CRC/pwrite reads: 128 KiB measured ~30% faster than 1 MiB.
  size_t chunk_bytes = 128 * 1024;
  // SO_RCVBUF; 0 = kernel autotuning.
  int receive_buffer_bytes = 0;
  // Also compute the SHA-256 of each piece as it arrives (FetchedPiece::sha256), so that the
  // caller can verify it against the origin's digest without reading it back from the file.
  bool sha256 = false;
  // Ask for pieces with cut-through (docs/piece_protocol.md): a parent may forward a piece it
  // is still receiving; the client then checks the PIECE_END that follows it.
  bool accept_cut_through = false;
};

// Called after each chunk of a piece lands at its offset, with the bytes in place so far
// (counted from the piece's start).
using ReceiveProgress = std::function<void(uint64_t bytes_in_place)>;

// Outcome of one successful fetch. The bytes are already at their offset in the destination.
struct FetchedPiece {
  uint32_t crc32c = 0;         // computed over the received bytes
  uint32_t parent_crc32c = 0;  // announced by the parent (equal to crc32c on success)
  uint64_t length = 0;         // bytes received
  uint64_t cost_ns = 0;        // request sent .. last byte written
  bool cut_through = false;    // the parent forwarded it while still receiving it
  // SHA-256 of the received bytes, with PieceClientOptions::sha256.
  std::optional<std::array<uint8_t, 32>> sha256;
};

class PieceClient {
 public:
  PieceClient(std::string ip, uint16_t port, PieceClientOptions options = {});
  ~PieceClient();
  PieceClient(const PieceClient&) = delete;
  PieceClient& operator=(const PieceClient&) = delete;

  // Fetches piece `n` of `task_id` (64 lowercase hex chars) and writes it to `dest_fd` at
  // `expected_offset`. The parent's piece header must match `n`, `expected_offset` and
  // `expected_length`. Errors:
  //   NotFound          the parent lacks the task or the piece (yet); the connection stays open.
  //   DataLoss          the CRC32C of the received bytes differs from the parent's (the bytes were
  //                     written; the caller must not commit the piece).
  //   DeadlineExceeded  no progress for read_timeout_ms.
  //   Unavailable       cannot connect, or the connection closed/reset (after one retry when a
  //                     reused connection turned out to be stale), or the parent is busy.
  //   Aborted           a piece the parent was forwarding while still receiving it (cut-through)
  //                     was cut in the middle: the parent's own receive failed. The connection
  //                     is closed; the parent is not at fault.
  //   Internal          the parent broke the protocol (unexpected frame or piece header).
  //   NoSpace/IoError   writing to dest_fd failed.
  // Every error except NotFound and DataLoss closes the connection.
  Result<FetchedPiece> FetchPiece(const std::string& task_id, PieceNumber n,
                                  uint64_t expected_offset, uint64_t expected_length, int dest_fd);

  // Pipelining: SendRequest() queues a request on the connection (connecting first when needed);
  // the parent answers requests in order, so ReceivePiece() must be called for the pieces in the
  // order they were requested. Keeping one request queued behind the one being received leaves
  // no idle round trip between pieces and, unlike parallel connections, does not split the
  // parent's uplink between two half-speed transfers. Errors as FetchPiece; an error other than
  // NotFound or DataLoss drops every outstanding request with the connection.
  Status SendRequest(const std::string& task_id, PieceNumber n);
  // `progress` (optional) follows the bytes as they land.
  Result<FetchedPiece> ReceivePiece(PieceNumber n, uint64_t expected_offset,
                                    uint64_t expected_length, int dest_fd,
                                    const ReceiveProgress& progress = nullptr);
  // Requests sent and not yet answered.
  size_t outstanding() const { return outstanding_.size(); }

  // Sends PING and waits for PONG; returns the round-trip time in ns. Errors as FetchPiece.
  // Connects first when needed (the connect time is not counted).
  Result<uint64_t> Ping();

  // Closes the connection, dropping any outstanding requests (the next request reconnects).
  void Close() {
    SetFd(UniqueFd());
    outstanding_.clear();
  }
  // The one thread-safe method: shuts the connection down so that a request blocked on another
  // thread fails promptly (the receive returns Unavailable), and makes every later request fail
  // without connecting again (Cancelled). Bytes already received are written before the blocked
  // call returns; none after. For a caller that no longer wants what is arriving (endgame:
  // another copy of the piece won). The client is of no further use: destroy it.
  void Interrupt();
  bool connected() const { return static_cast<bool>(fd_); }
  // TCP connections opened so far.
  uint64_t connects() const { return connects_; }
  // Connections open now over every PieceClient of the process (the daemon's metrics).
  static int64_t open_connections();
  const std::string& ip() const { return ip_; }
  uint16_t port() const { return port_; }

 private:
  Status Connect();
  // Replaces (closing) the connection; under fd_mu_ so that Interrupt() never shuts down a
  // descriptor number that was closed and reused meanwhile.
  void SetFd(UniqueFd fd);
  // Sends `request` and reads the response's frame header into `response`; retries once on a
  // fresh connection when a reused one is found closed. `header` is kHeaderBytes long.
  Status Exchange(const uint8_t* request, size_t request_bytes, uint8_t* header);
  struct Outstanding {
    std::string task_id;
    uint32_t piece = 0;
    uint64_t sent_ns = 0;
  };
  void EncodeRequest(const Outstanding& o, uint8_t* out) const;
  // Reconnects and sends every outstanding request again (the old connection was stale).
  Status Resend();
  // Reads the body of an ERROR frame of `body_length` bytes and maps it to a Status.
  Status ReadErrorFrame(uint32_t body_length);
  // Receives `length` bytes of payload to `offset` of `dest_fd`: their CRC32C into `crc`, and
  // their SHA-256 into `sha` when it is not null.
  Status ReceivePayload(uint64_t offset, uint64_t length, int dest_fd, uint32_t* crc,
                        std::array<uint8_t, 32>* sha, const ReceiveProgress& progress);
  // Reads the PIECE_END that follows a cut-through piece `n`; its CRC32C into `crc`.
  Status ReadPieceEnd(PieceNumber n, uint32_t* crc);
  // Closes the connection and returns `s`, prefixed with the parent's address.
  Status Fail(const Status& s);
  std::string Where() const;

  const std::string ip_;
  const uint16_t port_;
  const PieceClientOptions options_;
  UniqueFd fd_;  // written by the owner under fd_mu_; read by the owner without it
  std::mutex fd_mu_;
  std::atomic<bool> interrupted_{false};
  std::unique_ptr<uint8_t[]> buffer_;  // chunk_bytes, allocated on first fetch
  uint64_t connects_ = 0;
  std::deque<Outstanding> outstanding_;  // in request order
  // The connection was reused after being idle and nothing was read on it since: a failure now
  // most likely means the parent closed it meanwhile, and is retried once on a new connection.
  bool stale_possible_ = false;
  uint64_t last_answer_end_ns_ = 0;
};

}  // namespace df
