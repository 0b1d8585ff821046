// ParentSet: the parents the scheduler named for one download, and how each has served it.
// Pure like the PiecePicker it keeps in step: no locks, no I/O, no clock, no gRPC.
//
// A parent's life:
//   - the scheduler offers it (Offer): a new one is added, usable, holding nothing;
//   - the scheduler may take it away (Remove): no new requests go to it, the ones in flight
//     finish; offered again, it counts again;
//   - it dies (Drop) when it fails kFailureLimit times in a row, serves a corrupt piece, serves
//     pieces nobody fetched from the origin, holds nothing new while the download stalls
//     (DropStale), or its availability stream ends before it held the whole task. A dead parent
//     is never used again by this download, even when offered again.
// Usable = neither dead nor taken away; the picker is told at every change (SetUsable), so that
// it neither asks an unusable parent nor counts it as a holder.
//
// Per parent it keeps what the picker and the endgame weigh: pieces in flight, connections open,
// and an EWMA of its piece throughput (Served), capped when an endgame duplicate beat it.
//
// Dropping a parent must also cut its availability stream, which the owner (PeerTask) holds: the
// `on_drop` callback runs for every parent that dies here, once.
//
// Not thread-safe: PeerTask calls it under its mutex. Parents are never erased while the set
// lives, so a TaskParent* stays valid (workers hold them across unlocked I/O).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/piece.h"
#include "common/status.h"
#include "daemon/piece_picker.h"

namespace df {

// Who a parent is and where it serves, as the scheduler named it.
struct ParentAddress {
  std::string peer_id;
  std::string host_id;
  std::string ip;
  uint16_t grpc_port = 0;
  uint16_t piece_port = 0;
};

// A candidate parent as it came from the network, checked: a peer id of 1..kMaxParentIdBytes
// bytes, an IPv4 literal (no name is ever resolved; the piece protocol connects over IPv4) and
// both ports in 1..65535. InvalidArgument says what is wrong.
inline constexpr size_t kMaxParentIdBytes = 256;
Result<ParentAddress> CheckParentAddress(const std::string& peer_id, const std::string& host_id,
                                         const std::string& ip, int64_t grpc_port,
                                         int64_t piece_port);

struct TaskParent : ParentAddress {
  ParentIndex index;              // in the picker, which knows what it holds
  uint32_t inflight = 0;          // pieces requested from it and not answered yet
  uint32_t connections = 0;       // workers talking to it (each on one connection)
  uint32_t failures = 0;          // consecutive
  uint32_t aborted = 0;           // consecutive forwarded pieces it cut (its upstream failed)
  uint32_t unverifiable = 0;      // pieces it served that the origin fetcher never reported
  double rate_bytes_per_sec = 0;  // EWMA of piece throughput; 0 = not measured yet
  bool dead = false;
  bool removed = false;  // taken away by the scheduler; cleared when offered again
  bool done = false;     // holds the whole task

  bool usable() const { return !dead && !removed; }
};

class ParentSet {
 public:
  // Consecutive failures before a parent is dropped; also the consecutive aborted forwards
  // after which each further one counts as a failure.
  static constexpr uint32_t kFailureLimit = 3;
  // Pieces a parent may serve that the origin fetcher never reported before it is dropped.
  static constexpr uint32_t kUnverifiableLimit = 2;
  // Weight of the newest piece in the throughput EWMA.
  static constexpr double kRateWeight = 0.3;

  // `picker` outlives the set and gets its parents only from it (Offer calls AddParent, so a
  // ParentIndex is the parent's place in the order it was added). `on_drop` (may be empty)
  // runs for each parent that dies.
  ParentSet(PiecePicker& picker, std::function<void(TaskParent&)> on_drop);
  ParentSet(const ParentSet&) = delete;
  ParentSet& operator=(const ParentSet&) = delete;

  // The scheduler offers `a`. Returns the new parent, for the caller to connect to; null when
  // it was known (a parent taken away counts again; a dead one stays dead).
  TaskParent* Offer(const ParentAddress& a);
  // The scheduler took `peer_id` away. Returns it, or null when unknown, dead or already away.
  TaskParent* Remove(const std::string& peer_id);
  // `p` serves nothing more to this download (on_drop runs unless it was dead already).
  void Drop(TaskParent& p);
  // Its availability stream ended: it stays only when it holds the whole task (it can still
  // serve what it announced). Does not run on_drop: the stream is over already.
  void StreamEnded(TaskParent& p);

  // A piece `p` served was good: its failure counts reset and its rate moves toward
  // length / cost.
  void Served(TaskParent& p, uint64_t length, uint64_t cost_ns);
  // `p` was cut by an endgame duplicate after `bytes_per_sec` at best: its rate is at most that.
  void CapRate(TaskParent& p, double bytes_per_sec);
  // A piece `p` was asked for failed with `s` (not a verification failure: see Unverifiable
  // and Drop). `forwarded`: asked while `p` was still receiving it (cut-through).
  //   NotFound, not forwarded: it no longer has the piece (the picker forgets it).
  //   NotFound, forwarded: it does not forward that piece; ask again once it has it.
  //   Aborted: its own receive failed while forwarding: not its fault unless it keeps happening.
  //   Anything else: one more consecutive failure.
  void Failed(TaskParent& p, PieceNumber piece, const Status& s, bool forwarded);
  // One more consecutive failure; the parent is dropped at kFailureLimit.
  void CountFailure(TaskParent& p);
  // `p` served a piece the origin fetcher never reported; true when that dropped it.
  bool Unverifiable(TaskParent& p);
  // The download made no progress for a while: drops the usable parents that have nothing in
  // flight and hold no finished piece this peer misses. Returns their peer ids.
  std::vector<std::string> DropStale();

  bool empty() const { return by_id_.empty(); }
  size_t size() const { return by_id_.size(); }
  bool AnyUsable() const;
  // Peer ids of the dead parents (for a reschedule request), in peer id order.
  std::vector<std::string> DeadIds() const;
  TaskParent* Find(const std::string& peer_id) const;
  TaskParent& at(ParentIndex i) const { return *by_index_[i.value]; }
  // Every parent's load for PiecePicker::PickPiece, in peer id order (ties go that way).
  // Valid until the next call.
  const std::vector<PiecePicker::ParentLoad>& Loads();
  // The fastest usable parent other than `exclude` that holds `piece` finished or forwardable
  // (PiecePicker::has) and has fewer than `max_connections` open; null when none.
  TaskParent* FastestHolder(PieceNumber piece, const TaskParent* exclude,
                            uint32_t max_connections) const;

  // Every parent, in peer id order.
  template <typename F>
  void ForEach(F&& f) const {
    for (const auto& [id, p] : by_id_) f(*p);
  }

 private:
  void SetUsable(TaskParent& p) { picker_.SetUsable(p.index, p.usable()); }

  PiecePicker& picker_;
  const std::function<void(TaskParent&)> on_drop_;
  std::map<std::string, std::unique_ptr<TaskParent>> by_id_;
  std::vector<TaskParent*> by_index_;  // by ParentIndex
  std::vector<PiecePicker::ParentLoad> loads_;
};

}  // namespace df
