#include "scheduler/parent_selector.h"

#include <algorithm>

#include "scheduler/network_topology.h"

namespace df::scheduler {
namespace {

ParentInfo MakeParentInfo(const Peer& p, const Task& task) {
  ParentInfo info;
  info.peer_id = p.id;
  info.host_id = p.host->info.id();
  info.state = p.state;
  info.finished_pieces = ReportedPieces(p, task);
  info.is_seed = p.host->is_seed();
  info.idc = p.host->info.idc();
  info.location = p.host->info.location();
  info.concurrent_upload_limit = p.host->info.concurrent_upload_limit();
  info.concurrent_uploads = std::max(p.host->info.concurrent_uploads(), p.host->upload_children);
  info.upload_capacity = p.host->upload_capacity();
  info.upload_allotted = p.host->upload_allotted;
  info.upload_success = p.host->upload_success;
  info.upload_failure = p.host->upload_failure;
  info.piece_costs_ns = p.upload_costs.Samples();
  return info;
}

ChildInfo MakeChildInfo(const Peer& child) {
  ChildInfo info;
  info.peer_id = child.id;
  info.host_id = child.host->info.id();
  info.idc = child.host->info.idc();
  info.location = child.host->info.location();
  info.download_capacity = child.host->download_capacity();
  info.bad_parent_ids = child.bad_parents;
  return info;
}

}  // namespace

ParentSelector::ParentSelector(const SchedulerConfig& config, const Evaluator& evaluator,
                               const ResourceModel& model, const df::Clock& clock)
    : config_(config), evaluator_(evaluator), model_(model), clock_(clock) {}

std::vector<ChosenParent> ParentSelector::Select(Task& task, Peer& child, std::mt19937_64& rng) {
  auto candidates = CollectCandidates(task, child, rng);
  if (candidates.empty()) return {};
  auto ranked = RankCandidates(task, child, candidates);
  if (!task.dag.acyclic()) return SelectMesh(task, child, ranked);
  return SelectByCapacity(task, child, ranked);
}

std::vector<Peer*> ParentSelector::CollectCandidates(Task& task, Peer& child,
                                                     std::mt19937_64& rng) const {
  // Only the child's descendants could close a cycle; a new child has none, and a mesh allows
  // cycles.
  std::vector<bool> descendants;
  if (task.dag.acyclic() && !task.dag.Children(child.vertex).empty()) {
    descendants = task.dag.Descendants(child.vertex);
  }
  const auto& current = task.dag.Parents(child.vertex);
  std::vector<Peer*> keep;  // current parents, always evaluated (stable parent sets)
  std::vector<Peer*> others;
  others.reserve(task.peers.size());
  for (Dag::Vertex v = 0; v < task.by_vertex.size(); ++v) {
    Peer* p = task.by_vertex[v];
    if (!p || p == &child || !CanServe(p->state) || !p->host->reachable()) continue;
    if (v < descendants.size() && descendants[v]) continue;
    if (!child.bad_parents.empty() && child.bad_parents.contains(p->id)) continue;
    const bool is_parent = std::find(current.begin(), current.end(), v) != current.end();
    (is_parent ? keep : others).push_back(p);
  }
  const size_t limit = config_.filter_parent_limit;
  const size_t room = limit > keep.size() ? limit - keep.size() : 0;
  if (others.size() > room) {
    // Partial Fisher-Yates: a uniform sample of `room` candidates.
    for (size_t i = 0; i < room; ++i) {
      std::uniform_int_distribution<size_t> pick(i, others.size() - 1);
      std::swap(others[i], others[pick(rng)]);
    }
    others.resize(room);
  }
  keep.insert(keep.end(), others.begin(), others.end());
  return keep;
}

std::vector<ParentSelector::Ranked> ParentSelector::RankCandidates(
    Task& task, Peer& child, const std::vector<Peer*>& candidates) const {
  std::vector<ParentInfo> infos;
  infos.reserve(candidates.size());
  for (Peer* p : candidates) infos.push_back(MakeParentInfo(*p, task));
  if (topology_) {  // in-memory lookups only (network_topology.h): no I/O under the mutex
    for (size_t i = 0; i < candidates.size(); ++i) {
      const std::string& parent_host = candidates[i]->host->info.id();
      infos[i].rtt_ns = topology_->AverageRtt(child.host->info.id(), parent_host).value_or(0);
      infos[i].probe_failures = topology_->ProbeFailures(parent_host);
    }
  }
  auto scored = evaluator_.Evaluate(MakeChildInfo(child), infos, TaskView{task.total_pieces});
  std::vector<Ranked> order;
  order.reserve(scored.size());
  for (const auto& s : scored) {
    if (s.index < candidates.size()) {
      order.push_back({candidates[s.index], s.score, s.predicted_bytes_per_sec});
    }
  }
  return order;
}

uint64_t ParentSelector::BookingNeed(const Peer& child) const {
  const uint64_t download = child.host->download_capacity();
  if (download == 0) return 0;
  // When the uplinks of the cluster add up to less than its downlinks (hetero links), a child
  // that booked its whole downlink would leave the children after it nothing, and which children
  // starve would depend on who registered first. Each child books the fair share instead: the
  // sum of the announced uplinks over the hosts that download (seeds only upload). Equal links:
  // the share is at least the downlink and nothing changes.
  const uint64_t share = model_.UploadShare(clock_.Now());
  return share == 0 ? download : std::min(download, share);
}

std::vector<ParentSelector::Ranked> ParentSelector::PreferOwnIdc(
    Task& task, Peer& child, const std::vector<Ranked>& ranked) const {
  if (GroupOf(*child.host).empty()) return ranked;
  std::vector<Ranked> out;
  out.reserve(ranked.size());
  for (const Ranked& r : ranked) {
    if (!CrossIdc(*r.peer, child)) out.push_back(r);
  }
  // Peers of its own IDC, even fully booked ones, serve a child better than another IDC: the
  // bytes are in the IDC already and the links inside are not the bottleneck.
  if (!out.empty()) return out;
  const uint32_t limit = config_.cross_idc_children_limit;
  for (const Ranked& r : ranked) {
    if (!CrossIdc(*r.peer, child)) continue;
    if (limit > 0) {
      const std::string& idc = GroupOf(*r.peer->host);
      auto it = task.cross_idc_children.find(idc);
      uint32_t served = it == task.cross_idc_children.end() ? 0 : it->second;
      // The child's own current edges from that IDC are being re-planned: they count as free.
      for (Dag::Vertex v : task.dag.Parents(child.vertex)) {
        Peer* parent = task.PeerAt(v);
        if (parent && CrossIdc(*parent, child) && GroupOf(*parent->host) == idc && served > 0) {
          --served;
        }
      }
      if (served >= limit) continue;
    }
    out.push_back(r);
  }
  return out;
}

bool ParentSelector::MaySeedServe(const Task& task, const Peer& child) const {
  if (config_.mesh_seed_children == 0 || task.peers_hold_every_piece()) return true;
  const auto widest = model_.WidestUplinks(task, config_.mesh_seed_children, &child);
  return std::find(widest.begin(), widest.end(), &child) != widest.end();
}

std::vector<ChosenParent> ParentSelector::SelectMesh(Task& task, Peer& child,
                                                     const std::vector<Ranked>& evaluated) const {
  std::vector<Ranked> ranked = PreferOwnIdc(task, child, evaluated);
  if (ranked.empty()) ranked = evaluated;
  // A seed serves only the widest uplinks of the task (mesh_seed_children), unless nobody else
  // could serve this child.
  const bool may_seed = MaySeedServe(task, child);
  auto is_seed = [](const Ranked& r) { return IsSeedPeer(*r.peer); };
  if (!may_seed && !std::all_of(ranked.begin(), ranked.end(), is_seed)) {
    std::erase_if(ranked, is_seed);
  }
  // A parent the child already has keeps its place: dropping one would cancel the transfers on
  // its connection for a parent ranked a little higher. A seed comes first all the same: a child
  // that joined the widest uplinks with all its parent slots taken must still get it (it then
  // loses its last current parent).
  const auto& current = task.dag.Parents(child.vertex);
  auto is_current = [&](const Ranked& r) {
    return std::find(current.begin(), current.end(), r.peer->vertex) != current.end();
  };
  std::stable_partition(ranked.begin(), ranked.end(), is_current);
  if (may_seed) std::stable_partition(ranked.begin(), ranked.end(), is_seed);
  std::vector<ChosenParent> out;
  for (const Ranked& r : ranked) {
    if (out.size() == config_.candidate_parent_limit) break;
    out.push_back({r.peer, 0, r.score});
  }
  return out;
}

std::vector<ChosenParent> ParentSelector::SelectByCapacity(Task& task, Peer& child,
                                                           const std::vector<Ranked>& evaluated) {
  std::vector<ChosenParent> out;
  // IDC first: parents in the child's IDC; without any, those of IDCs that may still serve one
  // more child outside (cross_idc_children_limit). Only when that leaves nobody, anyone.
  std::vector<Ranked> ranked = PreferOwnIdc(task, child, evaluated);
  if (ranked.empty()) ranked = evaluated;
  const uint64_t need = BookingNeed(child);
  if (need == 0) {  // the child did not say what it can receive: no accounting
    for (const Ranked& r : ranked) {
      if (out.size() == config_.candidate_parent_limit) break;
      out.push_back({r.peer, 0, r.score});
    }
    return out;
  }
  // The seed's uplink carries data nobody else has yet. A child whose uplink is below what it
  // books (its downlink or the fair share) could pass it on only slowly, so for
  // weak_child_seed_delay after it registered it takes other parents, or waits, while children that
  // register in the same burst with wider uplinks book the seed: which children get the seed must
  // not depend on who came first.
  child.seed_withheld = false;
  const uint64_t up = child.host->upload_capacity();
  if (up > 0 && up < need &&
      clock_.Now() - child.registered <
          std::chrono::milliseconds(config_.weak_child_seed_delay_ms)) {
    std::erase_if(ranked, [](const Ranked& r) { return r.peer->host->is_seed(); });
    if (ranked.empty()) {
      child.seed_withheld = true;  // the background thread looks again when the delay is over
      return out;
    }
  }
  // The child's own reservations count as free for it: it is being re-planned.
  auto own = [&](const Peer& p) {
    auto it = child.parent_allotments.find(p.vertex);
    return it == child.parent_allotments.end() ? uint64_t{0} : it->second;
  };
  uint64_t left = need;
  for (const Ranked& r : ranked) {
    if (out.size() == config_.candidate_parent_limit || left == 0) break;
    const Host& host = *r.peer->host;
    const uint64_t cap = host.upload_capacity();
    uint64_t free = left;  // a parent of unknown capacity can give what is asked
    if (cap > 0) {
      const uint64_t used = host.upload_allotted - std::min(host.upload_allotted, own(*r.peer));
      free = cap > used ? cap - used : 0;
    }
    // A host with no evidence of its capacity (neither announced nor seen in piece records)
    // books at the prior; the evaluator's estimate of this very edge, when it has one, is better.
    if (!host.upload_capacity_evidence && r.predicted_bytes_per_sec >= 1) {
      free = std::min(free, static_cast<uint64_t>(r.predicted_bytes_per_sec));
    }
    // Slivers below 1/8 of the need would add a parent that cannot carry a share.
    if (free == 0 || (free < need / 8 && free < left)) continue;
    const uint64_t take = std::min(free, left);
    out.push_back({r.peer, take, r.score});
    left -= take;
  }
  if (out.empty() && !ranked.empty()) {
    // Every candidate is fully booked (uploads add up to less than the children need, as on
    // hetero links): share the least booked ones, several of them, so that the shortfall is
    // spread the way a mesh spreads it instead of landing on one parent.
    auto load = [](const Ranked& r) {
      const uint64_t cap = r.peer->host->upload_capacity();
      return cap == 0
                 ? 0.0
                 : static_cast<double>(r.peer->host->upload_allotted) / static_cast<double>(cap);
    };
    std::vector<Ranked> least(ranked.begin(), ranked.end());
    std::stable_sort(least.begin(), least.end(),
                     [&](const Ranked& a, const Ranked& b) { return load(a) < load(b); });
    for (const Ranked& r : least) {
      if (out.size() == config_.candidate_parent_limit) break;
      out.push_back({r.peer, 0, r.score});
    }
  }
  return out;
}

}  // namespace df::scheduler
