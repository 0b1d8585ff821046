// The background thread and what it drives: pushes to hungry peers, schedule timeouts, garbage
// collection, capacity refreshes; and the StoreSync hooks. Every decision reads the injected
// clock; only the thread's wake-ups are on real time.
#include <algorithm>
#include <iterator>
#include <thread>

#include "common/log.h"
#include "scheduler/network_topology.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {
namespace {

// The background thread wakes at least this often to check schedule timeouts.
constexpr auto kTick = std::chrono::milliseconds(20);
// How stale the hosts, tasks and peers gauges may be.
constexpr auto kGaugesInterval = std::chrono::milliseconds(500);

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void Scheduler::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    last_round_ns_.store(SteadyNowNs(), std::memory_order_relaxed);
    wake_.wait_for(lock, kTick, [this] { return stop_ || work_pending_; });
    if (stop_) break;
    work_pending_ = false;
    BackgroundRoundLocked(lock, clock_.Now());
  }
}

std::string Scheduler::BackgroundHealth() const {
  const int64_t last = last_round_ns_.load(std::memory_order_relaxed);
  if (last == 0) return "";
  const auto stalled = std::chrono::nanoseconds(SteadyNowNs() - last);
  if (stalled < std::chrono::milliseconds(config_.background_stall_ms)) return "";
  return "scheduler background round stalled for " +
         std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(stalled).count()) +
         " ms (a lock held or a call stuck that long)";
}

void Scheduler::RunBackgroundRound() {
  std::unique_lock lock(mu_);
  BackgroundRoundLocked(lock, clock_.Now());
}

void Scheduler::BackgroundRoundLocked(std::unique_lock<std::mutex>& lock, Clock::time_point now) {
  if (now >= next_capacity_refresh_) {
    RefreshCapacitiesLocked(now);
    ApplyInferredGroupsLocked();
    RebalanceSeedChildrenLocked();
    next_capacity_refresh_ = now + CapacityEstimator::Options{}.bucket;
  }
  ServeHungryPeers(lock, now);
  if (now >= next_gc_) {
    CollectGarbageLocked(now);
    next_gc_ = now + std::chrono::milliseconds(config_.gc_interval_ms);
  }
  // The gauges follow registers and leaves within kGaugesInterval, not only GC; counting the
  // peers walks every task, so not on every tick.
  if (now >= next_gauges_update_) {
    UpdateGauges();
    next_gauges_update_ = now + kGaugesInterval;
  }
  auto jobs = TakeSeedJobs();
  if (!jobs.empty()) {
    lock.unlock();
    SendSeedJobs(std::move(jobs));
    lock.lock();
  }
}

void Scheduler::ServeHungryPeers(std::unique_lock<std::mutex>& lock, Clock::time_point now) {
  const auto push_interval = std::chrono::milliseconds(config_.push_interval_ms);
  std::vector<std::pair<std::string, std::string>> work;  // (task id, peer id)
  for (const auto& task_id : model_.hungry_tasks()) {
    if (const Task* task = model_.FindTask(task_id)) {
      for (const auto& peer_id : task->hungry) work.emplace_back(task_id, peer_id);
    }
  }
  bool yield = false;
  for (const auto& [task_id, peer_id] : work) {
    if (yield) {
      // One decision per lock hold: registers waiting for mu_ go first.
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
      if (stop_) return;
      yield = false;
    }
    Task* task = model_.FindTask(task_id);
    Peer* peer = task ? model_.FindPeer(*task, peer_id) : nullptr;
    if (!peer || !task->hungry.contains(peer_id)) continue;
    const bool changed =
        peer->needs_push || peer->seen_candidate_version != task->candidate_version ||
        (peer->seed_withheld &&
         now - peer->registered >= std::chrono::milliseconds(config_.weak_child_seed_delay_ms));
    if (changed && now - peer->last_push >= push_interval) {
      yield = true;
      if (ScheduleParents(*task, *peer, now, /*force_send=*/false) == ScheduleOutcome::kSent) {
        metrics_.pushes.Increment();
      }
    }  // else rate-limited: the next tick looks again
    if (peer->waiting) HandleWaiting(*task, *peer, now);
  }
}

void Scheduler::HandleWaiting(Task& task, Peer& peer, Clock::time_point now) {
  MaybeTriggerSeed(task, now);
  if (!CanBackToSource(task, peer)) return;  // others fetch from the origin; keep waiting
  if (!SeedUsableFor(task, now)) {
    SendBackToSource(task, peer, "no seed host and no parent: fetch from the origin",
                     metrics_.back_to_source_no_seed);
  } else if (now - peer.wait_since >= std::chrono::milliseconds(config_.schedule_timeout_ms)) {
    SendBackToSource(task, peer, "no parent within the schedule timeout",
                     metrics_.back_to_source_timeout);
  }
}

void Scheduler::CollectGarbage() {
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    CollectGarbageLocked(clock_.Now());
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
}

void Scheduler::CollectGarbageLocked(Clock::time_point now) {
  for (const std::string& host_id : model_.CollectGarbage(now)) {
    records_.RemoveHost(host_id);
    capacity_.RemoveHost(host_id);
    sync_->DeleteHost(host_id);                     // queued: no Store I/O under mu_
    if (topology_) topology_->RemoveHost(host_id);  // in memory; its store deletion is queued
  }
  UpdateGauges();
}

bool Scheduler::RefreshHostCapacity(Host& host) {
  const std::string& id = host.info.id();
  // The active rate counts against the base only when the link was asked for (nearly) all it
  // was thought to have. A capacity already lowered below the base keeps its evidence: lowering
  // it releases the bookings that proved it (children move to hosts that look free), and
  // judging it again on what is left booked made it jump back to the base and be lowered again
  // on every refresh. It rises when the link shows more (the headroom lets it).
  const uint64_t base =
      host.announced_upload() > 0 ? host.announced_upload() : config_.capacity_prior;
  const bool lowered = host.upload_capacity_bps > 0 && host.upload_capacity_bps < base;
  const bool fully_booked = host.upload_capacity_bps > 0 &&
                            (lowered || host.upload_allotted * 10 >= host.upload_capacity_bps * 9);
  const uint64_t up =
      capacity_.UploadCapacity(id, host.announced_upload(), config_.capacity_prior, fully_booked);
  const uint64_t down =
      capacity_.DownloadCapacity(id, host.announced_download(), config_.capacity_prior);
  auto moved = [](uint64_t from, uint64_t to) {
    const uint64_t diff = from > to ? from - to : to - from;
    return (from == 0) != (to == 0) || diff * 10 > from;
  };
  const bool changed =
      moved(host.upload_capacity_bps, up) || moved(host.download_capacity_bps, down);
  if (changed && spdlog::should_log(spdlog::level::debug)) {
    const CapacityEstimator::Learned l = capacity_.Get(id);
    DF_LOG_DEBUG(
        "capacity host_id={} up={} down={} booked_up={} up_peak={} up_busy={} up_active={} "
        "down_peak={} down_busy={}",
        id, up, down, host.upload_allotted, l.upload_peak, l.upload_busy, l.upload_active,
        l.download_peak, l.download_busy);
  }
  host.upload_capacity_bps = up;
  host.download_capacity_bps = down;
  if (!host.upload_capacity_evidence) {
    const CapacityEstimator::Learned l = capacity_.Get(id);
    host.upload_capacity_evidence = l.upload_peak > 0 || l.upload_busy > 0;
  }
  host.upload_capacity_evidence = host.upload_capacity_evidence || host.announced_upload() > 0;
  return changed;
}

void Scheduler::RefreshCapacities(Clock::time_point now) {
  std::lock_guard lock(mu_);
  RefreshCapacitiesLocked(now);
}

void Scheduler::ApplyInferredGroupsLocked() {
  auto groups = evaluator_->inferred_groups();
  const uint64_t version = groups ? groups->version : 0;
  if (version == applied_groups_version_) return;
  applied_groups_version_ = version;
  static const std::unordered_map<std::string, std::string> kNone;
  const auto applied = model_.ApplyInferredGroups(groups ? groups->group_of : kNone);
  DF_LOG_INFO(
      "inferred host groups version {} applied: {} hosts changed group, {} peers re-planned",
      version, applied.hosts_changed, applied.peers_replanned);
}

void Scheduler::RebalanceSeedChildrenLocked() {
  if (config_.parent_graph != "mesh" || config_.mesh_seed_children == 0) return;
  for (auto& [task_id, task] : model_.tasks()) {
    if (task->live_seed_peers == 0) continue;
    size_t moved = 0;
    auto push = [&](Peer& peer) {  // gains or loses the seed at its next decision
      peer.needs_push = true;
      model_.UpdateHunger(*task, peer);
      ++moved;
    };
    if (task->peers_hold_every_piece()) {
      // The tail: the seed serves anyone. Once, the peers that do not have it are offered it.
      if (task->seed_opened) continue;
      task->seed_opened = true;
      for (auto& [peer_id, peer] : task->peers) {
        if (peer->state == PeerState::kRunning) push(*peer);
      }
      DF_LOG_DEBUG("mesh seed open to every child task_id={} pushed={}", task->id, moved);
      continue;
    }
    std::vector<std::string> is;  // sorted, as Task::seed_children
    for (const Peer* p : model_.WidestUplinks(*task, config_.mesh_seed_children)) {
      is.push_back(p->id);
    }
    std::sort(is.begin(), is.end());
    std::vector<std::string> joined;
    std::set_difference(is.begin(), is.end(), task->seed_children.begin(),
                        task->seed_children.end(), std::back_inserter(joined));
    task->seed_children = std::move(is);
    const auto& set_ids = task->seed_children;
    for (const std::string& id : joined) {
      Peer* peer = model_.FindPeer(*task, id);
      if (peer && peer->state == PeerState::kRunning) push(*peer);
    }
    // Any other running peer that holds a seed as parent loses it (it may have got it at its
    // register, before the set was first computed, or left the set since).
    for (auto& [peer_id, peer] : task->peers) {
      if (peer->state != PeerState::kRunning || peer->needs_push ||
          std::binary_search(set_ids.begin(), set_ids.end(), peer_id)) {
        continue;
      }
      const auto& parents = task->dag.Parents(peer->vertex);
      if (std::any_of(parents.begin(), parents.end(), [&](Dag::Vertex v) {
            const Peer* p = task->PeerAt(v);
            return p && IsSeedPeer(*p);
          })) {
        push(*peer);
      }
    }
    // The pushes are served by ServeHungryPeers, which runs next in this round.
    if (moved > 0 && spdlog::should_log(spdlog::level::debug)) {
      std::string set;
      for (const std::string& id : set_ids) {
        const Peer* p = model_.FindPeer(*task, id);
        set += fmt::format(" {}@{}Mbit/s", id.substr(0, id.find('-')),
                           p ? p->host->upload_capacity() * 8 / 1000000 : 0);
      }
      DF_LOG_DEBUG("mesh seed children task_id={} moved={} now:{}", task->id, moved, set);
    }
  }
}

void Scheduler::RefreshCapacitiesLocked(Clock::time_point now) {
  capacity_.Advance(now);
  bool changed = false;
  std::unordered_map<const Host*, double> overbooked;  // host -> capacity / booked
  for (auto& [id, host] : model_.hosts()) {
    changed = RefreshHostCapacity(*host) || changed;
    if (host->upload_capacity() > 0 && host->upload_allotted > host->upload_capacity()) {
      overbooked[host.get()] =
          static_cast<double>(host->upload_capacity()) / static_cast<double>(host->upload_allotted);
    }
  }
  if (!changed) return;
  // A host that turned out slower than booked: its children's shares shrink in proportion, so
  // that they become hungry and take the difference elsewhere.
  for (auto& [task_id, task] : model_.tasks()) {
    for (auto& [peer_id, peer] : task->peers) {
      auto it = overbooked.find(peer->host.get());
      if (it != overbooked.end()) model_.ScaleAllotments(*task, *peer, it->second);
    }
  }
  // Bookings were made with the old values: children re-plan (hunger depends on the child's
  // download capacity, candidates on their parents' free upload).
  model_.InvalidateUploadShare();
  for (auto& [task_id, task] : model_.tasks()) {
    for (auto& [peer_id, peer] : task->peers) model_.UpdateHunger(*task, *peer);
    model_.BumpCandidates(*task);
  }
}

std::vector<LearnedCapacity> Scheduler::ExportCapacities() {
  std::lock_guard lock(mu_);
  std::vector<LearnedCapacity> out;
  const int64_t now = UnixMs();
  for (const auto& [host, learned] : capacity_.Snapshot()) {
    auto [up, down] = capacity_.SharedRates(host);
    if (up > 0 || down > 0) out.push_back({host, up, down, now});
  }
  return out;
}

std::vector<PairEstimate> Scheduler::ExportPairs() {
  std::lock_guard lock(mu_);
  std::vector<PairEstimate> out;
  const int64_t now = UnixMs();
  for (const auto& p : capacity_.Pairs()) {
    out.push_back({p.child_host, p.parent_host, p.bytes_per_sec, p.records, now});
  }
  return out;
}

void Scheduler::ImportCapacities(const std::vector<LearnedCapacity>& theirs) {
  std::lock_guard lock(mu_);
  const auto now = clock_.Now();
  for (const auto& c : theirs) {
    if (!model_.hosts().contains(c.host_id)) continue;  // only hosts this scheduler schedules
    capacity_.MergeRemote(c.host_id, c.upload_bytes_per_sec, c.download_bytes_per_sec, now);
  }
}

void Scheduler::UpdateGauges() {
  metrics_.hosts.Set(static_cast<double>(model_.hosts().size()));
  metrics_.tasks.Set(static_cast<double>(model_.tasks().size()));
  metrics_.peers.Set(static_cast<double>(model_.peer_count()));
}

}  // namespace df::scheduler
