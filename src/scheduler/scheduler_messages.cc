// The AnnouncePeer messages after register: piece reports, task size and digests, a peer
// finishing, failing, going to the origin on its own or asking for new parents. Each handler
// runs under the Scheduler's mutex (HandlePeerMessage takes it) and only queues I/O.
#include <algorithm>

#include "common/log.h"
#include "common/task_info.h"
#include "common/task_spec.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {
namespace {

// A piece record claiming more than this (400 Gbit/s) or taking longer than an hour is not a
// measurement: it is ignored rather than allowed to inflate or deflate learned capacities.
constexpr double kMaxPlausibleBytesPerSec = 50e9;
constexpr uint64_t kMaxPlausibleCostNs = 3600ull * 1'000'000'000;
// Digests kept for a task whose size is not known yet (the seed's first pieces can come before
// its metadata); bounded so that a peer cannot grow the map before any size is set.
constexpr size_t kMaxDigestsBeforeSize = 4096;

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
  const auto now = clock_.Now();
  std::vector<SeedJob> jobs;
  {
    std::lock_guard lock(mu_);
    Task* task = model_.FindTask(key.task_id);
    Peer* peer = task ? model_.FindPeer(*task, key.peer_id) : nullptr;
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
  if (!task.dag.acyclic() && !IsSeedPeer(peer) && task.total_pieces > 0 &&
      task.total_pieces <= FinishedPieces::kMaxTrackedPieces &&
      m.piece_number() < task.total_pieces) {
    if (task.peer_held.empty()) task.peer_held.assign(task.total_pieces, false);
    if (task.peer_held.size() == task.total_pieces && !task.peer_held[m.piece_number()]) {
      task.peer_held[m.piece_number()] = true;
      ++task.peer_held_count;
    }
  }
  if (m.parent_id().empty()) {  // from the origin: its digest, and no pair to record
    RecordPieceDigest(task, peer, m);
    return;
  }
  Peer* parent = model_.FindPeer(task, m.parent_id());
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
  if (dataset_ || evaluator_->observes_transfers()) {
    DownloadRow row{
        record.unix_ms, task.id,    DatasetHostOf(*peer.host), DatasetHostOf(*parent->host),
        m.length(),     m.cost_ns()};
    evaluator_->ObserveTransfer(row);
    if (dataset_) dataset_->Add(std::move(row));
  }
  records_.Add(record);
  sync_->AddRecord(std::move(record));
  capacity_.AddTransfer(peer.host->info.id(), parent->host->info.id(), m.length(),
                        std::chrono::nanoseconds(m.cost_ns()), clock_.Now());
}

void Scheduler::OnPieceFailed(Task& task, Peer& peer, const v1::PieceFailed& m) {
  if (m.parent_id().empty()) return;  // the origin failed: nothing to learn about parents
  Peer* parent = model_.FindPeer(task, m.parent_id());
  if (parent) {
    parent->upload_failure++;
    parent->host->upload_failure++;
  }
  if (m.temporary()) return;
  peer.bad_parents.insert(m.parent_id());
  if (parent) {
    model_.Unlink(task, *parent, peer);
    peer.needs_push = true;
    model_.UpdateHunger(task, peer);
  }
}

void Scheduler::OnPeerFinished(Task& task, Peer& peer, const v1::PeerFinished& m) {
  LearnTaskSize(task, peer, m.content_length(), 0, m.total_pieces());
  model_.RemoveParents(task, peer);  // it downloads nothing more; its parents' uploads are free
  model_.SetState(task, peer, PeerState::kSucceeded);
}

void Scheduler::OnPeerFailed(Task& task, Peer& peer) {
  model_.SetState(task, peer, PeerState::kFailed);
  model_.DetachPeer(task, peer);
}

void Scheduler::OnBackToSourceStarted(Task& task, Peer& peer) {
  if (!CanServe(peer.state) && peer.state != PeerState::kPending) return;
  model_.RemoveParents(task, peer);
  model_.SetState(task, peer, PeerState::kBackToSource);
}

void Scheduler::OnReschedule(Task& task, Peer& peer, const v1::RescheduleRequest& m,
                             Clock::time_point now) {
  for (const auto& id : m.bad_parent_ids()) {
    peer.bad_parents.insert(id);
    if (Peer* parent = model_.FindPeer(task, id)) model_.Unlink(task, *parent, peer);
  }
  if (peer.state != PeerState::kRunning && peer.state != PeerState::kBackToSource) {
    DF_LOG_DEBUG("reschedule ignored task_id={} peer_id={} state={}", task.id, peer.id,
                 PeerStateName(peer.state));
    return;
  }
  model_.SetState(task, peer, PeerState::kRunning);
  model_.UpdateHunger(task, peer);
  if (ScheduleParents(task, peer, now, /*force_send=*/true) != ScheduleOutcome::kNoCandidates) {
    return;
  }
  MaybeTriggerSeed(task, now);
  if (CanBackToSource(task, peer)) {
    SendBackToSource(task, peer, "reschedule: no other parent", metrics_.back_to_source_reschedule);
  }
  // Otherwise it waits like a new peer (pushed parents or schedule_timeout).
}

// ---------------------------------------------------------------------------------------------
// What a peer may tell about its task

bool Scheduler::HasOriginCopy(const Task& task) {
  return task.succeeded_peers > 0 && task.origin_digests > 0;
}

bool Scheduler::IsSizeAuthority(const Peer& peer) {
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
  std::erase_if(task.piece_digests, [&](const auto& d) {
    if (d.first < task.total_pieces) return false;
    --task.origin_digests;
    return true;
  });
}

void Scheduler::RecordPieceDigest(Task& task, const Peer& from, const v1::PieceFinished& m) {
  if (m.sha256().empty() || !IsSizeAuthority(from)) return;
  // A seed's first pieces may finish before its task metadata arrives: while the size is unknown
  // any piece number a task can have is kept, and the ones past the end are dropped once it is.
  const uint32_t limit =
      task.total_pieces > 0 ? task.total_pieces : FinishedPieces::kMaxTrackedPieces;
  if (m.sha256().size() != 32 || m.piece_number() >= limit ||
      (task.total_pieces == 0 && task.piece_digests.size() >= kMaxDigestsBeforeSize)) {
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

}  // namespace df::scheduler
