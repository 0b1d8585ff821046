#include "common/piece.h"

#include <bit>

namespace df {

uint64_t ChoosePieceLength(int64_t content_length) {
  if (content_length <= 0) return kMinPieceLength;
  uint64_t target = static_cast<uint64_t>(content_length) / kTargetPieceCount;
  if (target <= kMinPieceLength) return kMinPieceLength;
  if (target >= kMaxPieceLength) return kMaxPieceLength;
  uint64_t lower = std::bit_floor(target);
  uint64_t upper = lower << 1;
  // Nearest power of two; ties go to the larger piece (fewer pieces, less overhead).
  return (target - lower < upper - target) ? lower : upper;
}

bool IsValidPieceLength(uint64_t piece_length) {
  return std::has_single_bit(piece_length) && piece_length >= 64 * 1024 &&
         piece_length <= 1024 * kMiB;
}

}  // namespace df
