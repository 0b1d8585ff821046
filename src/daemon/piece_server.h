// PieceServer: the parent side of the piece data protocol (docs/piece_protocol.md).
//
// Serves finished pieces of local tasks to children over persistent TCP connections, straight
// from the task's content file with sendfile(2). One thread per connection, at most
// `max_connections` at a time. A connection slot is a resource strangers can try to hold, so:
//   - a new connection must send its first complete frame within `request_timeout_ms`, and any
//     frame must be complete within `request_timeout_ms` of its first byte (half-open and
//     1 byte/s connections are closed, whatever the idle timeout);
//   - at `max_connections`, a new connection closes the connection that has gone longest without
//     completing a frame, if that is at least `evict_idle_ms` and it is not sending an answer;
//     only when there is none is the newcomer answered ERROR BUSY and closed.
//
// Thread-safety: Start()/Stop() from one owner thread; counters may be read from any thread.
// The TaskLookup function is called from connection threads concurrently and must be
// thread-safe; the TaskStorage it returns is kept only for the duration of one request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/fd.h"
#include "common/status.h"
#include "storage/piece_store.h"

namespace df {

struct PieceServerOptions {
  std::string ip = "0.0.0.0";
  uint16_t port = 4005;  // 0 = any free port (see PieceServer::port())
  int max_connections = 256;
  // TCP congestion control of every accepted socket ("" = system default). Under tbf shaping
  // cubic keeps 0.955x of the shaped rate, bbr 0.93x.
  std::string congestion_control = "cubic";
  // Upload rate limit shared by all connections, bytes per second; 0 = unlimited.
  uint64_t upload_rate_bytes_per_sec = 0;
  // A connection with no request for this long is closed.
  int idle_timeout_ms = 120'000;
  // A frame must arrive whole within this of its first byte, and a new connection's first frame
  // within this of the accept.
  int request_timeout_ms = 10'000;
  // At max_connections, a connection without a complete frame for this long (and not sending
  // an answer) is closed to admit the new one.
  int evict_idle_ms = 1'000;
  // A send that makes no progress for this long fails the upload and closes the connection.
  int send_timeout_ms = 30'000;
  // SO_SNDBUF of accepted sockets; 0 = kernel autotuning.
  int send_buffer_bytes = 0;
  // Forward a piece that is still arriving here to a child that asks for it with cut-through
  // (docs/piece_protocol.md). A forwarded piece whose own receive makes no progress for
  // send_timeout_ms closes the connection.
  bool cut_through = true;
};

// Returns the storage of a task the peer has, or nullptr.
using TaskLookup = std::function<std::shared_ptr<TaskStorage>(const std::string& task_id)>;

class TokenBucket;

class PieceServer {
 public:
  PieceServer(PieceServerOptions options, TaskLookup lookup);
  // Stops the server (see Stop()).
  ~PieceServer();
  PieceServer(const PieceServer&) = delete;
  PieceServer& operator=(const PieceServer&) = delete;

  // Binds, listens and starts the accept thread. Unavailable when the address is taken,
  // InvalidArgument for a bad ip. Call once.
  Status Start();
  // Closes the listener and every connection (in-flight uploads are cut) and joins all threads.
  // Returns promptly (no wait for idle timeouts). Idempotent.
  void Stop();

  // The bound port (useful with port 0); valid after Start() succeeded.
  uint16_t port() const { return port_; }

  // Counters since Start(). Monotonic except the two "current" gauges.
  uint64_t bytes_uploaded() const { return bytes_uploaded_.load(std::memory_order_relaxed); }
  uint64_t pieces_uploaded() const { return pieces_uploaded_.load(std::memory_order_relaxed); }
  // Well-formed piece requests received (answered or not).
  uint64_t pieces_requested() const { return pieces_requested_.load(std::memory_order_relaxed); }
  // Uploads that started sending a piece and did not finish it.
  uint64_t upload_failures() const { return upload_failures_.load(std::memory_order_relaxed); }
  // Pieces forwarded while still arriving here (cut-through), and those of them cut because
  // the receive here failed.
  uint64_t pieces_forwarded() const { return pieces_forwarded_.load(std::memory_order_relaxed); }
  uint64_t forwards_abandoned() const {
    return forwards_abandoned_.load(std::memory_order_relaxed);
  }
  // Pieces being sent right now.
  int concurrent_uploads() const { return concurrent_uploads_.load(std::memory_order_relaxed); }
  uint64_t accepted_connections() const {
    return accepted_connections_.load(std::memory_order_relaxed);
  }
  int active_connections() const { return active_connections_.load(std::memory_order_relaxed); }
  // Connections closed because of a malformed frame.
  uint64_t protocol_errors() const { return protocol_errors_.load(std::memory_order_relaxed); }
  // Connections closed because a frame (or the first one) did not arrive in request_timeout_ms.
  uint64_t request_timeouts() const { return request_timeouts_.load(std::memory_order_relaxed); }
  // Idle connections closed to admit a new one at max_connections.
  uint64_t evicted_connections() const {
    return evicted_connections_.load(std::memory_order_relaxed);
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Connection {
    // Used by the connection thread; closed by it under mu_ as its last step.
    UniqueFd fd;
    std::thread thread;
    bool finished = false;  // GUARDED_BY(PieceServer::mu_)
    bool evicted = false;   // GUARDED_BY(PieceServer::mu_): shut down to admit another
    // Written by the connection thread, read by the accept thread (eviction).
    std::atomic<Clock::rep> last_frame{0};  // accept or last complete frame (Clock ticks)
    std::atomic<bool> answering{false};     // sending an answer (a piece) right now
    bool had_frame = false;                 // connection thread only
  };
  // What a handler tells the connection loop to do next.
  enum class Next { kContinue, kClose };

  void AcceptLoop();
  void Admit(UniqueFd fd);
  void ReapFinishedLocked();  // EXCLUSIVE_LOCKS_REQUIRED(mu_)
  // Shuts down the connection idle longest (see the class comment); false when none qualifies.
  bool EvictIdleLocked();  // EXCLUSIVE_LOCKS_REQUIRED(mu_)
  void ConfigureSocket(int fd) const;
  void ServeConnection(Connection* conn);
  // Reads `n` bytes by `deadline`. False when the connection must close (EOF, reset, Stop(),
  // deadline); a missed deadline counts as a request timeout when `frame_deadline`.
  bool ReceiveBy(int fd, uint8_t* buf, size_t n, Clock::time_point deadline, bool frame_deadline);
  Next HandleFrame(Connection* conn);
  Next HandleRequestPiece(int fd, uint32_t flags, const uint8_t* body);
  Next HandlePing(int fd, const uint8_t* body);
  // Sends `length` bytes of `task` at `offset` after the PIECE header. False when the upload
  // broke in the middle (the connection must close).
  bool SendPiece(int fd, const TaskStorage& task, uint32_t piece, uint32_t crc, uint64_t offset,
                 uint64_t length);
  bool SendFileRange(int sock, int file_fd, uint64_t offset, uint64_t length);
  // Cut-through: forwards piece `piece` of `task` while it is being received here (receive
  // `generation`), then PIECE_END once it committed. kContinue after a whole piece; kClose when
  // the receive was abandoned or stalled after the header went out, or the upload broke.
  // NOT_READY (connection kept) when the receive ends before its first byte was forwarded.
  Next ForwardPiece(int fd, const TaskStorage& task, uint32_t piece, uint32_t generation);
  // Sends an ERROR frame (best effort) and returns what the code implies for the connection.
  Next SendError(int fd, uint16_t code, const std::string& message);

  const PieceServerOptions options_;
  const TaskLookup lookup_;
  std::unique_ptr<TokenBucket> bucket_;  // null when unlimited
  UniqueFd listen_fd_;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;
  std::list<std::unique_ptr<Connection>> connections_;  // GUARDED_BY(mu_)
  // Pieces being forwarded while they arrive, as (task id, piece): each to one child at a time.
  std::mutex forwarding_mu_;
  std::set<std::pair<std::string, uint32_t>> forwarding_;  // GUARDED_BY(forwarding_mu_)

  std::atomic<uint64_t> bytes_uploaded_{0};
  std::atomic<uint64_t> pieces_uploaded_{0};
  std::atomic<uint64_t> pieces_requested_{0};
  std::atomic<uint64_t> upload_failures_{0};
  std::atomic<uint64_t> pieces_forwarded_{0};
  std::atomic<uint64_t> forwards_abandoned_{0};
  std::atomic<int> concurrent_uploads_{0};
  std::atomic<uint64_t> accepted_connections_{0};
  std::atomic<int> active_connections_{0};
  std::atomic<uint64_t> protocol_errors_{0};
  std::atomic<uint64_t> request_timeouts_{0};
  std::atomic<uint64_t> evicted_connections_{0};
};

}  // namespace df
