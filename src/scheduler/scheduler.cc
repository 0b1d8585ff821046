#include "scheduler/scheduler.h"

#include <algorithm>
#include <functional>
#include <thread>

#include "common/log.h"
#include "common/task_info.h"
#include "common/task_spec.h"
#include "scheduler/memory_store.h"
#include "scheduler/network_topology.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;

// The background thread wakes at least this often to check schedule timeouts.
constexpr auto kTick = std::chrono::milliseconds(20);

// A piece record claiming more than this (400 Gbit/s) or taking longer than an hour is not a
// measurement: it is ignored rather than allowed to inflate or deflate learned capacities.
constexpr double kMaxPlausibleBytesPerSec = 50e9;
constexpr uint64_t kMaxPlausibleCostNs = 3600ull * 1'000'000'000;

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Parent and child announced different IDCs (a host without one is in every IDC).
bool CrossIdc(const Peer& parent, const Peer& child) {
  const std::string& a = parent.host->info.idc();
  const std::string& b = child.host->info.idc();
  return !a.empty() && !b.empty() && a != b;
}

// A succeeded peer holds every piece, whatever its reports added up to.
uint32_t ReportedPieces(const Peer& p, const Task& task) {
  return p.state == PeerState::kSucceeded && task.total_pieces > 0 ? task.total_pieces
                                                                   : p.finished.count();
}

ParentInfo MakeParentInfo(const Peer& p, const Task& task) {
  ParentInfo info;
  info.peer_id = p.id;
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

// What the records dataset says of `host` now (requires the Scheduler's mutex).
DatasetHost DatasetHostOf(const Host& host) {
  return DatasetHost{host.info.id(),
                     host.info.ip(),
                     host.info.idc(),
                     host.info.location(),
                     host.is_seed(),
                     host.announced_upload(),
                     host.announced_download(),
                     host.upload_capacity(),
                     host.download_capacity()};
}

}  // namespace

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

Scheduler::Scheduler(SchedulerConfig config, std::unique_ptr<Evaluator> evaluator,
                     std::unique_ptr<SeedTrigger> seed_trigger, SchedulerMetrics* metrics,
                     std::unique_ptr<Store> store)
    : config_(std::move(config)),
      evaluator_(std::move(evaluator)),
      seed_trigger_(std::move(seed_trigger)),
      metrics_(*metrics),
      store_(store ? std::move(store) : std::make_unique<MemoryStore>()),
      rng_(std::random_device{}()),
      next_gc_(Clock::now() + std::chrono::milliseconds(config_.gc_interval_ms)) {
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
  auto known = hosts_.find(info.id());
  if (known == hosts_.end() && hosts_.size() >= config_.max_hosts) {
    return Unavailable("announce host: this scheduler keeps at most " +
                       std::to_string(config_.max_hosts) + " hosts (max_hosts)");
  }
  if (known != hosts_.end() && !caller_ip.empty() && known->second->announced &&
      known->second->info.ip() != info.ip() && known->second->info.ip() != caller_ip) {
    return Status(StatusCode::kPermissionDenied, "announce host: " + info.id() + " is at " +
                                                     known->second->info.ip() +
                                                     "; only that address may move it");
  }
  auto host = TouchHost(info.id(), Clock::now());
  host->info = info;
  host->announced = true;
  host->left = false;
  RefreshHostCapacity(*host);
  sync_->PutHost(info);
  if (host->is_seed()) {
    seed_hosts_.insert(info.id());
  } else {
    seed_hosts_.erase(info.id());
  }
  return Status::Ok();
}

Status Scheduler::LeaveHost(const std::string& host_id, const std::string& caller_ip) {
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    auto it = hosts_.find(host_id);
    if (it == hosts_.end()) return Status::Ok();
    if (!caller_ip.empty() && it->second->info.ip() != caller_ip) {
      return Status(StatusCode::kPermissionDenied,
                    "leave host: " + host_id + " may only be removed from its own address");
    }
    it->second->left = true;
    seed_hosts_.erase(host_id);
    // Rare operation: a scan of every peer is simpler than an index from hosts to peers.
    for (auto& [task_id, task] : tasks_) {
      for (auto& [peer_id, peer] : task->peers) {
        if (peer->host.get() != it->second.get() || !CanServe(peer->state)) continue;
        SetState(*task, *peer, PeerState::kLeft);
        DetachPeer(*task, *peer);
      }
    }
    DF_LOG_INFO("host left host_id={}", host_id);
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  if (topology_) topology_->RemoveHost(host_id);  // its probes, both ways
  return Status::Ok();
}

std::shared_ptr<Host> Scheduler::TouchHost(const std::string& host_id, Clock::time_point now) {
  auto& host = hosts_[host_id];
  if (!host) {
    host = std::make_shared<Host>();
    host->info.set_id(host_id);
  }
  host->last_seen = now;
  return host;
}

size_t Scheduler::host_count() const {
  std::lock_guard lock(mu_);
  return hosts_.size();
}

bool Scheduler::SeedHostAvailable(Clock::time_point now) const {
  return PickSeedHost("", now) != nullptr;
}

const Host* Scheduler::PickSeedHost(const std::string& task_id, Clock::time_point now) const {
  std::vector<const Host*> alive;
  for (const auto& id : seed_hosts_) {
    auto it = hosts_.find(id);
    if (it == hosts_.end()) continue;
    const Host& h = *it->second;
    if (h.left || h.info.ip().empty() || h.info.grpc_port() <= 0) continue;
    if (now - h.last_seen > std::chrono::milliseconds(config_.host_ttl_ms)) continue;
    alive.push_back(&h);
  }
  if (alive.empty()) return nullptr;
  // The same task goes to the same seed host (as long as the set of seeds is stable).
  return alive[std::hash<std::string>{}(task_id) % alive.size()];
}

// ---------------------------------------------------------------------------------------------
// Tasks and peers

Task* Scheduler::FindTask(const std::string& task_id) {
  auto it = tasks_.find(task_id);
  return it == tasks_.end() ? nullptr : it->second.get();
}

Peer* Scheduler::FindPeer(Task& task, const std::string& peer_id) {
  auto it = task.peers.find(peer_id);
  return it == task.peers.end() ? nullptr : it->second.get();
}

Task& Scheduler::FindOrCreateTask(const std::string& task_id, const v1::TaskInfo& info,
                                  Clock::time_point now) {
  auto& task = tasks_[task_id];
  if (!task) {
    task = std::make_unique<Task>();
    task->id = task_id;
    task->info = info;
    task->info.set_task_id(task_id);
    task->info.set_content_length(-1);  // the known size lives in Task, set when learned
  }
  // A registrant's idea of the size is not learned: only a peer that fetched from the origin
  // (a seed, or a peer sent back to source) can tell it (IsSizeAuthority).
  task->updated = now;
  return *task;
}

bool Scheduler::HasOriginCopy(const Task& task) {
  return task.succeeded_peers > 0 && task.origin_digests > 0;
}

bool Scheduler::IsSizeAuthority(const Peer& peer) const {
  // A peer that went to the origin on its own says so itself; only what the scheduler granted
  // counts, so a peer cannot make itself the one that decides the size (or emptiness) of a task.
  return peer.host->is_seed() || peer.sent_to_source;
}

void Scheduler::LearnTaskSize(Task& task, const Peer& from, int64_t content_length,
                              uint64_t piece_length, uint32_t total_pieces) {
  if (content_length < 0) return;
  if (!IsSizeAuthority(from)) {
    DF_LOG_DEBUG(
        "task size from a peer that did not fetch from the origin ignored task_id={} "
        "peer_id={}",
        task.id, from.id);
    return;
  }
  if (Status s =
          CheckLayout(task.info.piece_length(), content_length,
                      piece_length ? piece_length : ExpectedPieceLength(task, content_length),
                      total_pieces ? static_cast<int64_t>(total_pieces) : -1);
      !s.ok()) {
    DF_LOG_WARN("bad task size from peer_id={} task_id={}: {}", from.id, task.id, s.message());
    return;
  }
  if (task.content_length >= 0 && task.content_length != content_length) {
    DF_LOG_WARN("task size conflict task_id={} known={} reported={}; keeping the known size",
                task.id, task.content_length, content_length);
    return;
  }
  // The layout follows from the spec and the size (checked above), whatever the sender said.
  PieceLayout layout = ExpectedLayout(task.info.piece_length(), content_length).value();
  task.content_length = content_length;
  task.piece_length = layout.piece_length;
  task.total_pieces = layout.total_pieces();
  task.info.set_content_length(task.content_length);
}

void Scheduler::RecordPieceDigest(Task& task, const Peer& from, const v1::PieceFinished& m) {
  if (m.sha256().empty() || !IsSizeAuthority(from)) return;
  if (m.sha256().size() != 32 || m.piece_number() >= task.total_pieces) {
    DF_LOG_WARN("malformed piece digest ignored task_id={} peer_id={} piece={}", task.id, from.id,
                m.piece_number());
    return;
  }
  std::string& slot = task.piece_digests[m.piece_number()];
  if (slot.empty()) {
    slot = m.sha256();
    ++task.origin_digests;
  } else if (slot != m.sha256()) {
    // Two origin fetches disagree: the origin changed under the task. Keep the first.
    DF_LOG_WARN("conflicting origin digests task_id={} piece={} peer_id={}", task.id,
                m.piece_number(), from.id);
  }
}

void Scheduler::SendPieceDigests(const Task& task, Peer& peer, const v1::PieceDigestsRequest& m) {
  if (!peer.stream) return;
  v1::AnnouncePeerResponse response;
  auto* d = response.mutable_piece_digests();
  d->set_first_piece(m.first_piece());
  uint64_t end = std::min<uint64_t>(
      {static_cast<uint64_t>(m.first_piece()) + std::min(m.count(), kMaxDigestsPerResponse),
       task.total_pieces});
  // Trailing pieces nobody reported yet are left out: an answer costs what is known.
  auto known = [&](uint64_t i) { return task.piece_digests.count(static_cast<uint32_t>(i)) > 0; };
  while (end > m.first_piece() && !known(end - 1)) --end;
  for (uint64_t i = m.first_piece(); i < end; ++i) {
    auto it = task.piece_digests.find(static_cast<uint32_t>(i));
    d->add_sha256(it == task.piece_digests.end() ? std::string() : it->second);
  }
  d->set_expected(task.digests_expected);
  peer.stream->Send(response);
}

uint64_t Scheduler::ExpectedPieceLength(const Task& task, int64_t content_length) {
  auto layout = ExpectedLayout(task.info.piece_length(), content_length);
  return layout.ok() ? layout->piece_length : 0;
}

Peer& Scheduler::ResetPeer(Task& task, const std::string& peer_id, std::shared_ptr<Host> host,
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

void Scheduler::BumpCandidates(Task& task) {
  ++task.candidate_version;
  if (!task.hungry.empty()) {
    work_pending_ = true;
    wake_.notify_one();
  }
}

void Scheduler::SetState(Task& task, Peer& peer, PeerState state) {
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

void Scheduler::UpdateHunger(Task& task, Peer& peer) {
  const size_t parents = task.dag.Parents(peer.vertex).size();
  const uint64_t need = peer.host->download_capacity();
  const bool hungry = peer.state == PeerState::kRunning && peer.stream != nullptr &&
                      parents < config_.candidate_parent_limit &&
                      (need == 0 || parents == 0 || peer.allotted() < need);
  if (hungry) {
    if (task.hungry.insert(peer.id).second) hungry_tasks_.insert(task.id);
    if (parents == 0 && !peer.waiting) {
      peer.waiting = true;
      peer.wait_since = Clock::now();
    }
  } else if (task.hungry.erase(peer.id) > 0 && task.hungry.empty()) {
    hungry_tasks_.erase(task.id);
  }
  if (parents > 0) peer.waiting = false;
}

// ---------------------------------------------------------------------------------------------
// DAG edges

void Scheduler::Link(Task& task, Peer& parent, Peer& child, uint64_t allotment) {
  if (!task.dag.HasEdge(parent.vertex, child.vertex)) {
    if (!task.dag.AddEdge(parent.vertex, child.vertex).ok()) return;  // would close a cycle
    parent.host->upload_children++;
    if (CrossIdc(parent, child)) task.cross_idc_children[parent.host->info.idc()]++;
  }
  SetAllotment(parent, child, allotment);
}

void Scheduler::SetAllotment(Peer& parent, Peer& child, uint64_t allotment) {
  uint64_t& a = child.parent_allotments[parent.vertex];
  parent.host->upload_allotted -= std::min(parent.host->upload_allotted, a);
  a = allotment;
  parent.host->upload_allotted += a;
  if (a == 0) child.parent_allotments.erase(parent.vertex);
}

void Scheduler::Unlink(Task& task, Peer& parent, Peer& child) {
  if (!task.dag.HasEdge(parent.vertex, child.vertex)) return;
  SetAllotment(parent, child, 0);
  task.dag.RemoveEdge(parent.vertex, child.vertex);
  if (parent.host->upload_children > 0) parent.host->upload_children--;
  if (CrossIdc(parent, child)) {
    auto it = task.cross_idc_children.find(parent.host->info.idc());
    if (it != task.cross_idc_children.end() && --it->second == 0) task.cross_idc_children.erase(it);
  }
}

void Scheduler::RemoveParents(Task& task, Peer& child) {
  const auto parents = task.dag.Parents(child.vertex);  // copy: Unlink edits the list
  for (Dag::Vertex v : parents) {
    if (Peer* parent = task.PeerAt(v)) Unlink(task, *parent, child);
  }
  UpdateHunger(task, child);
}

void Scheduler::DetachPeer(Task& task, Peer& peer) {
  RemoveParents(task, peer);
  const auto children = task.dag.Children(peer.vertex);
  for (Dag::Vertex v : children) {
    Peer* child = task.PeerAt(v);
    if (!child) continue;
    Unlink(task, peer, *child);
    child->needs_push = true;  // look for a replacement parent
    UpdateHunger(task, *child);
  }
  if (!children.empty() && !task.hungry.empty()) {
    work_pending_ = true;
    wake_.notify_one();
  }
}

void Scheduler::RemovePeer(Task& task, Peer& peer) {
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

// ---------------------------------------------------------------------------------------------
// Register and the first decision

Result<PeerKey> Scheduler::RegisterPeer(const v1::AnnouncePeerRequest& request,
                                        std::shared_ptr<PeerStream> stream) {
  metrics_.CountPeerMessage(request.request_case());
  if (!request.has_register_()) {
    return InvalidArgument("the first AnnouncePeer message must be register");
  }
  const auto start = Clock::now();
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
    if (hosts_.find(key.host_id) == hosts_.end() && hosts_.size() >= config_.max_hosts) {
      return Unavailable("register: this scheduler keeps at most " +
                         std::to_string(config_.max_hosts) + " hosts (max_hosts)");
    }
    auto host = TouchHost(key.host_id, start);
    if (!host->announced) {
      DF_LOG_WARN(
          "register from a host that never announced host_id={} peer_id={}; its peers "
          "are not offered as parents until it announces",
          key.host_id, key.peer_id);
    }
    if (!FindTask(key.task_id) && tasks_.size() >= config_.max_tasks) {
      return Unavailable("register: this scheduler keeps at most " +
                         std::to_string(config_.max_tasks) + " tasks (max_tasks)");
    }
    Task& task = FindOrCreateTask(key.task_id, reg.task(), start);
    Peer& peer = ResetPeer(task, key.peer_id, std::move(host), std::move(stream), start);
    if (peer.host->is_seed()) task.digests_expected = true;
    for (uint32_t n : reg.finished_pieces()) peer.finished.Add(n);
    metrics_.registered_peers.Increment();
    DecideOnRegister(task, peer, start);
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  metrics_.schedule_latency_seconds.Observe(
      std::chrono::duration<double>(Clock::now() - start).count());
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
  SetState(task, peer, PeerState::kRunning);
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
         SeedHostAvailable(now);
}

void Scheduler::MaybeTriggerSeed(Task& task, Clock::time_point now) {
  if (!seed_trigger_ || task.live_seed_peers > 0 || task.seed_trigger_pending ||
      HasOriginCopy(task) || task.seed_trigger_attempts >= config_.seed_trigger_attempts) {
    return;
  }
  const Host* seed = PickSeedHost(task.id, now);
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
  Task* task = FindTask(task_id);
  if (task && task->live_seed_peers == 0) {
    task->seed_trigger_pending = false;  // waiting peers retry or go back to source
    work_pending_ = true;
    wake_.notify_one();
  }
}

// ---------------------------------------------------------------------------------------------
// Candidate parents

std::vector<Peer*> Scheduler::CollectCandidates(Task& task, Peer& child) {
  // Only the child's descendants could close a cycle; a new child has none.
  std::vector<bool> descendants;
  if (!task.dag.Children(child.vertex).empty()) descendants = task.dag.Descendants(child.vertex);
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
      std::swap(others[i], others[pick(rng_)]);
    }
    others.resize(room);
  }
  keep.insert(keep.end(), others.begin(), others.end());
  return keep;
}

std::vector<std::pair<Peer*, uint64_t>> Scheduler::RankCandidates(
    Task& task, Peer& child, const std::vector<Peer*>& candidates) {
  ChildInfo child_info;
  child_info.peer_id = child.id;
  child_info.idc = child.host->info.idc();
  child_info.location = child.host->info.location();
  child_info.download_capacity = child.host->download_capacity();
  child_info.bad_parent_ids = child.bad_parents;
  std::vector<ParentInfo> infos;
  infos.reserve(candidates.size());
  for (Peer* p : candidates) infos.push_back(MakeParentInfo(*p, task));
  if (topology_) {  // in-memory lookups only (network_topology.h): no I/O under mu_
    for (size_t i = 0; i < candidates.size(); ++i) {
      const std::string& parent_host = candidates[i]->host->info.id();
      infos[i].rtt_ns = topology_->AverageRtt(child.host->info.id(), parent_host).value_or(0);
      infos[i].probe_failures = topology_->ProbeFailures(parent_host);
    }
  }
  auto ranked = evaluator_->Evaluate(child_info, infos, TaskView{task.total_pieces});
  std::vector<Peer*> order;
  for (const auto& r : ranked) {
    if (r.index < candidates.size()) order.push_back(candidates[r.index]);
  }
  return SelectByCapacity(task, child, order);
}

uint64_t Scheduler::BookingNeedLocked(const Peer& child) {
  const uint64_t download = child.host->download_capacity();
  if (download == 0) return 0;
  // When the uplinks of the cluster add up to less than its downlinks (hetero links), a child
  // that booked its whole downlink would leave the children after it nothing, and which children
  // starve would depend on who registered first. Each child books the fair share instead: the
  // sum of the announced uplinks over the hosts that download (seeds only upload). Equal links:
  // the share is at least the downlink and nothing changes. Recomputed at most once a second.
  const Clock::time_point now = Clock::now();
  if (!upload_share_valid_ || now - upload_share_at_ >= std::chrono::seconds(1)) {
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
  }
  return upload_share_ == 0 ? download : std::min(download, upload_share_);
}

std::vector<Peer*> Scheduler::PreferOwnIdc(Task& task, Peer& child,
                                           const std::vector<Peer*>& ranked) const {
  if (child.host->info.idc().empty()) return ranked;
  std::vector<Peer*> out;
  out.reserve(ranked.size());
  for (Peer* p : ranked) {
    if (!CrossIdc(*p, child)) out.push_back(p);
  }
  // Peers of its own IDC, even fully booked ones, serve a child better than another IDC: the
  // bytes are in the IDC already and the links inside are not the bottleneck.
  if (!out.empty()) return out;
  const uint32_t limit = config_.cross_idc_children_limit;
  for (Peer* p : ranked) {
    if (!CrossIdc(*p, child)) continue;
    if (limit > 0) {
      const std::string& idc = p->host->info.idc();
      auto it = task.cross_idc_children.find(idc);
      uint32_t served = it == task.cross_idc_children.end() ? 0 : it->second;
      // The child's own current edges from that IDC are being re-planned: they count as free.
      for (Dag::Vertex v : task.dag.Parents(child.vertex)) {
        Peer* parent = task.PeerAt(v);
        if (parent && parent->host->info.idc() == idc && served > 0) --served;
      }
      if (served >= limit) continue;
    }
    out.push_back(p);
  }
  return out;
}

std::vector<std::pair<Peer*, uint64_t>> Scheduler::SelectByCapacity(
    Task& task, Peer& child, const std::vector<Peer*>& evaluated) {
  std::vector<std::pair<Peer*, uint64_t>> out;
  // IDC first: parents in the child's IDC; without any, those of IDCs that may still serve one
  // more child outside (cross_idc_children_limit). Only when that leaves nobody, anyone.
  std::vector<Peer*> ranked = PreferOwnIdc(task, child, evaluated);
  if (ranked.empty()) ranked = evaluated;
  const uint64_t need = BookingNeedLocked(child);
  if (need == 0) {  // the child did not say what it can receive: no accounting
    for (Peer* p : ranked) {
      if (out.size() == config_.candidate_parent_limit) break;
      out.push_back({p, 0});
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
      Clock::now() - child.registered <
          std::chrono::milliseconds(config_.weak_child_seed_delay_ms)) {
    std::erase_if(ranked, [](const Peer* p) { return p->host->is_seed(); });
    if (ranked.empty()) {
      child.seed_withheld = true;  // ServeHungryPeers looks again when the delay is over
      return out;
    }
  }
  // The child's own reservations count as free for it: it is being re-planned.
  auto own = [&](const Peer& p) {
    auto it = child.parent_allotments.find(p.vertex);
    return it == child.parent_allotments.end() ? uint64_t{0} : it->second;
  };
  uint64_t left = need;
  for (Peer* p : ranked) {
    if (out.size() == config_.candidate_parent_limit || left == 0) break;
    const uint64_t cap = p->host->upload_capacity();
    uint64_t free = left;  // a parent of unknown capacity can give what is asked
    if (cap > 0) {
      const uint64_t used = p->host->upload_allotted - std::min(p->host->upload_allotted, own(*p));
      free = cap > used ? cap - used : 0;
    }
    // Slivers below 1/8 of the need would add a parent that cannot carry a share.
    if (free == 0 || (free < need / 8 && free < left)) continue;
    const uint64_t take = std::min(free, left);
    out.push_back({p, take});
    left -= take;
  }
  if (out.empty() && !ranked.empty()) {
    // Every candidate is fully booked (uploads add up to less than the children need, as on
    // hetero links): share the least booked ones, several of them, so that the shortfall is
    // spread the way a mesh spreads it instead of landing on one parent.
    auto load = [](const Peer* p) {
      const uint64_t cap = p->host->upload_capacity();
      return cap == 0 ? 0.0
                      : static_cast<double>(p->host->upload_allotted) / static_cast<double>(cap);
    };
    std::vector<Peer*> least(ranked.begin(), ranked.end());
    std::stable_sort(least.begin(), least.end(),
                     [&](const Peer* a, const Peer* b) { return load(a) < load(b); });
    for (Peer* p : least) {
      if (out.size() == config_.candidate_parent_limit) break;
      out.push_back({p, 0});
    }
  }
  return out;
}

Scheduler::ScheduleOutcome Scheduler::ScheduleParents(Task& task, Peer& child,
                                                      Clock::time_point now, bool force_send) {
  child.seen_candidate_version = task.candidate_version;
  child.needs_push = false;
  auto candidates = CollectCandidates(task, child);
  if (candidates.empty()) return ScheduleOutcome::kNoCandidates;
  auto parents = RankCandidates(task, child, candidates);
  if (parents.empty()) return ScheduleOutcome::kNoCandidates;

  auto chosen = [&](Dag::Vertex v) {
    return std::any_of(parents.begin(), parents.end(),
                       [v](const auto& p) { return p.first->vertex == v; });
  };
  const auto old_parents = task.dag.Parents(child.vertex);  // copy: edited below
  if (!force_send && child.sent_parents && parents.size() == old_parents.size() &&
      std::all_of(old_parents.begin(), old_parents.end(), chosen)) {
    for (const auto& [p, allotment] : parents) SetAllotment(*p, child, allotment);
    UpdateHunger(task, child);
    return ScheduleOutcome::kUnchanged;
  }
  for (Dag::Vertex v : old_parents) {
    if (chosen(v)) continue;
    if (Peer* p = task.PeerAt(v)) Unlink(task, *p, child);
  }
  for (const auto& [p, allotment] : parents) Link(task, *p, child, allotment);
  UpdateHunger(task, child);

  v1::AnnouncePeerResponse response;
  v1::NormalTaskResponse* normal = response.mutable_normal_task();
  for (const auto& [p, allotment] : parents) {
    v1::CandidateParent* c = normal->add_candidate_parents();
    c->set_peer_id(p->id);
    *c->mutable_host() = p->host->info;
    c->set_finished_pieces(ReportedPieces(*p, task));
  }
  if (task.content_length >= 0) {
    normal->mutable_task()->set_content_length(task.content_length);
    normal->mutable_task()->set_piece_length(task.piece_length);
    normal->mutable_task()->set_total_pieces(task.total_pieces);
  }
  if (child.stream) child.stream->Send(response);
  child.sent_parents = true;
  child.last_push = now;
  return ScheduleOutcome::kSent;
}

void Scheduler::SendBackToSource(Task& task, Peer& peer, const std::string& reason,
                                 prometheus::Counter& counter) {
  counter.Increment();
  RemoveParents(task, peer);
  SetState(task, peer, PeerState::kBackToSource);
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
  SetState(task, peer, PeerState::kSucceeded);
  v1::AnnouncePeerResponse response;
  response.mutable_empty_task();
  if (peer.stream) peer.stream->Send(response);
}

// ---------------------------------------------------------------------------------------------
// Messages after register

Status Scheduler::HandlePeerMessage(const PeerKey& key, const v1::AnnouncePeerRequest& request) {
  metrics_.CountPeerMessage(request.request_case());
  using R = v1::AnnouncePeerRequest;
  if (request.request_case() == R::kRegister) {
    return InvalidArgument("register sent twice on one AnnouncePeer stream");
  }
  if (request.request_case() == R::REQUEST_NOT_SET) {
    // Empty, or a message type newer than this scheduler: ignored, so that peers can evolve.
    DF_LOG_DEBUG("ignored AnnouncePeer message without a known type peer_id={}", key.peer_id);
    return Status::Ok();
  }
  const auto now = Clock::now();
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    Task* task = FindTask(key.task_id);
    Peer* peer = task ? FindPeer(*task, key.peer_id) : nullptr;
    if (!peer) return NotFound("peer " + key.peer_id + " of task " + key.task_id + " is gone");
    peer->updated = now;
    peer->host->last_seen = now;
    task->updated = now;
    switch (request.request_case()) {
      case R::kPieceFinished:
        OnPieceFinished(*task, *peer, request.piece_finished());
        break;
      case R::kPieceFailed:
        OnPieceFailed(*task, *peer, request.piece_failed());
        break;
      case R::kTaskMetadata:
        LearnTaskSize(*task, *peer, request.task_metadata().content_length(),
                      request.task_metadata().piece_length(),
                      request.task_metadata().total_pieces());
        break;
      case R::kPeerFinished:
        OnPeerFinished(*task, *peer, request.peer_finished());
        break;
      case R::kPeerFailed:
        OnPeerFailed(*task, *peer);
        break;
      case R::kBackToSourceStarted:
        OnBackToSourceStarted(*task, *peer);
        break;
      case R::kReschedule:
        OnReschedule(*task, *peer, request.reschedule(), now);
        break;
      case R::kPieceDigestsRequest:
        SendPieceDigests(*task, *peer, request.piece_digests_request());
        break;
      default:
        break;
    }
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  return Status::Ok();
}

void Scheduler::OnPieceFinished(Task& task, Peer& peer, const v1::PieceFinished& m) {
  peer.finished.Add(m.piece_number());
  if (m.parent_id().empty()) {  // from the origin: its digest, and no pair to record
    RecordPieceDigest(task, peer, m);
    return;
  }
  Peer* parent = FindPeer(task, m.parent_id());
  if (!parent) return;
  // A record must be physically possible: some time passed, and no more than a piece moved.
  if (m.cost_ns() == 0 || m.length() == 0 ||
      (task.piece_length > 0 && m.length() > task.piece_length) ||
      static_cast<double>(m.length()) * 1e9 / static_cast<double>(m.cost_ns()) >
          kMaxPlausibleBytesPerSec ||
      m.cost_ns() > kMaxPlausibleCostNs) {
    DF_LOG_DEBUG("implausible piece record ignored task_id={} peer_id={} bytes={} ns={}", task.id,
                 peer.id, m.length(), m.cost_ns());
    return;
  }
  parent->updated = peer.updated;
  parent->upload_success++;
  parent->host->upload_success++;
  parent->upload_costs.Add(m.cost_ns());
  BandwidthRecord record{peer.host->info.id(), parent->host->info.id(), m.length(), m.cost_ns(),
                         UnixMs()};
  if (dataset_) {
    dataset_->Add(DownloadRow{record.unix_ms, task.id, DatasetHostOf(*peer.host),
                              DatasetHostOf(*parent->host), m.length(), m.cost_ns()});
  }
  records_.Add(record);
  sync_->AddRecord(std::move(record));
  capacity_.AddTransfer(peer.host->info.id(), parent->host->info.id(), m.length(),
                        std::chrono::nanoseconds(m.cost_ns()), Clock::now());
}

void Scheduler::OnPieceFailed(Task& task, Peer& peer, const v1::PieceFailed& m) {
  if (m.parent_id().empty()) return;  // the origin failed: nothing to learn about parents
  Peer* parent = FindPeer(task, m.parent_id());
  if (parent) {
    parent->upload_failure++;
    parent->host->upload_failure++;
  }
  if (m.temporary()) return;
  peer.bad_parents.insert(m.parent_id());
  if (parent) {
    Unlink(task, *parent, peer);
    peer.needs_push = true;
    UpdateHunger(task, peer);
  }
}

void Scheduler::OnPeerFinished(Task& task, Peer& peer, const v1::PeerFinished& m) {
  LearnTaskSize(task, peer, m.content_length(), 0, m.total_pieces());
  RemoveParents(task, peer);  // it downloads nothing more; its parents' uploads are free
  SetState(task, peer, PeerState::kSucceeded);
}

void Scheduler::OnPeerFailed(Task& task, Peer& peer) {
  SetState(task, peer, PeerState::kFailed);
  DetachPeer(task, peer);
}

void Scheduler::OnBackToSourceStarted(Task& task, Peer& peer) {
  if (!CanServe(peer.state) && peer.state != PeerState::kPending) return;
  RemoveParents(task, peer);
  SetState(task, peer, PeerState::kBackToSource);
}

void Scheduler::OnReschedule(Task& task, Peer& peer, const v1::RescheduleRequest& m,
                             Clock::time_point now) {
  for (const auto& id : m.bad_parent_ids()) {
    peer.bad_parents.insert(id);
    if (Peer* parent = FindPeer(task, id)) Unlink(task, *parent, peer);
  }
  if (peer.state != PeerState::kRunning && peer.state != PeerState::kBackToSource) {
    DF_LOG_DEBUG("reschedule ignored task_id={} peer_id={} state={}", task.id, peer.id,
                 PeerStateName(peer.state));
    return;
  }
  SetState(task, peer, PeerState::kRunning);
  UpdateHunger(task, peer);
  if (ScheduleParents(task, peer, now, /*force_send=*/true) != ScheduleOutcome::kNoCandidates) {
    return;
  }
  MaybeTriggerSeed(task, now);
  if (CanBackToSource(task, peer)) {
    SendBackToSource(task, peer, "reschedule: no other parent", metrics_.back_to_source_reschedule);
  }
  // Otherwise it waits like a new peer (pushed parents or schedule_timeout).
}

void Scheduler::StreamClosed(const PeerKey& key, const PeerStream* stream) {
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    Task* task = FindTask(key.task_id);
    Peer* peer = task ? FindPeer(*task, key.peer_id) : nullptr;
    if (!peer || peer->stream.get() != stream) return;  // gone, or replaced by a new register
    peer->stream.reset();
    peer->updated = Clock::now();
    if (peer->state == PeerState::kSucceeded || peer->state == PeerState::kFailed) {
      UpdateHunger(*task, *peer);
    } else {
      SetState(*task, *peer, PeerState::kLeft);
      DetachPeer(*task, *peer);
    }
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
}

// ---------------------------------------------------------------------------------------------
// Queries

Result<v1::StatTaskResponse> Scheduler::StatTask(const std::string& task_id) const {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return NotFound("task " + task_id);
  const Task& task = *it->second;
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
  auto t = tasks_.find(task_id);
  if (t == tasks_.end()) return std::nullopt;
  auto p = t->second->peers.find(peer_id);
  if (p == t->second->peers.end()) return std::nullopt;
  PeerSnapshot s;
  s.state = p->second->state;
  for (Dag::Vertex v : t->second->dag.Parents(p->second->vertex)) {
    if (const Peer* parent = t->second->PeerAt(v)) s.parents.push_back(parent->id);
  }
  std::sort(s.parents.begin(), s.parents.end());
  s.finished_pieces = p->second->finished.count();
  return s;
}

// ---------------------------------------------------------------------------------------------
// Background thread: pushes, schedule timeouts, GC

void Scheduler::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, kTick, [this] { return stop_ || work_pending_; });
    if (stop_) break;
    work_pending_ = false;
    const auto now = Clock::now();
    if (now >= next_capacity_refresh_) {
      RefreshCapacitiesLocked(now);
      next_capacity_refresh_ = now + CapacityEstimator::Options{}.bucket;
    }
    ServeHungryPeers(lock, now);
    if (now >= next_gc_) {
      CollectGarbageLocked(now);
      next_gc_ = now + std::chrono::milliseconds(config_.gc_interval_ms);
    }
    auto jobs = TakeSeedJobs();
    if (!jobs.empty()) {
      lock.unlock();
      SendSeedJobs(std::move(jobs));
      lock.lock();
    }
  }
}

void Scheduler::ServeHungryPeers(std::unique_lock<std::mutex>& lock, Clock::time_point now) {
  const auto push_interval = std::chrono::milliseconds(config_.push_interval_ms);
  std::vector<std::pair<std::string, std::string>> work;  // (task id, peer id)
  for (const auto& task_id : hungry_tasks_) {
    if (const Task* task = FindTask(task_id)) {
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
    Task* task = FindTask(task_id);
    Peer* peer = task ? FindPeer(*task, peer_id) : nullptr;
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
    CollectGarbageLocked(Clock::now());
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
}

void Scheduler::CollectGarbageLocked(Clock::time_point now) {
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
  for (auto h = hosts_.begin(); h != hosts_.end();) {
    if (gone_hosts.contains(h->second.get()) && h->second->peer_count == 0) {
      records_.RemoveHost(h->first);
      capacity_.RemoveHost(h->first);
      sync_->DeleteHost(h->first);
      if (topology_) topology_->RemoveHost(h->first);  // no I/O: store deletion is queued
      seed_hosts_.erase(h->first);
      h = hosts_.erase(h);
    } else {
      ++h;
    }
  }
  if (removed_peers > 0) DF_LOG_DEBUG("gc removed_peers={}", removed_peers);
  UpdateGauges();
}

bool Scheduler::RefreshHostCapacity(Host& host) {
  const std::string& id = host.info.id();
  const bool fully_booked =
      host.upload_capacity_bps > 0 && host.upload_allotted * 10 >= host.upload_capacity_bps * 9;
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
  host.upload_capacity_bps = up;
  host.download_capacity_bps = down;
  return changed;
}

void Scheduler::RefreshCapacities(Clock::time_point now) {
  std::lock_guard lock(mu_);
  RefreshCapacitiesLocked(now);
}

void Scheduler::RefreshCapacitiesLocked(Clock::time_point now) {
  capacity_.Advance(now);
  bool changed = false;
  std::unordered_map<const Host*, double> overbooked;  // host -> capacity / booked
  for (auto& [id, host] : hosts_) {
    changed = RefreshHostCapacity(*host) || changed;
    if (host->upload_capacity() > 0 && host->upload_allotted > host->upload_capacity()) {
      overbooked[host.get()] =
          static_cast<double>(host->upload_capacity()) / static_cast<double>(host->upload_allotted);
    }
  }
  if (!changed) return;
  // A host that turned out slower than booked: its children's shares shrink in proportion, so
  // that they become hungry and take the difference elsewhere.
  for (auto& [task_id, task] : tasks_) {
    for (auto& [peer_id, peer] : task->peers) {
      auto it = overbooked.find(peer->host.get());
      if (it != overbooked.end()) ScaleAllotments(*task, *peer, it->second);
    }
  }
  // Bookings were made with the old values: children re-plan (hunger depends on the child's
  // download capacity, candidates on their parents' free upload).
  upload_share_valid_ = false;
  for (auto& [task_id, task] : tasks_) {
    for (auto& [peer_id, peer] : task->peers) UpdateHunger(*task, *peer);
    BumpCandidates(*task);
  }
}

void Scheduler::ScaleAllotments(Task& task, Peer& parent, double ratio) {
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
  const auto now = Clock::now();
  for (const auto& c : theirs) {
    if (!hosts_.contains(c.host_id)) continue;  // only hosts this scheduler schedules
    capacity_.MergeRemote(c.host_id, c.upload_bytes_per_sec, c.download_bytes_per_sec, now);
  }
}

std::optional<Scheduler::HostCapacity> Scheduler::GetHostCapacity(
    const std::string& host_id) const {
  std::lock_guard lock(mu_);
  auto it = hosts_.find(host_id);
  if (it == hosts_.end()) return std::nullopt;
  return HostCapacity{capacity_.Get(host_id), it->second->upload_capacity(),
                      it->second->download_capacity(), it->second->upload_allotted};
}

void Scheduler::UpdateGauges() {
  size_t peers = 0;
  for (const auto& [id, task] : tasks_) peers += task->peers.size();
  metrics_.hosts.Set(static_cast<double>(hosts_.size()));
  metrics_.tasks.Set(static_cast<double>(tasks_.size()));
  metrics_.peers.Set(static_cast<double>(peers));
}

}  // namespace df::scheduler
