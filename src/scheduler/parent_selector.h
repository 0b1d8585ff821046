// ParentSelector: which parents a child gets, and how much upload to book on each.
//
// One decision, in order (docs/scheduler.md, "Capacity" and "IDCs"):
//   1. candidates: the task's peers that can serve on a reachable host, minus the child, its
//      descendants (no cycle) and the parents it reported bad; current parents always kept,
//      the others sampled uniformly down to filter_parent_limit;
//   2. the evaluator drops the bad ones and ranks the rest;
//   3. parents of the child's IDC first (else IDCs under cross_idc_children_limit);
//   4. taken in rank order while their free upload adds up to what the child books
//      (BookingNeed), at most candidate_parent_limit.
// In a mesh (parent_graph "mesh") step 1 keeps the child's descendants (peers serve each other
// both ways) and step 4 books nothing: the current parents stay, and the best ranked others are
// added up to candidate_parent_limit (SelectMesh); a seed is a parent only of the task's
// mesh_seed_children downloading peers with the widest uplinks (what it sends is new to the swarm
// and travels on from there only as fast as the child's uplink).
// It only reads the model, apart from Peer::seed_withheld of the child; it sends nothing, links
// nothing and does no I/O (the topology is read from memory). The caller applies the result.
//
// Not thread-safe: used under the Scheduler's mutex, like the model it reads. `config`,
// `evaluator`, `model` and `clock` are borrowed and must outlive the selector.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/clock.h"
#include "scheduler/config.h"
#include "scheduler/evaluator.h"
#include "scheduler/resource.h"
#include "scheduler/resource_model.h"

namespace df::scheduler {

class NetworkTopology;

// One parent chosen for a child.
struct ChosenParent {
  Peer* peer = nullptr;
  // Upload to reserve on the parent's host for this edge, bytes/s (0 = no accounting).
  uint64_t allotment_bytes_per_sec = 0;
  double score = 0;  // the evaluator's; higher is better
};

class ParentSelector {
 public:
  ParentSelector(const SchedulerConfig& config, const Evaluator& evaluator,
                 const ResourceModel& model, const df::Clock& clock);

  // Probed RTTs and failures for the evaluator; null (the default): none. Borrowed.
  void set_topology(const NetworkTopology* topology) { topology_ = topology; }

  // The parents for `child` in the evaluator's order (current parents stay eligible); empty
  // when there is no candidate, the evaluator rejected them all, or only seeds are left and
  // they are withheld from a weak child (child.seed_withheld is then set).
  std::vector<ChosenParent> Select(Task& task, Peer& child, std::mt19937_64& rng);

  // In a mesh: whether a seed may be a parent of `child` (always with mesh_seed_children 0, else
  // when it is one of the task's mesh_seed_children widest uplinks, ResourceModel::WidestUplinks).
  bool MaySeedServe(const Task& task, const Peer& child) const;

 private:
  struct Ranked {
    Peer* peer = nullptr;
    double score = 0;
    double predicted_bytes_per_sec = 0;  // the evaluator's estimate for this edge; 0 = none
  };
  std::vector<Peer*> CollectCandidates(Task& task, Peer& child, std::mt19937_64& rng) const;
  // The evaluator's verdict: the good candidates, best first.
  std::vector<Ranked> RankCandidates(Task& task, Peer& child,
                                     const std::vector<Peer*>& candidates) const;
  // Keeps the evaluator's order but takes parents only while their free upload adds up to the
  // child's booking need.
  std::vector<ChosenParent> SelectByCapacity(Task& task, Peer& child,
                                             const std::vector<Ranked>& evaluated);
  // A mesh: the child's current parents (in rank order), then the best ranked others, up to
  // candidate_parent_limit, no booking.
  std::vector<ChosenParent> SelectMesh(Task& task, Peer& child,
                                       const std::vector<Ranked>& evaluated) const;
  // Upload bandwidth to book for `child`: its download rate, or the fair share of the cluster's
  // uplinks per downloading host when that is lower; 0 when the child's rate is unknown.
  uint64_t BookingNeed(const Peer& child) const;
  // The parents of `ranked` in the child's IDC (in order); when there are none, those of other
  // IDCs that serve fewer than cross_idc_children_limit children outside their IDC.
  std::vector<Ranked> PreferOwnIdc(Task& task, Peer& child,
                                   const std::vector<Ranked>& ranked) const;

  const SchedulerConfig& config_;
  const Evaluator& evaluator_;
  const ResourceModel& model_;
  const df::Clock& clock_;
  const NetworkTopology* topology_ = nullptr;
};

}  // namespace df::scheduler
