#include "scheduler/scheduler.h"

#include <algorithm>
#include <thread>

#include "common/log.h"
#include "common/task_info.h"
#include "common/task_spec.h"
#include "scheduler/memory_store.h"
#include "scheduler/network_topology.h"

namespace df::scheduler {

Scheduler::Scheduler(SchedulerConfig config, std::unique_ptr<Evaluator> evaluator,
                     std::unique_ptr<SeedTrigger> seed_trigger, SchedulerMetrics* metrics,
                     std::unique_ptr<Store> store, const df::Clock* clock)
    : config_(std::move(config)),
      clock_(clock ? *clock : SteadyClock::Instance()),
      evaluator_(std::move(evaluator)),
      seed_trigger_(std::move(seed_trigger)),
      metrics_(*metrics),
      store_(store ? std::move(store) : std::make_unique<MemoryStore>()),
      model_(config_, clock_, [this] { WakeBackground(); }),
      selector_(config_, *evaluator_, model_, clock_),
      rng_(std::random_device{}()),
      next_gc_(clock_.Now() + std::chrono::milliseconds(config_.gc_interval_ms)) {
  StoreSync::Hooks hooks;
  hooks.export_capacities = [this] { return ExportCapacities(); };
  hooks.export_pairs = [this] { return ExportPairs(); };
  hooks.import_capacities = [this](const auto& theirs) { ImportCapacities(theirs); };
  sync_ = std::make_unique<StoreSync>(store_.get(), std::move(hooks), StoreSync::Options{},
                                      metrics_.store_up, metrics_.store_errors);
  if (!config_.dataset_dir.empty()) {
    DatasetWriter::Options options;
    options.dir = config_.dataset_dir;
    options.max_file_size_bytes = config_.dataset_max_file_size;
    options.max_files = config_.dataset_max_files;
    options.topology_interval = std::chrono::milliseconds(config_.dataset_topology_interval_ms);
    dataset_ = std::make_unique<DatasetWriter>(
        std::move(options), store_.get(),
        DatasetWriter::Metrics{metrics_.dataset_download_rows, metrics_.dataset_topology_rows,
                               metrics_.dataset_errors, metrics_.dataset_dropped});
  }
}

Scheduler::~Scheduler() {
  Stop();
  dataset_.reset();
  sync_.reset();
  // Waits for in-flight triggers; their callbacks still find this object alive.
  seed_trigger_.reset();
}

void Scheduler::Start() {
  worker_ = std::thread([this] { Run(); });
  sync_->Start();
  if (dataset_) dataset_->Start();
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (sync_) sync_->Stop();
  if (dataset_) dataset_->Stop();
}

void Scheduler::SetNetworkTopology(NetworkTopology* topology) {
  std::lock_guard lock(mu_);
  topology_ = topology;
  selector_.set_topology(topology);
  evaluator_->SetTopology(topology);
}

void Scheduler::WakeBackground() {
  work_pending_ = true;
  wake_.notify_one();
}

int64_t Scheduler::UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Hosts

Status Scheduler::AnnounceHost(const v1::Host& info, const std::string& caller_ip) {
  if (info.id().empty()) return InvalidArgument("announce host: empty host id");
  if (info.id().size() > 1024 || info.ip().size() > 64) {
    return InvalidArgument("announce host: id or ip too long");
  }
  if (info.grpc_port() < 0 || info.grpc_port() > 65535 || info.piece_port() < 0 ||
      info.piece_port() > 65535) {
    return InvalidArgument("announce host: port out of range");
  }
  metrics_.host_announces.Increment();
  std::lock_guard lock(mu_);
  auto known = model_.hosts().find(info.id());
  if (known == model_.hosts().end() && model_.hosts().size() >= config_.max_hosts) {
    return Unavailable("announce host: this scheduler keeps at most " +
                       std::to_string(config_.max_hosts) + " hosts (max_hosts)");
  }
  if (known != model_.hosts().end() && !caller_ip.empty() && known->second->announced &&
      known->second->info.ip() != info.ip() && known->second->info.ip() != caller_ip) {
    return Status(StatusCode::kPermissionDenied, "announce host: " + info.id() + " is at " +
                                                     known->second->info.ip() +
                                                     "; only that address may move it");
  }
  auto host = model_.TouchHost(info.id(), clock_.Now());
  host->info = info;
  host->announced = true;
  host->left = false;
  RefreshHostCapacity(*host);
  sync_->PutHost(info);
  model_.SetSeedHost(info.id(), host->is_seed());
  return Status::Ok();
}

Status Scheduler::LeaveHost(const std::string& host_id, const std::string& caller_ip) {
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    Host* host = model_.FindHost(host_id);
    if (!host) return Status::Ok();
    if (!caller_ip.empty() && host->info.ip() != caller_ip) {
      return Status(StatusCode::kPermissionDenied,
                    "leave host: " + host_id + " may only be removed from its own address");
    }
    model_.LeaveHost(*host);
    DF_LOG_INFO("host left host_id={}", host_id);
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  if (topology_) topology_->RemoveHost(host_id);  // its probes, both ways
  return Status::Ok();
}

size_t Scheduler::host_count() const {
  std::lock_guard lock(mu_);
  return model_.hosts().size();
}

// ---------------------------------------------------------------------------------------------
// Register and the first decision

Result<PeerKey> Scheduler::RegisterPeer(const v1::AnnouncePeerRequest& request,
                                        std::shared_ptr<PeerStream> stream) {
  metrics_.CountPeerMessage(request.request_case());
  if (!request.has_register_()) {
    return InvalidArgument("the first AnnouncePeer message must be register");
  }
  // The latency histogram measures real time whatever the injected clock says.
  const auto start = std::chrono::steady_clock::now();
  const v1::RegisterPeerRequest& reg = request.register_();
  PeerKey key;
  key.task_id = !reg.task().task_id().empty() ? reg.task().task_id() : request.task_id();
  key.peer_id = !reg.peer_id().empty() ? reg.peer_id() : request.peer_id();
  key.host_id = !reg.host_id().empty() ? reg.host_id() : request.host_id();
  if (key.task_id.empty()) return InvalidArgument("register: empty task id");
  if (key.peer_id.empty()) return InvalidArgument("register: empty peer id");
  if (key.host_id.empty()) return InvalidArgument("register: empty host id");
  if (key.peer_id.size() > 1024 || key.host_id.size() > 1024) {
    return InvalidArgument("register: peer or host id too long");
  }
  // The first registrant of a task decides what the seed fetches: its id must be the id of
  // what it describes, or anyone could make the swarm serve other bytes under a known id.
  const TaskSpec spec = SpecOf(reg.task());
  UrlPolicy policy;
  policy.allow_any_file = true;  // the seed checks file:// against its own directories
  if (Status s = ValidateTaskSpec(spec, policy); !s.ok())
    return InvalidArgument("register: " + s.message());
  if (Status s = CheckTaskId(spec, key.task_id); !s.ok()) return s;

  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    if (!model_.FindHost(key.host_id) && model_.hosts().size() >= config_.max_hosts) {
      return Unavailable("register: this scheduler keeps at most " +
                         std::to_string(config_.max_hosts) + " hosts (max_hosts)");
    }
    const auto now = clock_.Now();
    auto host = model_.TouchHost(key.host_id, now);
    if (!host->announced) {
      DF_LOG_WARN(
          "register from a host that never announced host_id={} peer_id={}; its peers "
          "are not offered as parents until it announces",
          key.host_id, key.peer_id);
    }
    if (!model_.FindTask(key.task_id) && model_.tasks().size() >= config_.max_tasks) {
      return Unavailable("register: this scheduler keeps at most " +
                         std::to_string(config_.max_tasks) + " tasks (max_tasks)");
    }
    Task& task = model_.FindOrCreateTask(key.task_id, reg.task(), now);
    Peer& peer = model_.ResetPeer(task, key.peer_id, std::move(host), std::move(stream), now);
    if (peer.host->is_seed()) task.digests_expected = true;
    for (uint32_t n : reg.finished_pieces()) peer.finished.Add(n);
    metrics_.registered_peers.Increment();
    DecideOnRegister(task, peer, now);
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  metrics_.schedule_latency_seconds.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return key;
}

void Scheduler::DecideOnRegister(Task& task, Peer& peer, Clock::time_point now) {
  if (task.content_length == 0) {
    SendEmptyTask(task, peer);
    return;
  }
  const bool seed = peer.host->is_seed();
  // A seed fetches from the origin until the swarm holds a copy the origin vouches for: peers
  // that say they finished prove nothing unless an origin fetcher reported digests.
  if (seed && !HasOriginCopy(task)) {
    SendBackToSource(task, peer, "seed peer: fetch the task from the origin",
                     metrics_.back_to_source_seed);
    return;
  }
  peer.registered = now;
  model_.SetState(task, peer, PeerState::kRunning);
  if (!seed) MaybeTriggerSeed(task, now);
  if (ScheduleParents(task, peer, now, /*force_send=*/true) != ScheduleOutcome::kNoCandidates) {
    return;
  }
  if (seed) {
    SendBackToSource(task, peer, "seed peer: no parent holds the task",
                     metrics_.back_to_source_seed);
  } else if (!SeedUsableFor(task, now) && CanBackToSource(task, peer)) {
    SendBackToSource(task, peer, "no seed host and no parent: fetch from the origin",
                     metrics_.back_to_source_no_seed);
  }
  // Otherwise the peer waits (it is hungry): the background thread pushes parents as soon as
  // candidates appear, or sends it back to source after schedule_timeout.
}

bool Scheduler::CanBackToSource(const Task& task, const Peer& peer) const {
  return peer.host->is_seed() || task.back_to_source_peers < config_.back_to_source_limit;
}

bool Scheduler::SeedUsableFor(const Task& task, Clock::time_point now) const {
  if (task.live_seed_peers > 0 || task.seed_trigger_pending) return true;
  return seed_trigger_ != nullptr && task.seed_trigger_attempts < config_.seed_trigger_attempts &&
         model_.PickSeedHost("", now) != nullptr;
}

void Scheduler::MaybeTriggerSeed(Task& task, Clock::time_point now) {
  if (!seed_trigger_ || task.live_seed_peers > 0 || task.seed_trigger_pending ||
      HasOriginCopy(task) || task.seed_trigger_attempts >= config_.seed_trigger_attempts) {
    return;
  }
  const Host* seed = model_.PickSeedHost(task.id, now);
  if (!seed) return;
  task.seed_trigger_pending = true;
  ++task.seed_trigger_attempts;
  seed_jobs_.push_back({seed->info, task.info});
  DF_LOG_INFO("trigger seed task_id={} seed_host_id={} attempt={}", task.id, seed->info.id(),
              task.seed_trigger_attempts);
}

std::vector<Scheduler::SeedJob> Scheduler::TakeSeedJobs() {
  std::vector<SeedJob> jobs;
  jobs.swap(seed_jobs_);
  return jobs;
}

void Scheduler::SendSeedJobs(std::vector<SeedJob> jobs) {
  for (auto& job : jobs) {
    metrics_.seed_triggers_sent.Increment();
    seed_trigger_->Trigger(job.seed, job.task, [this](const std::string& task_id, const Status& s) {
      OnSeedTriggerDone(task_id, s);
    });
  }
}

void Scheduler::OnSeedTriggerDone(const std::string& task_id, const Status& status) {
  if (status.ok()) return;
  metrics_.seed_triggers_failed.Increment();
  DF_LOG_WARN("seed trigger failed task_id={} error={}", task_id, status.ToString());
  std::lock_guard lock(mu_);
  Task* task = model_.FindTask(task_id);
  if (task && task->live_seed_peers == 0) {
    task->seed_trigger_pending = false;  // waiting peers retry or go back to source
    WakeBackground();
  }
}

// ---------------------------------------------------------------------------------------------
// Sending decisions

Scheduler::ScheduleOutcome Scheduler::ScheduleParents(Task& task, Peer& child,
                                                      Clock::time_point now, bool force_send) {
  child.seen_candidate_version = task.candidate_version;
  child.needs_push = false;
  const auto decision_start = std::chrono::steady_clock::now();  // real time, as the histogram
  const std::vector<ChosenParent> parents = selector_.Select(task, child, rng_);
  metrics_.decision_duration_seconds.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - decision_start).count());
  if (parents.empty()) {
    metrics_.decisions_no_candidates.Increment();
    return ScheduleOutcome::kNoCandidates;
  }

  auto chosen = [&](Dag::Vertex v) {
    return std::any_of(parents.begin(), parents.end(),
                       [v](const ChosenParent& p) { return p.peer->vertex == v; });
  };
  const auto old_parents = task.dag.Parents(child.vertex);  // copy: edited below
  if (!force_send && child.sent_parents && parents.size() == old_parents.size() &&
      std::all_of(old_parents.begin(), old_parents.end(), chosen)) {
    for (const ChosenParent& p : parents) {
      model_.SetAllotment(*p.peer, child, p.allotment_bytes_per_sec);
    }
    model_.UpdateHunger(task, child);
    metrics_.decisions_unchanged.Increment();
    return ScheduleOutcome::kUnchanged;
  }
  v1::AnnouncePeerResponse response;
  v1::NormalTaskResponse* normal = response.mutable_normal_task();
  for (Dag::Vertex v : old_parents) {
    if (chosen(v)) continue;
    Peer* p = task.PeerAt(v);
    if (!p) continue;
    model_.Unlink(task, *p, child);
    // A mesh drops a parent only to take a seed away from a child that is no longer among the
    // widest uplinks (SelectMesh): the peer must stop asking it. In a DAG the peer keeps a
    // dropped parent (docs/scheduler.md, "Taking a parent back").
    if (!task.dag.acyclic()) normal->add_removed_parent_ids(p->id);
  }
  for (const ChosenParent& p : parents) {
    model_.Link(task, *p.peer, child, p.allotment_bytes_per_sec);
  }
  model_.UpdateHunger(task, child);

  for (const ChosenParent& p : parents) {
    v1::CandidateParent* c = normal->add_candidate_parents();
    c->set_peer_id(p.peer->id);
    *c->mutable_host() = p.peer->host->info;
    c->set_finished_pieces(ReportedPieces(*p.peer, task));
  }
  if (task.content_length >= 0) {
    normal->mutable_task()->set_content_length(task.content_length);
    normal->mutable_task()->set_piece_length(task.piece_length);
    normal->mutable_task()->set_total_pieces(task.total_pieces);
  }
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string list;
    for (const ChosenParent& p : parents) {
      list += fmt::format("{}{}:{}", list.empty() ? "" : ",", p.peer->host->info.id(),
                          p.allotment_bytes_per_sec);
    }
    DF_LOG_DEBUG("parents task_id={} peer_id={} hungry={} parents={}", task.id, child.id,
                 task.hungry.contains(child.id), list);
  }
  if (child.stream) child.stream->Send(response);
  child.sent_parents = true;
  child.last_push = now;
  metrics_.decisions_sent.Increment();
  return ScheduleOutcome::kSent;
}

void Scheduler::SendBackToSource(Task& task, Peer& peer, const std::string& reason,
                                 prometheus::Counter& counter) {
  counter.Increment();
  model_.RemoveParents(task, peer);
  model_.SetState(task, peer, PeerState::kBackToSource);
  peer.sent_to_source = true;
  // Its digests are recorded, but it fetches from the origin only what it still misses: unlike
  // a seed's, the digests of the other pieces may never come (digests_expected stays as is).
  v1::AnnouncePeerResponse response;
  response.mutable_need_back_to_source()->set_reason(reason);
  if (peer.stream) peer.stream->Send(response);
  DF_LOG_DEBUG("back to source task_id={} peer_id={} reason={}", task.id, peer.id, reason);
}

void Scheduler::SendEmptyTask(Task& task, Peer& peer) {
  metrics_.empty_tasks.Increment();
  model_.SetState(task, peer, PeerState::kSucceeded);
  v1::AnnouncePeerResponse response;
  response.mutable_empty_task();
  if (peer.stream) peer.stream->Send(response);
}

void Scheduler::StreamClosed(const PeerKey& key, const PeerStream* stream) {
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    Task* task = model_.FindTask(key.task_id);
    Peer* peer = task ? model_.FindPeer(*task, key.peer_id) : nullptr;
    if (!peer || peer->stream.get() != stream) return;  // gone, or replaced by a new register
    peer->stream.reset();
    peer->updated = clock_.Now();
    if (peer->state == PeerState::kSucceeded || peer->state == PeerState::kFailed) {
      model_.UpdateHunger(*task, *peer);
    } else {
      model_.SetState(*task, *peer, PeerState::kLeft);
      model_.DetachPeer(*task, *peer);
    }
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
}

// ---------------------------------------------------------------------------------------------
// Queries

Result<v1::StatTaskResponse> Scheduler::StatTask(const std::string& task_id) const {
  std::lock_guard lock(mu_);
  const Task* found = model_.FindTask(task_id);
  if (!found) return NotFound("task " + task_id);
  const Task& task = *found;
  v1::StatTaskResponse r;
  r.set_task_id(task.id);
  r.set_content_length(task.content_length);
  r.set_total_pieces(task.total_pieces);
  uint32_t live = 0;
  for (const auto& [id, p] : task.peers) live += CanServe(p->state) ? 1 : 0;
  r.set_peer_count(live);
  r.set_finished_peer_count(task.succeeded_peers);
  r.set_has_seed(task.live_seed_peers > 0);
  return r;
}

std::optional<Scheduler::PeerSnapshot> Scheduler::GetPeer(const std::string& task_id,
                                                          const std::string& peer_id) const {
  std::lock_guard lock(mu_);
  const Task* task = model_.FindTask(task_id);
  const Peer* peer = task ? ResourceModel::FindPeer(*task, peer_id) : nullptr;
  if (!peer) return std::nullopt;
  PeerSnapshot s;
  s.state = peer->state;
  for (Dag::Vertex v : task->dag.Parents(peer->vertex)) {
    if (const Peer* parent = task->PeerAt(v)) s.parents.push_back(parent->id);
  }
  std::sort(s.parents.begin(), s.parents.end());
  s.finished_pieces = peer->finished.count();
  return s;
}

std::optional<Scheduler::HostCapacity> Scheduler::GetHostCapacity(
    const std::string& host_id) const {
  std::lock_guard lock(mu_);
  auto it = model_.hosts().find(host_id);
  if (it == model_.hosts().end()) return std::nullopt;
  return HostCapacity{capacity_.Get(host_id), it->second->upload_capacity(),
                      it->second->download_capacity(), it->second->upload_allotted};
}

}  // namespace df::scheduler
