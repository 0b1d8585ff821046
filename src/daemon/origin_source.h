// OriginSource: the pieces of one task fetched from its origin (back to source).
//
// It knows the URL, the client's headers and the backend; it writes a piece's bytes at their
// offset in the content file as they arrive (so that the piece server can forward them
// cut-through while the receive is open) and returns the piece's CRC32C and SHA-256, the
// digest children verify the piece against. What to do with the piece (commit, report, count)
// is the caller's: it owns the task's state.
//
// Thread-safe: every method may run on several workers at once (one piece each).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "backend/backend.h"
#include "common/piece.h"
#include "common/status.h"
#include "storage/piece_store.h"

namespace df {

// The sha256 of one piece; all zeros = unknown.
using PieceDigest = std::array<uint8_t, 32>;

// The checksums of a piece as received.
struct PieceChecksums {
  uint32_t crc32c = 0;
  PieceDigest sha256{};
};

class OriginSource {
 public:
  // The origin may be briefly overloaded (503, 429, timeouts): Stat tries this many times.
  static constexpr int kStatAttempts = 4;

  // `backends` outlives the source. `timeout_ms` bounds each request without progress.
  OriginSource(BackendRegistry* backends, std::string url,
               std::map<std::string, std::string> headers, int64_t timeout_ms);

  // True while the task goes on; false stops a transfer with Cancelled.
  using KeepGoing = std::function<bool()>;
  // Waits `d` unless the task stops first; false when it stopped.
  using Backoff = std::function<bool(std::chrono::milliseconds d)>;

  // The object's size and range support, retried with backoff (0.5, 1, 2 s through `backoff`)
  // while the origin answers Unavailable or DeadlineExceeded. An origin that gives no size is an
  // error (chunked bodies are not supported).
  Result<ObjectInfo> Stat(const Backoff& backoff) const;

  // Fetches piece `n` of `layout` with one ranged GET into `fd` at its offset, advancing the
  // receive of `storage` (BeginReceive first; the caller ends or abandons it).
  Status FetchPiece(const PieceLayout& layout, PieceNumber n, int fd, TaskStorage* storage,
                    const KeepGoing& keep_going, PieceChecksums* out) const;

  // For origins without range support: one GET streams the whole object into `fd`; `on_piece`
  // is called as each piece's last byte is written, in order (its error stops the stream).
  // DataLoss when the body is shorter than the layout.
  using OnPiece = std::function<Status(PieceNumber n, const PieceChecksums& sums)>;
  Status StreamWhole(const PieceLayout& layout, int fd, const KeepGoing& keep_going,
                     const OnPiece& on_piece) const;

 private:
  Result<Backend*> BackendFor() const;

  BackendRegistry* const backends_;
  const std::string url_;
  const std::map<std::string, std::string> headers_;
  const int64_t timeout_ms_;
};

}  // namespace df
