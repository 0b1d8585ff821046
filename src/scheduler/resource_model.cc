#include "scheduler/resource_model.h"

#include <algorithm>
#include <functional>
#include <unordered_set>

#include "common/log.h"

namespace df::scheduler {

ResourceModel::ResourceModel(const SchedulerConfig& config, const df::Clock& clock,
                             std::function<void()> on_new_candidates)
    : config_(config), clock_(clock), on_new_candidates_(std::move(on_new_candidates)) {}

bool FinishedPieces::Add(uint32_t piece_number) {
  if (piece_number >= kMaxTrackedPieces) {
    ++count_;
    return true;
  }
  if (piece_number >= bits_.size()) bits_.resize(piece_number + 1);
  if (bits_[piece_number]) return false;
  bits_[piece_number] = true;
  ++count_;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Hosts

std::shared_ptr<Host> ResourceModel::TouchHost(const std::string& host_id, Clock::time_point now) {
  auto& host = hosts_[host_id];
  if (!host) {
    host = std::make_shared<Host>();
    host->info.set_id(host_id);
  }
  host->last_seen = now;
  return host;
}

Host* ResourceModel::FindHost(const std::string& host_id) const {
  auto it = hosts_.find(host_id);
  return it == hosts_.end() ? nullptr : it->second.get();
}

void ResourceModel::SetSeedHost(const std::string& host_id, bool seed) {
  if (seed) {
    seed_hosts_.insert(host_id);
  } else {
    seed_hosts_.erase(host_id);
  }
}

void ResourceModel::LeaveHost(Host& host) {
  host.left = true;
  seed_hosts_.erase(host.info.id());
  // Rare operation: a scan of every peer is simpler than an index from hosts to peers.
  for (auto& [task_id, task] : tasks_) {
    for (auto& [peer_id, peer] : task->peers) {
      if (peer->host.get() != &host || !CanServe(peer->state)) continue;
      SetState(*task, *peer, PeerState::kLeft);
      DetachPeer(*task, *peer);
    }
  }
}

const Host* ResourceModel::PickSeedHost(const std::string& task_id, Clock::time_point now) const {
  std::vector<const Host*> alive;
  for (const auto& id : seed_hosts_) {
    const Host* h = FindHost(id);
    if (!h || h->left || h->info.ip().empty() || h->info.grpc_port() <= 0) continue;
    if (now - h->last_seen > std::chrono::milliseconds(config_.host_ttl_ms)) continue;
    alive.push_back(h);
  }
  if (alive.empty()) return nullptr;
  // The same task goes to the same seed host (as long as the set of seeds is stable).
  return alive[std::hash<std::string>{}(task_id) % alive.size()];
}

uint64_t ResourceModel::UploadShare(Clock::time_point now) const {
  if (upload_share_valid_ && now - upload_share_at_ < std::chrono::seconds(1)) {
    return upload_share_;
  }
  uint64_t supply = 0, downloaders = 0;
  bool unknown = false;
  for (const auto& [id, host] : hosts_) {
    if (!host->reachable()) continue;
    const uint64_t up = host->upload_capacity();
    if (up == 0) {
      unknown = true;  // an unknown uplink: the share cannot be known either
      break;
    }
    supply += up;
    if (!host->is_seed()) ++downloaders;
  }
  upload_share_ = unknown || downloaders == 0 ? 0 : supply / downloaders;
  upload_share_at_ = now;
  upload_share_valid_ = true;
  return upload_share_;
}

// ---------------------------------------------------------------------------------------------
// Tasks and peers

Task* ResourceModel::FindTask(const std::string& task_id) const {
  auto it = tasks_.find(task_id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

Peer* ResourceModel::FindPeer(const Task& task, const std::string& peer_id) {
  auto it = task.peers.find(peer_id);
  return it == task.peers.end() ? nullptr : it->second.get();
}

Task& ResourceModel::FindOrCreateTask(const std::string& task_id,
                                      const df::scheduler::v1::TaskInfo& info,
                                      Clock::time_point now) {
  auto& task = tasks_[task_id];
  if (!task) {
    task = std::make_unique<Task>();
    task->id = task_id;
    task->info = info;
    task->info.set_task_id(task_id);
    task->info.set_content_length(-1);  // the known size lives in Task, set when learned
    task->dag.set_acyclic(config_.parent_graph != "mesh");
  }
  // A registrant's idea of the size is not learned: only a peer that fetched from the origin
  // (a seed, or a peer sent back to source) can tell it (Scheduler::IsSizeAuthority).
  task->updated = now;
  return *task;
}

Peer& ResourceModel::ResetPeer(Task& task, const std::string& peer_id, std::shared_ptr<Host> host,
                               std::shared_ptr<PeerStream> stream, Clock::time_point now) {
  auto& slot = task.peers[peer_id];
  if (slot) {
    // A peer registering again (new stream): forget its scheduling state, keep its uploads and
    // its place in the dag.
    SetState(task, *slot, PeerState::kPending);
    DetachPeer(task, *slot);
    slot->host->peer_count--;
    auto fresh = std::make_unique<Peer>();
    fresh->vertex = slot->vertex;
    fresh->upload_costs = slot->upload_costs;
    fresh->upload_success = slot->upload_success;
    fresh->upload_failure = slot->upload_failure;
    slot = std::move(fresh);
  } else {
    slot = std::make_unique<Peer>();
    slot->vertex = task.dag.AddVertex();
  }
  Peer& peer = *slot;
  peer.id = peer_id;
  peer.host = std::move(host);
  peer.seed = peer.host->is_seed();
  peer.host->peer_count++;
  peer.stream = std::move(stream);
  peer.updated = now;
  if (task.by_vertex.size() <= peer.vertex) task.by_vertex.resize(peer.vertex + 1);
  task.by_vertex[peer.vertex] = &peer;
  return peer;
}

void ResourceModel::BumpCandidates(Task& task) {
  ++task.candidate_version;
  if (!task.hungry.empty()) on_new_candidates_();
}

void ResourceModel::SetState(Task& task, Peer& peer, PeerState state) {
  const PeerState old = peer.state;
  if (old == state) return;
  const bool seed = peer.seed;
  auto adjust = [&](PeerState s, int delta) {
    if (s == PeerState::kBackToSource && !seed) task.back_to_source_peers += delta;
    if (s == PeerState::kSucceeded) task.succeeded_peers += delta;
    if (CanServe(s) && seed) task.live_seed_peers += delta;
  };
  adjust(old, -1);
  adjust(state, +1);
  peer.state = state;
  if ((!CanServe(old) && CanServe(state)) || state == PeerState::kSucceeded) BumpCandidates(task);
  if (seed && CanServe(old) && !CanServe(state) && task.live_seed_peers == 0) {
    task.seed_trigger_pending = false;  // the seed peer failed: a new trigger may go out
  }
  if (state != PeerState::kRunning) peer.waiting = false;
  UpdateHunger(task, peer);
}

void ResourceModel::UpdateHunger(Task& task, Peer& peer) {
  const size_t parents = task.dag.Parents(peer.vertex).size();
  const uint64_t need = peer.host->download_capacity();
  const bool hungry = peer.state == PeerState::kRunning && peer.stream != nullptr &&
                      (peer.needs_push || (parents < config_.candidate_parent_limit &&
                                           (need == 0 || parents == 0 || peer.allotted() < need)));
  if (hungry) {
    if (task.hungry.insert(peer.id).second) hungry_tasks_.insert(task.id);
    if (parents == 0 && !peer.waiting) {
      peer.waiting = true;
      peer.wait_since = clock_.Now();
    }
  } else if (task.hungry.erase(peer.id) > 0 && task.hungry.empty()) {
    hungry_tasks_.erase(task.id);
  }
  if (parents > 0) peer.waiting = false;
}

std::vector<const Peer*> ResourceModel::WidestUplinks(const Task& task, size_t limit,
                                                      const Peer* also) const {
  std::vector<const Peer*> out;
  if (limit == 0) return out;
  for (const Peer* p : task.by_vertex) {
    if (!p || IsSeedPeer(*p)) continue;
    if (p->state == PeerState::kRunning || p == also) out.push_back(p);
  }
  auto width = [](const Peer* p) {
    const uint64_t c = p->host->upload_capacity();
    return c == 0 ? UINT64_MAX : c;
  };
  auto wider = [&](const Peer* a, const Peer* b) {
    const uint64_t wa = width(a), wb = width(b);
    return wa != wb ? wa > wb : a->vertex < b->vertex;
  };
  if (out.size() > limit) {
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(limit), out.end(),
                     wider);
    out.resize(limit);
  }
  std::sort(out.begin(), out.end(), wider);
  return out;
}

// ---------------------------------------------------------------------------------------------
// DAG edges

void ResourceModel::Link(Task& task, Peer& parent, Peer& child, uint64_t allotment) {
  if (!task.dag.HasEdge(parent.vertex, child.vertex)) {
    if (!task.dag.AddEdge(parent.vertex, child.vertex).ok()) return;  // would close a cycle
    parent.host->upload_children++;
    if (CrossIdc(parent, child)) task.cross_idc_children[GroupOf(*parent.host)]++;
  }
  SetAllotment(parent, child, allotment);
}

void ResourceModel::SetAllotment(Peer& parent, Peer& child, uint64_t allotment) {
  uint64_t& a = child.parent_allotments[parent.vertex];
  parent.host->upload_allotted -= std::min(parent.host->upload_allotted, a);
  a = allotment;
  parent.host->upload_allotted += a;
  if (a == 0) child.parent_allotments.erase(parent.vertex);
}

void ResourceModel::Unlink(Task& task, Peer& parent, Peer& child) {
  if (!task.dag.HasEdge(parent.vertex, child.vertex)) return;
  SetAllotment(parent, child, 0);
  task.dag.RemoveEdge(parent.vertex, child.vertex);
  if (parent.host->upload_children > 0) parent.host->upload_children--;
  if (CrossIdc(parent, child)) {
    auto it = task.cross_idc_children.find(GroupOf(*parent.host));
    if (it != task.cross_idc_children.end() && --it->second == 0) task.cross_idc_children.erase(it);
  }
}

ResourceModel::GroupsApplied ResourceModel::ApplyInferredGroups(
    const std::unordered_map<std::string, std::string>& group_of) {
  GroupsApplied out;
  for (auto& [id, host] : hosts_) {
    auto it = group_of.find(id);
    static const std::string kNone;
    const std::string& group = it == group_of.end() ? kNone : it->second;
    if (host->inferred_group == group) continue;
    host->inferred_group = group;
    ++out.hosts_changed;
  }
  if (out.hosts_changed == 0) return out;
  for (auto& [task_id, task] : tasks_) {
    task->cross_idc_children.clear();
    for (auto& [peer_id, child] : task->peers) {
      bool crosses = false;
      for (Dag::Vertex v : task->dag.Parents(child->vertex)) {
        Peer* parent = task->PeerAt(v);
        if (parent && CrossIdc(*parent, *child)) {
          task->cross_idc_children[GroupOf(*parent->host)]++;
          crosses = true;
        }
      }
      // Re-planned under the IDC rule (ParentSelector::PreferOwnIdc), as if the groups had been
      // announced; a DAG keeps one root per group that may still take parents outside it. A child
      // that announced an idc is in no inferred group: nothing changed for it.
      if (crosses && child->state == PeerState::kRunning && !child->needs_push &&
          child->host->info.idc().empty()) {
        child->needs_push = true;
        UpdateHunger(*task, *child);
        ++out.peers_replanned;
      }
    }
  }
  return out;
}

void ResourceModel::RemoveParents(Task& task, Peer& child) {
  const auto parents = task.dag.Parents(child.vertex);  // copy: Unlink edits the list
  for (Dag::Vertex v : parents) {
    if (Peer* parent = task.PeerAt(v)) Unlink(task, *parent, child);
  }
  UpdateHunger(task, child);
}

void ResourceModel::DetachPeer(Task& task, Peer& peer) {
  RemoveParents(task, peer);
  const auto children = task.dag.Children(peer.vertex);
  for (Dag::Vertex v : children) {
    Peer* child = task.PeerAt(v);
    if (!child) continue;
    Unlink(task, peer, *child);
    child->needs_push = true;  // look for a replacement parent
    UpdateHunger(task, *child);
  }
  if (!children.empty() && !task.hungry.empty()) on_new_candidates_();
}

void ResourceModel::RemovePeer(Task& task, Peer& peer) {
  if (CanServe(peer.state) || peer.state == PeerState::kPending) {
    SetState(task, peer, PeerState::kLeft);
  }
  DetachPeer(task, peer);
  task.dag.RemoveVertex(peer.vertex);
  task.by_vertex[peer.vertex] = nullptr;
  if (task.hungry.erase(peer.id) > 0 && task.hungry.empty()) hungry_tasks_.erase(task.id);
  peer.host->peer_count--;
  const std::string id = peer.id;  // erase destroys `peer`
  task.peers.erase(id);
}

void ResourceModel::ScaleAllotments(Task& task, Peer& parent, double ratio) {
  const auto& children = task.dag.Children(parent.vertex);
  for (Dag::Vertex v : children) {
    Peer* child = task.PeerAt(v);
    if (!child) continue;
    auto it = child->parent_allotments.find(parent.vertex);
    if (it == child->parent_allotments.end()) continue;
    SetAllotment(
        parent, *child,
        std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(it->second) * ratio)));
  }
}

// ---------------------------------------------------------------------------------------------
// Garbage collection

std::vector<std::string> ResourceModel::CollectGarbage(Clock::time_point now) {
  const auto peer_ttl = std::chrono::milliseconds(config_.peer_ttl_ms);
  const auto task_ttl = std::chrono::milliseconds(config_.task_ttl_ms);
  const auto host_ttl = std::chrono::milliseconds(config_.host_ttl_ms);
  std::unordered_set<const Host*> gone_hosts;
  for (const auto& [id, host] : hosts_) {
    if (host->left || now - host->last_seen > host_ttl) gone_hosts.insert(host.get());
  }
  size_t removed_peers = 0;
  for (auto t = tasks_.begin(); t != tasks_.end();) {
    Task& task = *t->second;
    std::vector<Peer*> doomed;
    for (auto& [id, p] : task.peers) {
      const bool host_gone = gone_hosts.contains(p->host.get());
      const bool finished_with = p->state == PeerState::kFailed || p->state == PeerState::kLeft;
      const bool idle = p->stream == nullptr && now - p->updated > peer_ttl;
      if (host_gone || finished_with || idle) doomed.push_back(p.get());
    }
    for (Peer* p : doomed) RemovePeer(task, *p);
    removed_peers += doomed.size();
    if (task.peers.empty() && now - task.updated > task_ttl) {
      hungry_tasks_.erase(task.id);
      t = tasks_.erase(t);
    } else {
      ++t;
    }
  }
  std::vector<std::string> removed_hosts;
  for (auto h = hosts_.begin(); h != hosts_.end();) {
    if (gone_hosts.contains(h->second.get()) && h->second->peer_count == 0) {
      removed_hosts.push_back(h->first);
      seed_hosts_.erase(h->first);
      h = hosts_.erase(h);
    } else {
      ++h;
    }
  }
  if (removed_peers > 0) DF_LOG_DEBUG("gc removed_peers={}", removed_peers);
  return removed_hosts;
}

size_t ResourceModel::peer_count() const {
  size_t peers = 0;
  for (const auto& [id, task] : tasks_) peers += task->peers.size();
  return peers;
}

}  // namespace df::scheduler
