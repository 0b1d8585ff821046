// ResourceModel: one scheduler's picture of the swarm (hosts, tasks, peers, the parent DAG of
// each task and the upload bandwidth booked on each edge) and the updates that keep its
// invariants:
//   - Host::upload_children, Host::upload_allotted and Task::cross_idc_children always match the
//     DAG edges and Peer::parent_allotments (only Link/SetAllotment/Unlink change them);
//   - Task::back_to_source_peers, live_seed_peers and succeeded_peers match the peers' states
//     (only SetState changes a state);
//   - Task::hungry holds the peers that want (more) parents, and hungry_tasks() the tasks whose
//     set is non-empty (UpdateHunger keeps both).
// It decides nothing: which parents a child gets (ParentSelector) and what is sent to peers
// (Scheduler) are elsewhere.
//
// Not thread-safe: the Scheduler owns it and touches it only under its mutex. Local to one
// scheduler; what schedulers share lives in the Store (store.h). `config` and `clock` are
// borrowed and must outlive the model.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "scheduler.pb.h"
#include "scheduler/config.h"
#include "scheduler/peer_stream.h"
#include "scheduler/resource.h"

namespace df::scheduler {

class ResourceModel {
 public:
  using Hosts = std::unordered_map<std::string, std::shared_ptr<Host>>;
  using Tasks = std::unordered_map<std::string, std::unique_ptr<Task>>;

  // `on_new_candidates` runs (under the owner's mutex) when hungry peers may have new
  // candidates: a peer became able to serve, or children lost a parent. The Scheduler wakes its
  // background thread with it.
  ResourceModel(const SchedulerConfig& config, const df::Clock& clock,
                std::function<void()> on_new_candidates);

  ResourceModel(const ResourceModel&) = delete;
  ResourceModel& operator=(const ResourceModel&) = delete;

  // ---- Hosts
  const Hosts& hosts() const { return hosts_; }
  // The host, created as a minimal record (not announced) when unknown; last_seen = now.
  std::shared_ptr<Host> TouchHost(const std::string& host_id, Clock::time_point now);
  // Null when unknown.
  Host* FindHost(const std::string& host_id) const;
  // Keeps the set of seed hosts in step with the host's announced type.
  void SetSeedHost(const std::string& host_id, bool seed);
  // Marks the host left: no longer a seed host, and each of its peers that can serve becomes
  // Left, with its DAG edges removed. The record itself goes at the next CollectGarbage.
  void LeaveHost(Host& host);
  // An alive seed host (announced address, not left, seen within host_ttl) for the task, the
  // same one for the same task while the set of seeds is stable; null when there is none.
  const Host* PickSeedHost(const std::string& task_id, Clock::time_point now) const;
  // The fair upload share per downloading host: the announced uplinks of the reachable hosts
  // over the hosts that download (bytes/s; 0 = unknown). Cached, recomputed at most once a
  // second or after InvalidateUploadShare.
  uint64_t UploadShare(Clock::time_point now) const;
  void InvalidateUploadShare() { upload_share_valid_ = false; }

  // ---- Tasks and peers
  const Tasks& tasks() const { return tasks_; }
  // Tasks with at least one hungry peer (ids; sorted).
  const std::set<std::string>& hungry_tasks() const { return hungry_tasks_; }
  Task* FindTask(const std::string& task_id) const;
  static Peer* FindPeer(const Task& task, const std::string& peer_id);
  // The task, created from `info` when unknown (its size unknown until learned); updated = now.
  Task& FindOrCreateTask(const std::string& task_id, const df::scheduler::v1::TaskInfo& info,
                         Clock::time_point now);
  // The peer in state Pending with `stream`. A peer registering again keeps its DAG vertex and
  // upload history; its parents and children are detached and its scheduling state forgotten.
  Peer& ResetPeer(Task& task, const std::string& peer_id, std::shared_ptr<Host> host,
                  std::shared_ptr<PeerStream> stream, Clock::time_point now);
  // Moves the peer to `state`, keeping the task's counters, the seed trigger flag and hunger in
  // step; a peer that can newly serve (or succeeded) makes the task's hungry peers look again.
  void SetState(Task& task, Peer& peer, PeerState state);
  // A (better) candidate appeared in the task: hungry peers re-evaluate.
  void BumpCandidates(Task& task);
  // Recomputes whether the peer wants (more) parents, and whether it is waiting for its first.
  // A peer that needs a push (Peer::needs_push) is hungry until it gets one.
  void UpdateHunger(Task& task, Peer& peer);
  // The task's downloading peers (running, not seeds) with the widest upload capacity, at most
  // `limit` of them, widest first; an unknown capacity counts as the widest (never measured, so
  // not proven thin), ties go to the earlier registered (lower DAG vertex). `also` (a peer being
  // decided on at its register, not yet running) competes too. O(peers of the task).
  std::vector<const Peer*> WidestUplinks(const Task& task, size_t limit,
                                         const Peer* also = nullptr) const;

  // ---- DAG edges, keeping the hosts' bookings in step
  // Adds the edge parent -> child (nothing when it would close a cycle) with `allotment`
  // bytes/s booked on the parent's host.
  void Link(Task& task, Peer& parent, Peer& child, uint64_t allotment);
  // Sets the upload bandwidth reserved on parent's host for the edge parent -> child.
  void SetAllotment(Peer& parent, Peer& child, uint64_t allotment);
  void Unlink(Task& task, Peer& parent, Peer& child);
  void RemoveParents(Task& task, Peer& child);
  // Removes every edge of the peer; its children are marked to get a replacement parent.
  void DetachPeer(Task& task, Peer& peer);
  // Detaches the peer and deletes it (Left first when it could serve or was pending).
  void RemovePeer(Task& task, Peer& peer);
  // Multiplies the allotments of `parent`'s children by `ratio` (each at least 1 byte/s).
  void ScaleAllotments(Task& task, Peer& parent, double ratio);

  // ---- Inferred host groups
  // Sets every host's inferred_group from `group_of` (host id -> group; absent: none) and, when
  // any changed, counts each task's cross-IDC edges again (Task::cross_idc_children follows
  // GroupOf) and marks for re-planning (needs_push) every running child without an announced idc
  // that has a parent in another group: edges made before the groups were known.
  struct GroupsApplied {
    size_t hosts_changed = 0;
    size_t peers_replanned = 0;
  };
  GroupsApplied ApplyInferredGroups(const std::unordered_map<std::string, std::string>& group_of);

  // ---- Garbage collection
  // Removes Failed and Left peers, peers idle without a stream for peer_ttl, peers of hosts that
  // left or were not seen for host_ttl, tasks without peers for task_ttl, and then those hosts.
  // Returns the ids of the removed hosts (the owner forgets what else it knows of them).
  std::vector<std::string> CollectGarbage(Clock::time_point now);
  size_t peer_count() const;

 private:
  const SchedulerConfig& config_;
  const df::Clock& clock_;
  const std::function<void()> on_new_candidates_;
  Hosts hosts_;
  std::set<std::string> seed_hosts_;
  Tasks tasks_;
  std::set<std::string> hungry_tasks_;  // tasks with Task::hungry non-empty
  // Cache of UploadShare (mutable: a cache, not state; the model is not thread-safe anyway).
  mutable uint64_t upload_share_ = 0;
  mutable Clock::time_point upload_share_at_;
  mutable bool upload_share_valid_ = false;
};

}  // namespace df::scheduler
