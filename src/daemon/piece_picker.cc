#include "daemon/piece_picker.h"

#include <algorithm>
#include <bit>

namespace df {

void PieceBitset::Reset(uint32_t size) {
  size_ = size;
  words_.assign((size + 63) / 64, 0);
}

PiecePicker::PiecePicker(Options options) : options_(options), buckets_(1), bucket_sizes_(1, 0) {}

void PiecePicker::Reset(uint32_t total_pieces) {
  start_ = total_pieces == 0 ? 0 : static_cast<uint32_t>(options_.spread_start % total_pieces);
  state_.assign(total_pieces, PieceState::kMissing);
  missing_.Reset(total_pieces);
  for (uint32_t i = 0; i < total_pieces; ++i) missing_.Set(i);
  missing_count_ = total_pieces;
  holders_.assign(total_pieces, 0);
  for (ParentState& p : parents_) {
    p.has.Reset(total_pieces);
    p.receiving.Reset(total_pieces);
  }
  for (PieceBitset& b : buckets_) b.Reset(total_pieces);
  std::fill(bucket_sizes_.begin(), bucket_sizes_.end(), 0);
  held_finished_.Reset(total_pieces);
  held_receiving_.Reset(total_pieces);
}

void PiecePicker::SetState(PieceNumber piece, PieceState state) {
  const uint32_t i = piece.value;
  if (state_[i] == state) return;
  Unlist(i);
  if (state_[i] == PieceState::kMissing) {
    missing_.Clear(i);
    --missing_count_;
  } else if (state == PieceState::kMissing) {
    missing_.Set(i);
    ++missing_count_;
  }
  state_[i] = state;
  List(i);
}

std::optional<PieceNumber> PiecePicker::FirstMissing() const {
  const auto& words = missing_.words();
  for (size_t w = 0; w < words.size(); ++w) {
    if (words[w] != 0) {
      return PieceNumber{static_cast<uint32_t>(w * 64 + std::countr_zero(words[w]))};
    }
  }
  return std::nullopt;
}

ParentIndex PiecePicker::AddParent() {
  ParentState p;
  p.has.Reset(total_pieces());
  p.receiving.Reset(total_pieces());
  parents_.push_back(std::move(p));
  // One parent more: a piece can now have one holder more.
  buckets_.emplace_back().Reset(total_pieces());
  bucket_sizes_.push_back(0);
  return ParentIndex{static_cast<uint32_t>(parents_.size() - 1)};
}

void PiecePicker::SetUsable(ParentIndex parent, bool usable) {
  ParentState& p = parents_[parent.value];
  if (p.usable == usable) return;
  p.usable = usable;
  const int delta = usable ? 1 : -1;
  const auto& has = p.has.words();
  const auto& receiving = p.receiving.words();
  for (size_t w = 0; w < has.size(); ++w) {
    uint64_t held = has[w] | (options_.cut_through ? receiving[w] : 0);
    for (; held != 0; held &= held - 1) {
      AddHolder(static_cast<uint32_t>(w * 64 + std::countr_zero(held)), delta);
    }
  }
}

bool PiecePicker::SetHas(ParentIndex parent, PieceNumber piece) {
  const uint32_t i = piece.value;
  ParentState& p = parents_[parent.value];
  if (i >= total_pieces() || p.has.Test(i)) return false;
  const bool held = HoldsBit(p, i);
  p.has.Set(i);
  if (held) return false;
  if (p.usable) AddHolder(i, 1);
  return state_[i] == PieceState::kMissing;
}

bool PiecePicker::SetReceiving(ParentIndex parent, PieceNumber piece) {
  const uint32_t i = piece.value;
  ParentState& p = parents_[parent.value];
  if (i >= total_pieces() || p.has.Test(i) || p.receiving.Test(i)) return false;
  p.receiving.Set(i);
  if (!options_.cut_through) return false;
  if (p.usable) AddHolder(i, 1);
  return state_[i] == PieceState::kMissing;
}

void PiecePicker::Forget(ParentIndex parent, PieceNumber piece) {
  ClearAvailability(parent, piece, /*keep_finished=*/false);
}

void PiecePicker::StopReceiving(ParentIndex parent, PieceNumber piece) {
  ClearAvailability(parent, piece, /*keep_finished=*/true);
}

void PiecePicker::ClearAvailability(ParentIndex parent, PieceNumber piece, bool keep_finished) {
  const uint32_t i = piece.value;
  ParentState& p = parents_[parent.value];
  if (i >= total_pieces()) return;
  const bool held = HoldsBit(p, i);
  if (!keep_finished) p.has.Clear(i);
  p.receiving.Clear(i);
  if (held && !HoldsBit(p, i) && p.usable) AddHolder(i, -1);
}

bool PiecePicker::has(ParentIndex parent, PieceNumber piece) const {
  return parents_[parent.value].has.Test(piece.value);
}

bool PiecePicker::receiving(ParentIndex parent, PieceNumber piece) const {
  return parents_[parent.value].receiving.Test(piece.value);
}

bool PiecePicker::holds(ParentIndex parent, PieceNumber piece) const {
  return piece.value < total_pieces() && HoldsBit(parents_[parent.value], piece.value);
}

uint32_t PiecePicker::MissingFinishedHeldBy(ParentIndex parent) const {
  const auto& has = parents_[parent.value].has.words();
  const auto& missing = missing_.words();
  uint32_t n = 0;
  for (size_t w = 0; w < has.size(); ++w) n += std::popcount(has[w] & missing[w]);
  return n;
}

std::optional<PiecePicker::Pick> PiecePicker::PickPiece(std::span<const ParentLoad> loads,
                                                        std::optional<ParentIndex> only) {
  if (missing_count_ == 0) return std::nullopt;
  candidates_.clear();
  for (const ParentLoad& load : loads) {
    if (!parents_[load.parent.value].usable) continue;
    if (only ? load.parent != *only : load.connections >= options_.per_parent_concurrency) {
      continue;
    }
    double rate = load.rate_bytes_per_sec > 0 ? load.rate_bytes_per_sec : kUnknownRateBytesPerSec;
    candidates_.push_back({load.parent, (load.inflight + 1) / rate});
  }
  if (candidates_.empty()) return std::nullopt;
  // What the candidates hold, finished and (cut-through) only being received.
  auto& finished = held_finished_.words();
  auto& received = held_receiving_.words();
  std::fill(finished.begin(), finished.end(), 0);
  std::fill(received.begin(), received.end(), 0);
  for (const Candidate& c : candidates_) {
    const ParentState& p = parents_[c.parent.value];
    for (size_t w = 0; w < finished.size(); ++w) {
      finished[w] |= p.has.words()[w];
      if (options_.cut_through) received[w] |= p.receiving.words()[w];
    }
  }
  // Rule 1 first: a piece some candidate has finished, whatever the rarity of the others.
  std::optional<uint32_t> piece = RarestIn(held_finished_);
  if (!piece && options_.cut_through) piece = RarestIn(held_receiving_);
  if (!piece) return std::nullopt;
  return ChooseParent(*piece);
}

bool PiecePicker::HoldsBit(const ParentState& p, uint32_t piece) const {
  return p.has.Test(piece) || (options_.cut_through && p.receiving.Test(piece));
}

void PiecePicker::Unlist(uint32_t piece) {
  const uint32_t c = holders_[piece];
  if (state_[piece] != PieceState::kMissing || c == 0) return;
  buckets_[c].Clear(piece);
  --bucket_sizes_[c];
}

void PiecePicker::List(uint32_t piece) {
  const uint32_t c = holders_[piece];
  if (state_[piece] != PieceState::kMissing || c == 0) return;
  buckets_[c].Set(piece);
  ++bucket_sizes_[c];
}

void PiecePicker::AddHolder(uint32_t piece, int delta) {
  Unlist(piece);
  holders_[piece] = static_cast<uint32_t>(static_cast<int>(holders_[piece]) + delta);
  List(piece);
}

std::optional<uint32_t> PiecePicker::RarestIn(const PieceBitset& held) const {
  const auto& want = held.words();
  // Rule 3 from start_: the word holding start_ with the bits below it masked off, the words
  // after it, then (wrapping) the words before it and the low bits of its own word. With
  // start_ 0 the second pass sees nothing (its mask is empty).
  const size_t first = start_ / 64;
  const uint64_t high = ~uint64_t{0} << (start_ % 64);
  for (size_t c = 1; c < buckets_.size(); ++c) {
    if (bucket_sizes_[c] == 0) continue;
    const auto& bucket = buckets_[c].words();
    auto scan = [&](size_t from, size_t to, uint64_t first_mask,
                    uint64_t last_mask) -> std::optional<uint32_t> {
      for (size_t w = from; w < to; ++w) {
        uint64_t hit = bucket[w] & want[w];
        if (w == from) hit &= first_mask;
        if (w + 1 == to) hit &= last_mask;
        if (hit != 0) return static_cast<uint32_t>(w * 64 + std::countr_zero(hit));
      }
      return std::nullopt;
    };
    const uint64_t all = ~uint64_t{0};
    if (auto p = scan(first, want.size(), high, all)) return p;
    if (first > 0 || high != all) {
      if (auto p = scan(0, first + 1, all, ~high)) return p;
    }
  }
  return std::nullopt;
}

std::optional<PiecePicker::Pick> PiecePicker::ChooseParent(uint32_t piece) const {
  std::optional<Pick> best;
  double best_cost = 0;
  for (const Candidate& c : candidates_) {
    const ParentState& p = parents_[c.parent.value];
    const bool finished = p.has.Test(piece);
    if (!finished && !HoldsBit(p, piece)) continue;
    if (!best || (finished && !best->finished) ||
        (finished == best->finished && c.cost < best_cost)) {
      best = Pick{PieceNumber{piece}, c.parent, finished};
      best_cost = c.cost;
    }
  }
  return best;
}

}  // namespace df
