// The scheduler's in-memory model: hosts, tasks, peers. Plain data owned by the ResourceModel
// (resource_model.h) and touched only under the Scheduler's mutex (none of these types is
// thread-safe on its own).
//
// Ownership: the ResourceModel owns hosts (shared_ptr, because every peer on a host refers to it
// and a host outlives its last peer until GC) and tasks (unique_ptr); a Task owns its peers
// (unique_ptr) and its Dag over their ids.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "scheduler.pb.h"
#include "scheduler/cost_history.h"
#include "scheduler/dag.h"
#include "scheduler/evaluator.h"
#include "scheduler/peer_stream.h"

namespace df::scheduler {

using Clock = std::chrono::steady_clock;

// True for the states in which a peer can serve pieces to children.
inline bool CanServe(PeerState s) {
  return s == PeerState::kRunning || s == PeerState::kBackToSource || s == PeerState::kSucceeded;
}

struct Host {
  df::scheduler::v1::Host info;  // as last announced (live load refreshed by AnnounceHost)
  // False for the minimal record made when a peer registers from a host that never announced
  // itself: such a host has no address, so its peers are not offered as parents until it does.
  bool announced = false;
  bool left = false;  // LeaveHost; its peers are Left, the record goes at the next GC
  Clock::time_point last_seen;
  uint32_t upload_children = 0;  // DAG edges from this host's peers to children, all tasks
  // Upload bandwidth (bytes/s) reserved for those edges, all tasks; see Peer::parent_allotments.
  uint64_t upload_allotted = 0;
  uint64_t upload_success = 0;  // pieces children got from this host's peers
  uint64_t upload_failure = 0;  // pieces children failed to get from them
  uint32_t peer_count = 0;      // Peer records referring to this host

  // The link capacities to book with, bytes/s; 0 = unknown (no capacity accounting). What the
  // host announced, or what the piece records showed (CapacityEstimator::Capacity); the
  // Scheduler refreshes them.
  uint64_t upload_capacity_bps = 0;
  uint64_t download_capacity_bps = 0;
  // The upload capacity comes from the host's announcement or its piece records, not the prior.
  bool upload_capacity_evidence = false;
  // The group the evaluator inferred for this host (InferredGroups; "~..."), "" for none; it
  // stands in for the idc when the host announces none (GroupOf).
  std::string inferred_group;

  bool is_seed() const { return info.type() == df::scheduler::v1::HOST_TYPE_SEED; }
  uint64_t announced_upload() const { return info.upload_rate_limit_bytes_per_sec(); }
  uint64_t announced_download() const { return info.download_rate_limit_bytes_per_sec(); }
  uint64_t upload_capacity() const { return upload_capacity_bps; }
  uint64_t download_capacity() const { return download_capacity_bps; }
  bool reachable() const {
    return announced && !left && !info.ip().empty() && info.piece_port() > 0;
  }
};

// The set of finished piece numbers of one peer; counts each piece once. Numbers at or above
// kMaxTrackedPieces (4 TiB at 4 MiB pieces) are counted without deduplication so that a bogus
// piece number cannot make the scheduler allocate gigabytes.
class FinishedPieces {
 public:
  static constexpr uint32_t kMaxTrackedPieces = 1u << 20;
  // Returns true when the piece was not finished before.
  bool Add(uint32_t piece_number);
  uint32_t count() const { return count_; }

 private:
  std::vector<bool> bits_;
  uint32_t count_ = 0;
};

struct Peer {
  std::string id;
  Dag::Vertex vertex = 0;  // this peer in its Task's dag
  std::shared_ptr<Host> host;
  // Its host was a seed host when it registered. Fixed for the peer's life, so that the task's
  // counters it joins as a seed peer (live_seed_peers) or a normal one (back_to_source_peers)
  // are the ones it leaves, even when the host announces another type meanwhile.
  bool seed = false;
  PeerState state = PeerState::kPending;
  std::shared_ptr<PeerStream> stream;  // null once the AnnouncePeer stream closed
  FinishedPieces finished;
  std::unordered_set<std::string> bad_parents;  // never offered again to this peer
  CostHistory upload_costs;                     // pieces this peer served to children
  uint64_t upload_success = 0;
  uint64_t upload_failure = 0;
  Clock::time_point updated;
  // Scheduling bookkeeping.
  bool waiting = false;  // Running with no parent, since wait_since
  Clock::time_point wait_since;
  bool sent_parents = false;            // at least one NormalTaskResponse sent
  Clock::time_point last_push;          // when the last NormalTaskResponse was sent
  uint64_t seen_candidate_version = 0;  // Task::candidate_version at its last evaluation
  bool needs_push = false;              // lost a parent: look for a replacement
  Clock::time_point registered;         // when DecideOnRegister ran
  bool seed_withheld = false;   // its only candidates were seeds, withheld (weak_child_seed_delay)
  bool sent_to_source = false;  // this scheduler told it to fetch from the origin (size authority)
  // Upload bandwidth (bytes/s) reserved on each parent's host for this child, by parent vertex.
  // Their sum is what the child expects to receive; it stops being hungry at its download rate.
  std::unordered_map<Dag::Vertex, uint64_t> parent_allotments;
  uint64_t allotted() const {
    uint64_t sum = 0;
    for (const auto& [v, a] : parent_allotments) sum += a;
    return sum;
  }
};

struct Task {
  std::string id;
  df::scheduler::v1::TaskInfo info;  // from the first register; forwarded to the seed
  int64_t content_length = -1;       // -1 unknown
  uint64_t piece_length = 0;         // 0 unknown
  uint32_t total_pieces = 0;         // 0 unknown
  // sha256 of each piece as fetched from the origin by a seed or a peer this scheduler sent
  // there, by piece number (< total_pieces; no entry = not reported yet). Children verify against
  // it. A map, not a vector sized to the task: one TaskMetadata for 16 Mi pieces must not cost
  // 512 MiB before a single digest arrived.
  std::unordered_map<uint32_t, std::string> piece_digests;
  bool digests_expected = false;  // a seed peer registered: it reports every piece's digest
  uint32_t origin_digests = 0;    // non-empty entries of piece_digests
  std::unordered_map<std::string, std::unique_ptr<Peer>> peers;
  Dag dag;                       // parent -> child edges; acyclic unless parent_graph is mesh
  std::vector<Peer*> by_vertex;  // dag vertex -> its peer (null for a free vertex number)
  // Peers that want (more) parents: Running, stream open, and fewer than candidate_parent_limit
  // or a push owed (Peer::needs_push).
  std::unordered_set<std::string> hungry;
  // Incremented whenever a peer becomes a (better) candidate; hungry peers whose
  // seen_candidate_version is older are re-evaluated.
  uint64_t candidate_version = 0;
  // Mesh: the peers a seed may serve when they were last looked at (mesh_seed_children; peer
  // ids, sorted). Scheduler::RebalanceSeedChildrenLocked re-plans those that join it.
  std::vector<std::string> seed_children;
  // Mesh: the pieces some peer that is not a seed reported finished (sized when the first report
  // arrives after the task's size is known; reports before that are not counted, which only
  // delays the moment below). Once every piece is held by such a peer, nothing the seed sends is
  // new to the swarm and it serves any child (the tail): ParentSelector::MaySeedServe.
  std::vector<bool> peer_held;
  uint32_t peer_held_count = 0;
  bool seed_opened = false;  // the peers were pushed once the coverage was complete
  bool peers_hold_every_piece() const {
    return total_pieces > 0 && peer_held_count >= total_pieces;
  }
  // Edges whose parent and child are in different IDCs (CrossIdc), by the parent's GroupOf.
  std::unordered_map<std::string, uint32_t> cross_idc_children;
  uint32_t back_to_source_peers = 0;  // normal-host peers in kBackToSource
  uint32_t live_seed_peers = 0;       // seed-host peers that can serve
  uint32_t succeeded_peers = 0;
  bool seed_trigger_pending = false;  // a trigger went out and its seed peer has not failed
  uint32_t seed_trigger_attempts = 0;
  Clock::time_point updated;

  Peer* PeerAt(Dag::Vertex v) const { return v < by_vertex.size() ? by_vertex[v] : nullptr; }
};

// A seed peer: its host was a seed when it registered, or is one now.
inline bool IsSeedPeer(const Peer& p) { return p.seed || p.host->is_seed(); }

// The host's IDC for scheduling: the one it announced, else the group the evaluator inferred
// for it, else "" (a host in every IDC).
inline const std::string& GroupOf(const Host& host) {
  return host.info.idc().empty() ? host.inferred_group : host.info.idc();
}

// Parent and child are in different IDCs: both announced one and they differ, or neither did and
// the groups inferred for them differ. An announced idc and an inferred group are never compared
// (a host without either is in every IDC).
inline bool CrossIdc(const Peer& parent, const Peer& child) {
  const Host& p = *parent.host;
  const Host& c = *child.host;
  if (p.info.idc().empty() != c.info.idc().empty()) return false;
  const std::string& a = GroupOf(p);
  const std::string& b = GroupOf(c);
  return !a.empty() && !b.empty() && a != b;
}

// The pieces a peer holds: what it reported, or every piece once it succeeded.
inline uint32_t ReportedPieces(const Peer& p, const Task& task) {
  return p.state == PeerState::kSucceeded && task.total_pieces > 0 ? task.total_pieces
                                                                   : p.finished.count();
}

}  // namespace df::scheduler
