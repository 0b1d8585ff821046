// PiecePicker as a specification. A swarm is written as strings: the task as one character per
// piece ('.' missing, 'I' in flight, 'D' done) and each parent as one character per piece ('X'
// has it finished, 'R' is receiving it, '.' holds nothing). A pick is written "piece@parent",
// with '~' after it when the parent is only receiving the piece, or "none".
#include "daemon/piece_picker.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace df {
namespace {

using Load = PiecePicker::ParentLoad;

constexpr PiecePicker::Options kCutThrough{.cut_through = true, .per_parent_concurrency = 1};
constexpr PiecePicker::Options kNoCutThrough{.cut_through = false, .per_parent_concurrency = 1};

struct Swarm {
  explicit Swarm(std::string_view task, std::vector<std::string_view> parents,
                 PiecePicker::Options options = kCutThrough)
      : picker(options) {
    for (size_t p = 0; p < parents.size(); ++p) {
      ParentIndex index = picker.AddParent();
      loads.push_back(Load{.parent = index});
    }
    picker.Reset(static_cast<uint32_t>(task.size()));
    for (uint32_t i = 0; i < task.size(); ++i) {
      if (task[i] == 'I') picker.SetState(PieceNumber{i}, PieceState::kInFlight);
      if (task[i] == 'D') picker.SetState(PieceNumber{i}, PieceState::kDone);
    }
    for (uint32_t p = 0; p < parents.size(); ++p) {
      for (uint32_t i = 0; i < parents[p].size(); ++i) {
        if (parents[p][i] == 'X') picker.SetHas(ParentIndex{p}, PieceNumber{i});
        if (parents[p][i] == 'R') picker.SetReceiving(ParentIndex{p}, PieceNumber{i});
      }
    }
  }

  std::string Pick() { return Describe(picker.PickPiece(loads)); }
  std::string PickOnly(uint32_t parent) {
    return Describe(picker.PickPiece(loads, ParentIndex{parent}));
  }
  void Kill(uint32_t parent) { picker.SetUsable(ParentIndex{parent}, false); }
  void Revive(uint32_t parent) { picker.SetUsable(ParentIndex{parent}, true); }
  // Holder counts of every piece, as digits.
  std::string Holders() const {
    std::string s;
    for (uint32_t i = 0; i < picker.total_pieces(); ++i) {
      s += std::to_string(picker.holders(PieceNumber{i}));
    }
    return s;
  }

  static std::string Describe(const std::optional<PiecePicker::Pick>& pick) {
    if (!pick) return "none";
    return std::to_string(pick->piece.value) + "@" + std::to_string(pick->parent.value) +
           (pick->finished ? "" : "~");
  }

  PiecePicker picker;
  std::vector<Load> loads;
};

TEST(PiecePickerTest, RarestFirst) {
  Swarm s("....", {"XXXX", "XX.X", ".X.."});
  EXPECT_EQ(s.Holders(), "2312");
  EXPECT_EQ(s.Pick(), "2@0");
}

TEST(PiecePickerTest, LowestNumberAmongEquallyRare) {
  EXPECT_EQ(Swarm("....", {"XXXX", "XXXX"}).Pick(), "0@0");
  EXPECT_EQ(Swarm("....", {"..XX", "XXXX"}).Pick(), "0@1");
}

TEST(PiecePickerTest, SpreadStartGoesUpFromItsPieceAndWraps) {
  const PiecePicker::Options from5{.cut_through = true, .spread_start = 5};
  // 130 pieces span three bitset words; the start is in the first.
  const std::string all(130, 'X');
  EXPECT_EQ(Swarm(std::string(130, '.'), {all}, from5).Pick(), "5@0");
  std::string below5(130, '.');
  for (int i = 0; i < 5; ++i) below5[i] = 'X';
  EXPECT_EQ(Swarm(std::string(130, '.'), {below5}, from5).Pick(), "0@0");  // wrapped
  std::string task(130, '.');
  for (int i = 5; i < 129; ++i) task[i] = 'D';
  EXPECT_EQ(Swarm(task, {all}, from5).Pick(), "129@0");  // last word, then wraps
  // Rarity still comes first: piece 2 has one holder, the others two.
  std::string two(130, 'X');
  std::string one = two;
  one[2] = '.';
  EXPECT_EQ(Swarm(std::string(130, '.'), {one, two}, from5).Pick(), "2@1");
  // The start is taken modulo the number of pieces: 135 % 130 = 5, and 200 % 130 = 70.
  EXPECT_EQ(Swarm(std::string(130, '.'), {all}, {.cut_through = true, .spread_start = 135}).Pick(),
            "5@0");
  EXPECT_EQ(Swarm(std::string(130, '.'), {all}, {.cut_through = true, .spread_start = 200}).Pick(),
            "70@0");
}

TEST(PiecePickerTest, OnlyMissingPiecesAreCandidates) {
  EXPECT_EQ(Swarm("DI..", {"XXXX"}).Pick(), "2@0");
  EXPECT_EQ(Swarm("DIDI", {"XXXX"}).Pick(), "none");
  EXPECT_EQ(Swarm("DI.D", {"XX.X"}).Pick(), "none");
}

TEST(PiecePickerTest, NothingToPickWithoutParentsOrPieces) {
  EXPECT_EQ(Swarm("...", {}).Pick(), "none");
  EXPECT_EQ(Swarm("", {"", ""}).Pick(), "none");
  EXPECT_EQ(Swarm("...", {"...", "..."}).Pick(), "none");
}

TEST(PiecePickerTest, FinishedBeforeReceiving) {
  // Piece 0 is the rarest, but its only holder is still receiving it.
  Swarm s("...", {"R..", ".XX", ".XX"});
  EXPECT_EQ(s.Holders(), "122");
  EXPECT_EQ(s.Pick(), "1@1");
  // With no finished piece on offer, the rarest received one.
  EXPECT_EQ(Swarm("DD..", {"XXRR", "...R"}).Pick(), "2@0~");
}

TEST(PiecePickerTest, FinishedHolderBeforeCheaperReceivingHolder) {
  Swarm s(".", {"R", "X"});
  s.loads[1].inflight = 10;  // much costlier, but it has the piece finished
  EXPECT_EQ(s.Pick(), "0@1");
}

TEST(PiecePickerTest, ReceivingIgnoredWithoutCutThrough) {
  Swarm s("....", {"RR..", "..XX"}, kNoCutThrough);
  EXPECT_EQ(s.Holders(), "0011");
  EXPECT_EQ(s.Pick(), "2@1");
  EXPECT_EQ(Swarm("..", {"RR"}, kNoCutThrough).Pick(), "none");
  // Receiving then finished: counted once, when finished.
  Swarm t("..", {"R."}, kNoCutThrough);
  EXPECT_TRUE(t.picker.SetHas(ParentIndex{0}, PieceNumber{0}));
  EXPECT_EQ(t.Holders(), "10");
  EXPECT_EQ(t.Pick(), "0@0");
}

TEST(PiecePickerTest, ReceivingThenFinishedCountsOnceWithCutThrough) {
  Swarm s("..", {"R."});
  EXPECT_EQ(s.Holders(), "10");
  EXPECT_FALSE(s.picker.SetHas(ParentIndex{0}, PieceNumber{0}));  // held already
  EXPECT_FALSE(s.picker.SetReceiving(ParentIndex{0}, PieceNumber{0}));
  EXPECT_EQ(s.Holders(), "10");
  EXPECT_EQ(s.Pick(), "0@0");
}

TEST(PiecePickerTest, DeadParentsPiecesNotCounted) {
  Swarm s("..", {"X.", "XX", "X."});
  EXPECT_EQ(s.Holders(), "31");
  EXPECT_EQ(s.Pick(), "1@1");
  s.Kill(0);
  s.Kill(2);
  EXPECT_EQ(s.Holders(), "11");
  EXPECT_EQ(s.Pick(), "0@1");
  s.Kill(1);
  EXPECT_EQ(s.Holders(), "00");
  EXPECT_EQ(s.Pick(), "none");
}

TEST(PiecePickerTest, DeadParentNotAsked) {
  Swarm s("..", {"X.", ".X"});
  s.Kill(0);
  EXPECT_EQ(s.Pick(), "1@1");
  EXPECT_EQ(s.PickOnly(0), "none");
}

TEST(PiecePickerTest, ParentAtConnectionLimitSkippedButCounted) {
  Swarm s("..", {".X", "XX", "X."}, {.cut_through = true, .per_parent_concurrency = 2});
  s.loads[0].connections = 2;
  // Parent 0 is busy; still, it makes piece 1 as common as piece 0.
  EXPECT_EQ(s.Holders(), "22");
  EXPECT_EQ(s.Pick(), "0@1");
  s.loads[1].connections = 2;
  s.loads[2].connections = 2;
  EXPECT_EQ(s.Pick(), "none");
  s.loads[0].connections = 1;
  EXPECT_EQ(s.Pick(), "1@0");
}

TEST(PiecePickerTest, OnlyParent) {
  Swarm s("...", {"X..", ".XX", "..X"});
  EXPECT_EQ(s.Pick(), "0@0");
  EXPECT_EQ(s.PickOnly(1), "1@1");  // piece 1 is rarer than piece 2
  EXPECT_EQ(s.PickOnly(2), "2@2");
  // Its own connection is the one to queue on: its connection count does not matter.
  s.loads[1].connections = 5;
  EXPECT_EQ(s.PickOnly(1), "1@1");
  s.picker.SetState(PieceNumber{1}, PieceState::kInFlight);
  s.picker.SetState(PieceNumber{2}, PieceState::kInFlight);
  EXPECT_EQ(s.PickOnly(1), "none");
  EXPECT_EQ(s.Pick(), "0@0");
}

TEST(PiecePickerTest, LowestCostParent) {
  Swarm s(".", {"X", "X", "X"});
  s.loads[0].inflight = 1;               // 2 / 50e6 (rate unknown)  = 4e-8
  s.loads[1].rate_bytes_per_sec = 10e6;  // 1 / 10e6 = 1e-7
  s.loads[2].inflight = 3;
  s.loads[2].rate_bytes_per_sec = 200e6;  // 4 / 200e6 = 2e-8
  EXPECT_EQ(s.Pick(), "0@2");
  s.loads[2].inflight = 7;  // 8 / 200e6 = 4e-8: a tie goes to the earlier load
  EXPECT_EQ(s.Pick(), "0@0");
  std::swap(s.loads[0], s.loads[2]);
  EXPECT_EQ(s.Pick(), "0@2");
}

TEST(PiecePickerTest, ParentsLeftOutOfLoadsAreNoCandidates) {
  Swarm s("..", {"X.", "XX"});
  s.loads.erase(s.loads.begin() + 1);
  EXPECT_EQ(s.Holders(), "21");
  EXPECT_EQ(s.Pick(), "0@0");
}

TEST(PiecePickerTest, CountsFollowAvailabilityDeathAndReturn) {
  Swarm s("....", {"....", "....", "...."});
  EXPECT_TRUE(s.picker.SetHas(ParentIndex{0}, PieceNumber{0}));
  EXPECT_FALSE(s.picker.SetHas(ParentIndex{0}, PieceNumber{0}));  // known already
  EXPECT_TRUE(s.picker.SetHas(ParentIndex{1}, PieceNumber{0}));
  EXPECT_TRUE(s.picker.SetReceiving(ParentIndex{1}, PieceNumber{1}));
  EXPECT_TRUE(s.picker.SetHas(ParentIndex{2}, PieceNumber{3}));
  EXPECT_FALSE(s.picker.SetHas(ParentIndex{2}, PieceNumber{9}));  // out of range: ignored
  EXPECT_EQ(s.Holders(), "2101");
  EXPECT_EQ(s.Pick(), "3@2");

  // A piece no longer missing is no candidate, and is one again once requeued.
  s.picker.SetState(PieceNumber{3}, PieceState::kInFlight);
  EXPECT_FALSE(s.picker.SetHas(ParentIndex{1}, PieceNumber{3}));  // not missing: not useful
  EXPECT_EQ(s.Holders(), "2102");
  EXPECT_EQ(s.Pick(), "0@0");
  s.picker.SetState(PieceNumber{3}, PieceState::kMissing);
  EXPECT_EQ(s.Pick(), "0@0");  // piece 3 now has two holders, as piece 0

  // Parent 2 dies: piece 3 is held by parent 1 alone.
  s.Kill(2);
  EXPECT_EQ(s.Holders(), "2101");
  EXPECT_EQ(s.Pick(), "3@1");
  // What a dead parent announces is kept, and counted once it is back.
  EXPECT_TRUE(s.picker.SetHas(ParentIndex{2}, PieceNumber{2}));
  EXPECT_EQ(s.Holders(), "2101");
  s.Revive(2);
  EXPECT_EQ(s.Holders(), "2112");
  EXPECT_EQ(s.Pick(), "2@2");
  s.Revive(2);  // twice: no change
  EXPECT_EQ(s.Holders(), "2112");

  // A parent that said it lacks a piece.
  s.picker.Forget(ParentIndex{2}, PieceNumber{2});
  s.picker.Forget(ParentIndex{1}, PieceNumber{1});
  EXPECT_EQ(s.Holders(), "2002");
  s.picker.SetState(PieceNumber{0}, PieceState::kDone);
  EXPECT_EQ(s.Pick(), "3@1");
  EXPECT_EQ(s.picker.missing_count(), 3u);
  EXPECT_EQ(s.picker.FirstMissing()->value, 1u);
}

// NOT_READY to a cut-through request takes back only the receiving mark: the parent may have
// announced the piece finished while the answer was on its way, and it announces it once.
TEST(PiecePickerTest, StopReceivingKeepsAFinishedMark) {
  Swarm s("...", {"RR."});
  EXPECT_EQ(s.Holders(), "110");
  s.picker.SetHas(ParentIndex{0}, PieceNumber{0});  // the stream said it finished piece 0
  s.picker.StopReceiving(ParentIndex{0}, PieceNumber{0});
  s.picker.StopReceiving(ParentIndex{0}, PieceNumber{1});
  EXPECT_EQ(s.Holders(), "100");
  EXPECT_TRUE(s.picker.has(ParentIndex{0}, PieceNumber{0}));
  EXPECT_FALSE(s.picker.receiving(ParentIndex{0}, PieceNumber{1}));
  EXPECT_EQ(s.Pick(), "0@0");
}

TEST(PiecePickerTest, MissingFinishedHeldBy) {
  Swarm s("DI...", {"XXXRX", "RRRRR"});
  EXPECT_EQ(s.picker.MissingFinishedHeldBy(ParentIndex{0}), 2u);  // pieces 2 and 4
  EXPECT_EQ(s.picker.MissingFinishedHeldBy(ParentIndex{1}), 0u);
  s.Kill(0);
  EXPECT_EQ(s.picker.MissingFinishedHeldBy(ParentIndex{0}), 2u);
}

TEST(PiecePickerTest, FirstMissing) {
  EXPECT_EQ(Swarm("DI.D.", {}).picker.FirstMissing()->value, 2u);
  EXPECT_FALSE(Swarm("DIDI", {}).picker.FirstMissing());
  Swarm s(std::string(130, 'D'), {});
  s.picker.SetState(PieceNumber{129}, PieceState::kMissing);
  EXPECT_EQ(s.picker.FirstMissing()->value, 129u);
  EXPECT_EQ(s.picker.missing_count(), 1u);
}

TEST(PiecePickerTest, ParentsAddedBeforeAndAfterTheLayout) {
  PiecePicker picker(kCutThrough);
  ParentIndex early = picker.AddParent();
  EXPECT_FALSE(picker.SetHas(early, PieceNumber{0}));  // no layout yet: no pieces
  picker.Reset(3);
  ParentIndex late = picker.AddParent();
  EXPECT_TRUE(picker.SetHas(early, PieceNumber{0}));
  EXPECT_TRUE(picker.SetHas(late, PieceNumber{0}));
  EXPECT_TRUE(picker.SetHas(late, PieceNumber{2}));
  std::vector<Load> loads{{.parent = early}, {.parent = late}};
  EXPECT_EQ(Swarm::Describe(picker.PickPiece(loads)), "2@1");
}

// The picker against the scan it replaces (PeerTask::PickLocked before it had a picker):
// every piece, every parent, on random swarms and random changes.
struct Reference {
  std::string task;                  // '.', 'I', 'D'
  std::vector<std::string> parents;  // 'X', 'R', '.'
  std::vector<bool> usable;
  uint32_t start = 0;  // rule 3 goes up from here, wrapping

  std::optional<PiecePicker::Pick> Pick(const std::vector<Load>& loads, bool cut_through,
                                        uint32_t per_parent, std::optional<uint32_t> only) const {
    std::optional<PiecePicker::Pick> best;
    uint32_t best_count = UINT32_MAX;
    for (uint32_t k = 0; k < task.size(); ++k) {
      const uint32_t i = static_cast<uint32_t>((start + k) % task.size());
      if (task[i] != '.') continue;
      uint32_t count = 0;
      std::optional<PiecePicker::Pick> choice;
      double choice_cost = 0;
      for (const Load& l : loads) {
        const uint32_t p = l.parent.value;
        const bool holds = parents[p][i] == 'X' || (cut_through && parents[p][i] == 'R');
        if (!usable[p] || !holds) continue;
        ++count;
        if (only ? p != *only : l.connections >= per_parent) continue;
        const bool finished = parents[p][i] == 'X';
        double rate = l.rate_bytes_per_sec > 0 ? l.rate_bytes_per_sec : 50e6;
        double cost = (l.inflight + 1) / rate;
        if (!choice || (finished && !choice->finished) ||
            (finished == choice->finished && cost < choice_cost)) {
          choice = PiecePicker::Pick{PieceNumber{i}, l.parent, finished};
          choice_cost = cost;
        }
      }
      if (!choice) continue;
      if (!best || (choice->finished && !best->finished) ||
          (choice->finished == best->finished && count < best_count)) {
        best = choice;
        best_count = count;
      }
    }
    return best;
  }
};

TEST(PiecePickerTest, AgreesWithTheFullScan) {
  std::mt19937 rng(20261130);
  auto below = [&](uint32_t n) { return static_cast<uint32_t>(rng() % n); };
  for (int round = 0; round < 200; ++round) {
    const bool cut_through = round % 3 != 0;
    const uint32_t per_parent = 1 + below(2);
    const uint32_t pieces = 1 + below(150);
    const uint32_t parents = below(7);
    const uint64_t spread = below(2) ? rng() : 0;
    PiecePicker picker(
        {.cut_through = cut_through, .per_parent_concurrency = per_parent, .spread_start = spread});
    Reference ref{std::string(pieces, '.'), {}, {}, static_cast<uint32_t>(spread % pieces)};
    std::vector<Load> loads;
    for (uint32_t p = 0; p < parents; ++p) {
      loads.push_back(Load{.parent = picker.AddParent()});
      ref.parents.emplace_back(pieces, '.');
      ref.usable.push_back(true);
    }
    picker.Reset(pieces);
    for (int step = 0; step < 300; ++step) {
      const uint32_t i = below(pieces);
      const uint32_t p = parents ? below(parents) : 0;
      switch (below(8)) {
        case 0:
        case 1:
          if (!parents) break;
          picker.SetHas(ParentIndex{p}, PieceNumber{i});
          ref.parents[p][i] = 'X';
          break;
        case 2:
          if (!parents) break;
          picker.SetReceiving(ParentIndex{p}, PieceNumber{i});
          if (ref.parents[p][i] == '.') ref.parents[p][i] = 'R';
          break;
        case 3:
          if (!parents) break;
          picker.Forget(ParentIndex{p}, PieceNumber{i});
          ref.parents[p][i] = '.';
          break;
        case 4: {
          const char states[] = {'.', 'I', 'D'};
          const char c = states[below(3)];
          picker.SetState(PieceNumber{i}, c == '.'   ? PieceState::kMissing
                                          : c == 'I' ? PieceState::kInFlight
                                                     : PieceState::kDone);
          ref.task[i] = c;
          break;
        }
        case 5:
          if (!parents) break;
          ref.usable[p] = below(3) != 0;
          picker.SetUsable(ParentIndex{p}, ref.usable[p]);
          break;
        case 6:
          if (!parents) break;
          loads[p].connections = below(per_parent + 1);
          loads[p].inflight = below(4);
          loads[p].rate_bytes_per_sec = below(2) ? 0 : 1e6 * (1 + below(100));
          break;
        case 7:
          std::shuffle(loads.begin(), loads.end(), rng);
          break;
      }
      std::optional<uint32_t> only;
      if (parents && below(4) == 0) only = below(parents);
      auto got = picker.PickPiece(
          loads, only ? std::optional<ParentIndex>(ParentIndex{*only}) : std::nullopt);
      auto want = ref.Pick(loads, cut_through, per_parent, only);
      ASSERT_EQ(Swarm::Describe(got), Swarm::Describe(want))
          << "round " << round << " step " << step << " task " << ref.task;
      for (uint32_t q = 0; q < pieces; ++q) {
        uint32_t holders = 0;
        for (uint32_t r = 0; r < parents; ++r) {
          char c = ref.parents[r][q];
          holders += ref.usable[r] && (c == 'X' || (cut_through && c == 'R'));
        }
        ASSERT_EQ(picker.holders(PieceNumber{q}), holders) << "piece " << q;
      }
    }
  }
}

}  // namespace
}  // namespace df
