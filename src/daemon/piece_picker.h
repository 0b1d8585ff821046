// PiecePicker: which piece a download asks for next, and from which parent. Pure: no locks, no
// I/O, no clock; the caller tells it what changes and asks it for picks.
//
// It owns the state of every piece of one task (missing, in flight, done) and what every parent
// holds: the pieces it has finished and the pieces it is still receiving (cut-through). A parent
// *holds* a piece when it has it finished, or, with cut-through on, when it is receiving it. A
// parent is usable unless the caller said otherwise (dead, or taken away by the scheduler); an
// unusable parent keeps its availability but counts for nothing until it is usable again.
//
// The rule of a pick (PickPiece), among the missing pieces that a candidate parent holds:
//   1. a piece some candidate holds finished goes before a piece candidates are only receiving
//      (a finished piece comes at the full rate of the parent's uplink, a received one only as
//      fast as the parent's own source sends it);
//   2. then the rarest: the fewest usable parents holding it (candidates or not);
//   3. then the lowest piece number (a chain of peers forwards pieces in order, one hop per
//      piece time, rather than leaving each in a random backlog), or, with a `spread_start`,
//      the first at or after that piece, wrapping around: children of one parent that start at
//      different pieces ask it for different pieces, so what it uploads spreads over them
//      instead of reaching them all in the same order.
// The parent for that piece is, among the candidates holding it, one holding it finished over
// one only receiving it, then the lowest cost (inflight + 1) / rate, then the earliest in the
// order the caller listed the candidates.
//
// Complexity. With N pieces, W = N/64 bitset words and P parents:
//   - SetHas, SetReceiving, Forget, SetState: O(1) (a piece moves between two count buckets).
//   - SetUsable: O(W + pieces the parent holds); AddParent: O(W); Reset: O(P * W).
//   - PickPiece with L loads of which C are candidates: O(L + (C + B) * W), B being the number
//     of distinct holder counts among missing pieces (B <= P); no work per piece and parent.
//     It ORs what the candidates hold into one bitset, then walks the count buckets from the
//     rarest, word by word, and stops at the first hit.
//   - FirstMissing: O(W); MissingFinishedHeldBy: O(W).
//
// Not thread-safe: the caller serialises every call (PeerTask does so under its mutex).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "common/piece.h"

namespace df {

enum class PieceState : uint8_t { kMissing, kInFlight, kDone };

// A parent as the picker knows it: handed out by AddParent, valid for the picker's life.
struct ParentIndex {
  uint32_t value = 0;
  auto operator<=>(const ParentIndex&) const = default;
};

// A fixed-size set of piece numbers stored as 64-bit words (bit i of word i / 64).
class PieceBitset {
 public:
  void Reset(uint32_t size);  // `size` bits, all clear
  uint32_t size() const { return size_; }
  bool Test(uint32_t i) const { return i < size_ && (words_[i / 64] >> (i % 64)) & 1; }
  void Set(uint32_t i) { words_[i / 64] |= uint64_t{1} << (i % 64); }  // precondition: i < size
  void Clear(uint32_t i) { words_[i / 64] &= ~(uint64_t{1} << (i % 64)); }
  const std::vector<uint64_t>& words() const { return words_; }
  std::vector<uint64_t>& words() { return words_; }

 private:
  uint32_t size_ = 0;
  std::vector<uint64_t> words_;
};

class PiecePicker {
 public:
  struct Options {
    bool cut_through = false;             // a piece a parent is receiving can be asked for
    uint32_t per_parent_concurrency = 1;  // connections to one parent at most
    // Rule 3's tie-break starts at piece spread_start % total_pieces (0: the lowest number).
    uint64_t spread_start = 0;
  };
  // How busy a parent is right now; the caller fills these afresh for every pick.
  struct ParentLoad {
    ParentIndex parent;
    uint32_t connections = 0;       // workers talking to it
    uint32_t inflight = 0;          // pieces asked of it and not answered yet
    double rate_bytes_per_sec = 0;  // measured; 0: not measured yet (kUnknownRateBytesPerSec)
  };
  struct Pick {
    PieceNumber piece;
    ParentIndex parent;
    bool finished = false;  // the parent has it finished (else it is still receiving it)
  };

  // The cost prior of a parent whose rate was not measured yet.
  static constexpr double kUnknownRateBytesPerSec = 50e6;

  explicit PiecePicker(Options options);

  // The task has `total_pieces` pieces, all missing; every parent (kept, with its usability)
  // holds nothing. Call once the layout is known; before that the task has no pieces.
  void Reset(uint32_t total_pieces);
  uint32_t total_pieces() const { return static_cast<uint32_t>(state_.size()); }

  // Precondition for every PieceNumber argument below, unless said otherwise: < total_pieces().
  PieceState state(PieceNumber piece) const { return state_[piece.value]; }
  void SetState(PieceNumber piece, PieceState state);
  uint32_t missing_count() const { return missing_count_; }
  // The lowest missing piece; nullopt when none is.
  std::optional<PieceNumber> FirstMissing() const;

  // A new parent: usable, holding nothing.
  ParentIndex AddParent();
  // An unusable parent is no candidate and counts as holder of nothing; its availability stays.
  void SetUsable(ParentIndex parent, bool usable);
  bool usable(ParentIndex parent) const { return parents_[parent.value].usable; }

  // Availability. A piece number out of range is ignored (false). SetHas and SetReceiving
  // return true when `parent` now holds a missing piece it did not hold before (one more
  // piece a worker may fetch from it). SetReceiving does nothing for a piece it has finished.
  bool SetHas(ParentIndex parent, PieceNumber piece);
  bool SetReceiving(ParentIndex parent, PieceNumber piece);
  // It no longer has the piece nor is receiving it (it said NOT_FOUND for a piece it had).
  void Forget(ParentIndex parent, PieceNumber piece);
  // It is not (or no longer) forwarding the piece it is receiving (NOT_READY to a cut-through
  // request, or its receive failed); whether it has the piece finished is left as it is: the
  // availability stream may have said so while the answer was on its way.
  void StopReceiving(ParentIndex parent, PieceNumber piece);
  bool has(ParentIndex parent, PieceNumber piece) const;
  bool receiving(ParentIndex parent, PieceNumber piece) const;
  bool holds(ParentIndex parent, PieceNumber piece) const;
  // Usable parents that hold `piece` (the rarity PickPiece sorts by).
  uint32_t holders(PieceNumber piece) const { return holders_[piece.value]; }
  // How many missing pieces `parent` has finished (whether usable or not).
  uint32_t MissingFinishedHeldBy(ParentIndex parent) const;

  // The next piece to fetch and its parent, by the rule at the top of this file; nullopt when
  // no candidate holds a missing piece. Candidates: the usable parents in `loads` that have a
  // free connection (connections < per_parent_concurrency), or, with `only`, just `only`
  // when usable and in `loads`, whatever its connections (the caller queues on a connection it
  // has open). `loads` may leave parents out (they are no candidates; they still count as
  // holders); its order breaks cost ties.
  std::optional<Pick> PickPiece(std::span<const ParentLoad> loads,
                                std::optional<ParentIndex> only = std::nullopt);

 private:
  // Clears what `parent` is receiving of `piece`, and what it has finished unless
  // `keep_finished`; updates the holder count.
  void ClearAvailability(ParentIndex parent, PieceNumber piece, bool keep_finished);
  struct ParentState {
    PieceBitset has;        // finished
    PieceBitset receiving;  // being received (never set together with `has` by SetReceiving)
    bool usable = true;
  };
  struct Candidate {
    ParentIndex parent;
    double cost;
  };

  bool HoldsBit(const ParentState& p, uint32_t piece) const;
  // Keeps buckets_ in step: a piece is listed in buckets_[holders] while it is missing and
  // held by at least one usable parent. Unlist before a change of either, List after it.
  void Unlist(uint32_t piece);
  void List(uint32_t piece);
  void AddHolder(uint32_t piece, int delta);
  // The rarest missing piece in `held`, the first from start_ on; nullopt when none.
  std::optional<uint32_t> RarestIn(const PieceBitset& held) const;
  // The candidate for `piece`: finished over receiving, then cost, then order.
  std::optional<Pick> ChooseParent(uint32_t piece) const;

  const Options options_;
  uint32_t start_ = 0;             // where rule 3 starts: spread_start % total_pieces
  std::vector<PieceState> state_;  // by piece
  PieceBitset missing_;            // by piece: state_ == kMissing
  uint32_t missing_count_ = 0;
  std::vector<uint32_t> holders_;     // by piece: usable parents that hold it
  std::vector<ParentState> parents_;  // by ParentIndex
  // buckets_[c]: the missing pieces c usable parents hold (c >= 1; [0] stays empty);
  // bucket_sizes_[c]: how many, so that empty buckets cost nothing.
  std::vector<PieceBitset> buckets_;
  std::vector<uint32_t> bucket_sizes_;
  // Scratch space of PickPiece, kept to allocate nothing per pick.
  std::vector<Candidate> candidates_;
  PieceBitset held_finished_;
  PieceBitset held_receiving_;
};

}  // namespace df
