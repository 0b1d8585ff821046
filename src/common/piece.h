// Piece math: how a task's bytes are cut into pieces.
//
// A piece number is not a byte offset is not a count: PieceNumber is a strong type so that the
// compiler keeps them apart. Pieces are numbered from 0; every piece has `piece_length` bytes
// except the last, which has the remainder.
#pragma once

#include <cstdint>
#include <compare>

namespace df {

struct PieceNumber {
  uint32_t value = 0;
  auto operator<=>(const PieceNumber&) const = default;
};

constexpr uint64_t kMiB = 1024ull * 1024;
constexpr uint64_t kMinPieceLength = 1 * kMiB;
constexpr uint64_t kMaxPieceLength = 64 * kMiB;
constexpr uint64_t kTargetPieceCount = 500;

// The piece length rule: a power of two in [1 MiB, 64 MiB] close to content_length / 500
// (rounded to the nearest power of two). Unknown or small sizes get 1 MiB. The floor was 4 MiB
// until the swarm measurements of docs/benchmarks.md ("Piece length"): on `hetero`, 512 MiB in
// 1 MiB pieces finished in 79 s against 99 s in 4 MiB pieces (slow uplinks hold a piece 4x
// shorter), and `flat` did not get slower.
uint64_t ChoosePieceLength(int64_t content_length);

// True when `piece_length` is an accepted override: a power of two between 64 KiB and 1 GiB.
bool IsValidPieceLength(uint64_t piece_length);

// Geometry of one task: its size and piece length. Value type.
struct PieceLayout {
  uint64_t content_length = 0;
  uint64_t piece_length = kMinPieceLength;

  uint32_t total_pieces() const {
    return static_cast<uint32_t>((content_length + piece_length - 1) / piece_length);
  }
  uint64_t offset(PieceNumber n) const { return static_cast<uint64_t>(n.value) * piece_length; }
  // Bytes in piece `n` (the last piece may be short). Precondition: n < total_pieces().
  uint64_t length(PieceNumber n) const {
    uint64_t off = offset(n);
    return content_length - off < piece_length ? content_length - off : piece_length;
  }
};

}  // namespace df
