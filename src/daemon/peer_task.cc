#include "daemon/peer_task.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/fd.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/task_spec.h"
#include "common/thread_name.h"
#include "daemon/daemon_metrics.h"
#include "daemon/scheduler_client.h"
#include "daemon/task_manager.h"

namespace df {

namespace sv1 = df::scheduler::v1;
namespace dv1 = df::dfdaemon::v1;

namespace {
// Where the piece picker's tie-break starts with spread_start on: a hash of the peer id (which
// ends in random digits), so that two downloads of one task start at unrelated pieces.
uint64_t SpreadStart(std::string_view peer_id) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a
  for (unsigned char c : peer_id) h = (h ^ c) * 1099511628211ull;
  return h == 0 ? 1 : h;
}

constexpr auto kRescheduleInterval = std::chrono::seconds(1);
// How long a worker waits for the origin digest of a piece it received (the seed reports it
// when it commits the piece, before children can fetch it, so this is one scheduler round trip).
constexpr auto kDigestWait = std::chrono::seconds(3);
constexpr auto kDigestRetryInterval = std::chrono::milliseconds(50);
constexpr uint32_t kDigestsPerRequest = 4096;
// Endgame: a piece is overdue once its copy has been arriving for kEndgameSlowdown x what its
// parent's rate predicts, and at least kEndgameMinWait (jitter on fast links is not a tail).
constexpr double kEndgameSlowdown = 2.0;
constexpr auto kEndgameMinWait = std::chrono::seconds(1);

bool Known(const PieceDigest& d) {
  return std::any_of(d.begin(), d.end(), [](uint8_t b) { return b != 0; });
}

// The directory of `path` ("." when it has none).
std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// An unnamed file in `dir` (O_TMPFILE; else created and unlinked at once), removed on close.
Result<UniqueFd> OpenTempFile(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return UniqueFd(fd);
  std::string name = dir + "/.endgame-XXXXXX";
  fd = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("temporary file in " + dir, errno);
  ::unlink(name.c_str());
  return UniqueFd(fd);
}

// Copies [offset, offset + length) of `from` to the same range of `to`, in the kernel where it
// can (copy_file_range), else through a buffer.
Status CopyRange(int from, int to, uint64_t offset, uint64_t length) {
  auto in = static_cast<loff_t>(offset), out = static_cast<loff_t>(offset);
  while (length > 0) {
    ssize_t n = ::copy_file_range(from, &in, to, &out, length, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL)) {
      break;
    }
    if (n < 0) return ErrnoStatus("copy piece into place", errno);
    if (n == 0) return DataLoss("the received copy of the piece is short");
    length -= static_cast<uint64_t>(n);
  }
  std::vector<char> buf(length > 0 ? 1 << 20 : 0);
  uint64_t pos = static_cast<uint64_t>(in);
  while (length > 0) {
    ssize_t n =
        ::pread(from, buf.data(), std::min<uint64_t>(length, buf.size()), static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return n == 0 ? DataLoss("the received copy of the piece is short")
                    : ErrnoStatus("read received piece", errno);
    DF_RETURN_IF_ERROR(WriteAllAt(to, buf.data(), static_cast<size_t>(n), pos, "write piece"));
    pos += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

bool IsPermanent(const Status& s) {
  switch (s.code()) {
    case StatusCode::kNotFound:
    case StatusCode::kPermissionDenied:
    case StatusCode::kInvalidArgument:
    case StatusCode::kHttpError:
    case StatusCode::kNoSpace:
      return true;
    default:
      return false;
  }
}
}  // namespace

PeerTask::PeerTask(const DaemonContext& ctx, TaskRequest request)
    : ctx_(ctx),
      clock_(ctx.clock ? *ctx.clock : SteadyClock::Instance()),
      request_(std::move(request)),
      peer_id_(NewPeerId(ctx.host_id)),
      origin_(ctx.backends, request_.url, request_.headers,
              static_cast<int64_t>(ctx.config->piece_timeout_ms)),
      picker_({.cut_through = ctx.config->cut_through,
               .per_parent_concurrency = ctx.config->per_parent_concurrency,
               .spread_start = ctx.config->spread_start ? SpreadStart(peer_id_) : 0}),
      parents_(picker_, [this](Parent& p) {
        // Called under mu_: a dead parent's availability stream is cut.
        if (auto& c = LinkLocked(p).sync_ctx) c->TryCancel();
      }) {
  if (ctx_.scheduler) {
    session_ = std::make_unique<SchedulerSession>(
        ctx_.scheduler, request_.task_id, ctx_.host_id, peer_id_,
        [this](const sv1::AnnouncePeerResponse& r) { OnSchedulerResponse(r); },
        [this] { OnSchedulerLost(); });
  }
}

PeerTask::~PeerTask() {
  Cancel();
  if (controller_.joinable()) controller_.join();
}

void PeerTask::Start() {
  controller_ = NamedThread("df-task", [this] { Run(); });
}

void PeerTask::Cancel() {
  std::lock_guard<std::mutex> l(mu_);
  if (!finished_) {
    stopping_ = true;
    status_ = Status(StatusCode::kCancelled, "download cancelled");
    InterruptReceivesLocked();
  }
  WakeAll();
}

void PeerTask::InterruptReceivesLocked() {
  // A worker receiving a piece from a slow parent would otherwise hold the cancel (and the
  // threads joined after it) until the piece arrived or piece_timeout passed.
  for (PieceFetch& f : fetches_) {
    if (f.writing && f.client) f.client->Interrupt();
    if (f.dup_client && !f.dup_cut) f.dup_client->Interrupt();
  }
}

bool PeerTask::cancelled() const {
  std::lock_guard<std::mutex> l(mu_);
  return stopping_ && !finished_;
}

std::shared_ptr<TaskStorage> PeerTask::storage() const {
  std::lock_guard<std::mutex> l(mu_);
  return storage_;
}

TaskProgress PeerTask::Progress() const {
  std::lock_guard<std::mutex> l(mu_);
  TaskProgress p;
  p.peer_id = peer_id_;
  if (layout_known_) {
    p.content_length = static_cast<int64_t>(layout_.content_length);
    p.piece_length = layout_.piece_length;
    p.total_pieces = layout_.total_pieces();
  }
  p.completed_length = completed_bytes_;
  p.finished_pieces = done_count_;
  p.bytes_from_origin = bytes_from_origin_;
  p.bytes_from_peers = bytes_from_peers_;
  p.endgame_duplicates = endgame_duplicates_;
  p.endgame_duplicate_bytes = endgame_duplicate_bytes_;
  p.unverified_pieces = unverified_pieces_;
  p.finished = finished_;
  p.status = status_;
  return p;
}

bool PeerTask::WaitFinished(int timeout_ms) const {
  std::unique_lock<std::mutex> l(mu_);
  return cv_.wait_for(l, std::chrono::milliseconds(timeout_ms), [this] { return finished_; });
}

// ---------------------------------------------------------------------------------------------
// Controller

void PeerTask::Run() {
  Status s = Prepare();
  if (!s.ok()) {
    Finish(s);
  } else {
    // A cache hit never goes to the origin (nor logs that it does); with a scheduler it still
    // registers, with every piece finished, as any download of a task held here does.
    const bool cached = ServedFromCache();
    bool scheduled = session_ != nullptr && OpenAnnounce();
    for (uint32_t i = 0; i < ctx_.config->concurrency; ++i) {
      workers_.push_back(NamedThread("df-piece-get", [this] { Worker(); }));
    }
    if (!scheduled && !cached) {
      Status o = ctx_.scheduler
                     ? EnableOrigin(kBackToSourceSchedulerUnreachable, "scheduler unreachable")
                     : EnableOrigin(kBackToSourceNoScheduler, "no scheduler");
      if (!o.ok()) Finish(o);
    }
    std::unique_lock<std::mutex> l(mu_);
    while (!finished_ && !stopping_) {
      cv_.wait_for(l, std::chrono::milliseconds(200));
      if (finished_ || stopping_) break;
      if (announce_lost_ && Now() >= next_reconnect_) {
        l.unlock();
        Reconnect();
        l.lock();
        continue;
      }
      DropStaleParentsLocked();
      bool have_parent = parents_.AnyUsable();
      bool stalled =
          Now() - last_progress_ > std::chrono::milliseconds(ctx_.config->schedule_timeout_ms);
      if (!origin_enabled_ && (want_origin_ || (!have_parent && stalled))) {
        const char* label = want_origin_ ? kBackToSourceScheduler : kBackToSourceNoParent;
        std::string reason = want_origin_ ? want_origin_reason_ : "no parent in time";
        l.unlock();
        Status o = EnableOrigin(label, reason);
        if (!o.ok()) Finish(o);
        l.lock();
      } else if (!have_parent && !origin_enabled_) {
        MaybeRescheduleLocked();
      }
    }
  }
  // Shut everything down: workers, parent streams, scheduler stream.
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    InterruptReceivesLocked();
    for (auto& link : links_) {
      link->sync_ctx->TryCancel();
    }
  }
  WakeAll();
  for (auto& w : workers_) w.join();
  // No parent is added once stopping_ is set: links_ does not change under these joins.
  for (auto& link : links_) {
    if (link->sync_thread.joinable()) link->sync_thread.join();
  }
  if (session_) session_->Close();
  // A cancelled download is over once its threads are: waiters see it finish (Cancelled).
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!finished_) {
      finished_ = true;
      cancelled = true;
      if (status_.ok()) status_ = Status(StatusCode::kCancelled, "download cancelled");
    }
  }
  if (cancelled) DF_LOG_INFO("task {} cancelled", request_.task_id);
  WakeAll();
}

bool PeerTask::ServedFromCache() {
  uint64_t bytes = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!finished_) return false;
    bytes = layout_.content_length;
  }
  DF_LOG_INFO("task {} served from cache: {} bytes, nothing to download", request_.task_id, bytes);
  return true;
}

Status PeerTask::Prepare() {
  TaskMeta meta;
  meta.task_id = request_.task_id;
  meta.url = request_.url;
  meta.digest = request_.digest;
  auto st = ctx_.store->OpenTask(meta);
  if (!st.ok()) return st.status();
  std::lock_guard<std::mutex> l(mu_);
  storage_ = st.value();
  last_progress_ = Now();
  TaskMeta m = storage_->meta();
  if (m.content_length >= 0 && m.piece_length > 0) {
    DF_RETURN_IF_ERROR(SetLayoutLocked(m.content_length, m.piece_length));
  }
  return Status::Ok();
}

Status PeerTask::EnableOrigin(const char* label, const std::string& reason) {
  if (request_.disable_back_to_source) {
    return Unavailable("no parent could serve the task and back-to-source is disabled (" + reason +
                       ")");
  }
  DF_LOG_INFO("task {} back to source: {}", request_.task_id, reason);
  if (ctx_.back_to_source) ctx_.back_to_source->Add({{"reason", label}}).Increment();
  auto info = origin_.Stat([this](std::chrono::milliseconds backoff) {
    std::unique_lock<std::mutex> l(mu_);
    return !cv_.wait_for(l, backoff, [this] { return stopping_; });
  });
  if (!info.ok()) return info.status();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!layout_known_) DF_RETURN_IF_ERROR(SetLayoutFromSizeLocked(info->content_length));
    if (layout_.content_length != static_cast<uint64_t>(info->content_length)) {
      return DataLoss("origin size changed: " + std::to_string(info->content_length) +
                      " != " + std::to_string(layout_.content_length));
    }
    origin_enabled_ = true;
    origin_sequential_ = !info->supports_range;
    want_origin_ = false;
  }
  WakeAll();
  if (session_ && session_->open()) {
    sv1::AnnouncePeerRequest req;
    req.mutable_back_to_source_started()->set_reason(reason);
    Send(req);
    sv1::AnnouncePeerRequest meta;
    PieceLayout lay;
    {
      std::lock_guard<std::mutex> l(mu_);
      lay = layout_;
    }
    meta.mutable_task_metadata()->set_content_length(static_cast<int64_t>(lay.content_length));
    meta.mutable_task_metadata()->set_piece_length(lay.piece_length);
    meta.mutable_task_metadata()->set_total_pieces(lay.total_pieces());
    Send(meta);
  }
  return Status::Ok();
}

void PeerTask::Finish(Status status) {
  if (status.ok() && request_.id_from_digest) status = VerifyContentAddressed();
  bool report = false;
  PieceLayout lay;
  uint64_t from_origin = 0, from_peers = 0, duplicate_bytes = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (finished_) return;
    if (stopping_ && status.ok()) return;
    finished_ = true;
    status_ = status;
    report = ctx_.scheduler != nullptr;
    lay = layout_;
    from_origin = bytes_from_origin_;
    from_peers = bytes_from_peers_;
    duplicate_bytes = endgame_duplicate_bytes_;
  }
  WakeAll();
  if (status.ok()) {
    DF_LOG_INFO(
        "task {} finished: {} bytes, {} from origin, {} from peers, {} endgame duplicate bytes",
        request_.task_id, lay.content_length, from_origin, from_peers, duplicate_bytes);
  } else {
    DF_LOG_WARN("task {} failed: {}", request_.task_id, status.ToString());
  }
  if (!report) return;
  sv1::AnnouncePeerRequest req;
  if (status.ok()) {
    req.mutable_peer_finished()->set_content_length(static_cast<int64_t>(lay.content_length));
    req.mutable_peer_finished()->set_total_pieces(lay.total_pieces());
  } else {
    req.mutable_peer_failed()->set_reason(status.ToString());
  }
  Send(req);
}

Status PeerTask::VerifyContentAddressed() {
  std::shared_ptr<TaskStorage> st = storage();
  if (!st) return Internal("content-addressed task finished without storage");
  Status s = VerifyDigest(st->content_path(), request_.digest);
  if (s.ok()) return s;
  // The bytes are not the ones the id names: nobody may fetch them under it, here or as a parent.
  DF_LOG_WARN("task {}: content does not match its digest, deleting it: {}",
              request_.task_id.substr(0, 12), s.message());
  (void)ctx_.store->DeleteTask(request_.task_id);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Scheduler stream

bool PeerTask::OpenAnnounce() {
  sv1::AnnouncePeerRequest req;
  auto* reg = req.mutable_register_();
  reg->set_host_id(ctx_.host_id);
  reg->set_peer_id(peer_id_);
  auto* task = reg->mutable_task();
  task->set_task_id(request_.task_id);
  task->set_url(request_.url);
  task->set_tag(request_.tag);
  task->set_application(request_.application);
  task->set_digest(request_.digest);
  task->set_id_from_digest(request_.id_from_digest);
  // The spec's piece length (0 = from the size), as in the task id; never the layout's.
  task->set_piece_length(request_.piece_length);
  for (const auto& q : request_.filtered_query_params) task->add_filtered_query_params(q);
  for (const auto& [k, v] : request_.headers) (*task->mutable_request_headers())[k] = v;
  {
    std::lock_guard<std::mutex> l(mu_);
    task->set_content_length(layout_known_ ? static_cast<int64_t>(layout_.content_length) : -1);
    for (uint32_t i = 0; i < picker_.total_pieces(); ++i) {
      if (StateLocked(i) == PieceState::kDone) reg->add_finished_pieces(i);
    }
    // Before the reader starts: a stream that ends at once must be seen as lost.
    announce_lost_ = false;
  }
  return session_->Open(std::move(req));
}

void PeerTask::Reconnect() {
  if (OpenAnnounce()) {
    DF_LOG_INFO("task {} registered again with scheduler {}", request_.task_id,
                session_->address());
    ReportKnownDigests();
    return;
  }
  std::lock_guard<std::mutex> l(mu_);
  announce_lost_ = true;
  reconnect_backoff_ = std::min(reconnect_backoff_ * 2, std::chrono::milliseconds(5000));
  next_reconnect_ = Now() + reconnect_backoff_;
}

void PeerTask::OnSchedulerResponse(const sv1::AnnouncePeerResponse& resp) {
  if (resp.has_normal_task()) {
    HandleCandidates(resp.normal_task());
  } else if (resp.has_need_back_to_source()) {
    std::lock_guard<std::mutex> l(mu_);
    want_origin_ = true;
    want_origin_reason_ = "scheduler: " + resp.need_back_to_source().reason();
    WakeAll();
  } else if (resp.has_piece_digests()) {
    std::lock_guard<std::mutex> l(mu_);
    const auto& d = resp.piece_digests();
    for (int i = 0; i < d.sha256_size(); ++i) {
      uint64_t piece = static_cast<uint64_t>(d.first_piece()) + static_cast<uint64_t>(i);
      if (piece >= digests_.size() || d.sha256(i).size() != 32) continue;
      std::memcpy(digests_[piece].data(), d.sha256(i).data(), 32);
    }
    ++digest_responses_;
    digests_expected_ = d.expected();
    cv_.notify_all();
  } else if (resp.has_empty_task()) {
    // Only a task known to be empty finishes here: a peer that holds part of a larger one
    // (resumed after a restart) goes on rather than placing a partial file as a success.
    Status empty;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!layout_known_) {
        empty = SetLayoutFromSizeLocked(0);
      } else if (layout_.content_length != 0) {
        empty = DataLoss("scheduler says the task is empty; it has " +
                         std::to_string(layout_.content_length) + " bytes");
      }
    }
    if (empty.ok()) {
      Finish(Status::Ok());
    } else {
      DF_LOG_WARN("task {} ignored an empty-task answer: {}", request_.task_id, empty.ToString());
    }
  }
}

void PeerTask::OnSchedulerLost() {
  std::lock_guard<std::mutex> l(mu_);
  if (finished_ || stopping_) return;
  // The scheduler went away (restart, crash, GC): keep the parents we have and register again
  // when it is back. Going to the origin here would send every peer of the swarm there at
  // once; only a peer left without parents for schedule_timeout does (see Run).
  DF_LOG_WARN("task {} lost its scheduler stream ({}); keeping {} parents and registering again",
              request_.task_id, session_->address(), parents_.size());
  // With several schedulers, the task moves to the next one until this one answers again.
  session_->MarkSchedulerFailed();
  announce_lost_ = true;
  reconnect_backoff_ = std::chrono::milliseconds(500);
  next_reconnect_ = Now() + reconnect_backoff_;
  WakeAll();
}

void PeerTask::HandleCandidates(const sv1::NormalTaskResponse& resp) {
  std::lock_guard<std::mutex> l(mu_);
  if (resp.has_task() && !layout_known_ && resp.task().content_length() >= 0) {
    Status layout = SetLayoutLocked(resp.task().content_length(), resp.task().piece_length());
    if (!layout.ok()) {
      DF_LOG_WARN("task {} scheduler sent a bad layout, ignored: {}", request_.task_id,
                  layout.ToString());
    }
  }
  // Removals first: a parent in both lists stays (see the proto).
  for (const std::string& id : resp.removed_parent_ids()) {
    if (Parent* p = parents_.Remove(id)) {
      DF_LOG_DEBUG("task {} scheduler took parent {} away ({} pieces in flight finish)",
                   request_.task_id, id, p->inflight);
    }
  }
  for (const auto& c : resp.candidate_parents()) AddParentLocked(c);
  WakeAll();
}

void PeerTask::Send(sv1::AnnouncePeerRequest& req) {
  if (session_) session_->Send(req);
}

void PeerTask::ReportPiece(uint32_t piece, const std::string& parent_id, uint64_t length,
                           uint64_t cost_ns, uint32_t crc, const PieceDigest* sha256) {
  if (!ctx_.scheduler) return;
  sv1::AnnouncePeerRequest req;
  auto* f = req.mutable_piece_finished();
  f->set_piece_number(piece);
  f->set_parent_id(parent_id);
  f->set_length(length);
  f->set_cost_ns(cost_ns);
  f->set_crc32c(crc);
  if (sha256) f->set_sha256(sha256->data(), sha256->size());
  Send(req);
}

void PeerTask::ReportKnownDigests() {
  struct KnownDigest {
    uint32_t piece;
    uint64_t length;
    PieceDigest digest;
  };
  std::vector<KnownDigest> known;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!origin_enabled_ && !ctx_.config->seed) return;
    for (uint32_t i = 0; i < digests_.size(); ++i) {
      if (StateLocked(i) == PieceState::kDone && Known(digests_[i])) {
        known.push_back({i, layout_.length(PieceNumber{i}), digests_[i]});
      }
    }
  }
  for (const auto& k : known) ReportPiece(k.piece, "", k.length, 1, 0, &k.digest);
}

Status PeerTask::VerifyPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece,
                                   const std::optional<PieceDigest>& received_sha256) {
  if (!ctx_.scheduler || piece >= digests_.size()) return Status::Ok();
  // Ask, then wait for an answer sent after this piece arrived. The peer that fetched the piece
  // from the origin reports its digest before it commits the piece, so the answer normally has
  // it; when the report is still on its way, ask again for a little while.
  const auto deadline = std::chrono::steady_clock::now() + kDigestWait;
  while (!Known(digests_[piece]) && !announce_lost_ && !stopping_ &&
         std::chrono::steady_clock::now() < deadline) {
    const uint64_t asked_at = digest_responses_;
    sv1::AnnouncePeerRequest req;
    req.mutable_piece_digests_request()->set_first_piece(piece);
    req.mutable_piece_digests_request()->set_count(kDigestsPerRequest);
    l.unlock();  // a write may wait for the scheduler to read: never with mu_ held
    Send(req);
    l.lock();
    cv_.wait_until(l, deadline, [&] {
      return Known(digests_[piece]) || digest_responses_ > asked_at || stopping_ || announce_lost_;
    });
    if (Known(digests_[piece]) || digest_responses_ == asked_at || !digests_expected_) break;
    cv_.wait_for(l, kDigestRetryInterval);
  }
  if (!Known(digests_[piece]) && digests_expected_ && !announce_lost_) {
    return NotFound("piece " + std::to_string(piece) + " has no origin digest yet");
  }
  if (!Known(digests_[piece])) {
    // No origin digest to be had (no peer of the task fetches from the origin for this
    // scheduler, or the scheduler is unreachable): CRC32C is all there is. Counted, not silent.
    if (unverified_pieces_++ == 0) {
      DF_LOG_WARN("task {} piece {}: no origin digest; accepted on CRC32C only", request_.task_id,
                  piece);
    }
    return Status::Ok();
  }
  // Every connection to a parent hashes what it receives (ParentClientOptions).
  if (!received_sha256) return Internal("piece " + std::to_string(piece) + " was not hashed");
  if (*received_sha256 != digests_[piece]) {
    return DataLoss("piece " + std::to_string(piece) + " does not match its origin digest");
  }
  return Status::Ok();
}

void PeerTask::ReportPieceFailed(uint32_t piece, const std::string& parent_id, bool temporary,
                                 const Status& why) {
  if (!ctx_.scheduler) return;
  sv1::AnnouncePeerRequest req;
  auto* f = req.mutable_piece_failed();
  f->set_piece_number(piece);
  f->set_parent_id(parent_id);
  f->set_temporary(temporary);
  f->set_reason(why.ToString());
  Send(req);
}

void PeerTask::DropStaleParentsLocked() {
  auto idle = Now() - last_progress_;
  if (origin_enabled_ || !layout_known_ ||
      idle < std::chrono::milliseconds(ctx_.config->piece_timeout_ms)) {
    return;
  }
  // No piece for piece_timeout although parents are connected: those that hold nothing this
  // peer misses and have nothing in flight will not help (their own download stalled or failed).
  std::vector<std::string> stale = parents_.DropStale();
  if (stale.empty()) return;
  DF_LOG_WARN("task {} made no progress for {} ms; dropping {} parents that have nothing new",
              request_.task_id, ctx_.config->piece_timeout_ms, stale.size());
  last_progress_ = Now();  // a new wait for replacements starts
  last_reschedule_ = Clock::TimePoint();
  MaybeRescheduleLocked();
}

void PeerTask::MaybeRescheduleLocked() {
  if (!session_ || !session_->open() || Now() - last_reschedule_ < kRescheduleInterval) return;
  if (parents_.empty()) return;  // still waiting for the first answer
  last_reschedule_ = Now();
  sv1::AnnouncePeerRequest req;
  auto* r = req.mutable_reschedule();
  for (const std::string& id : parents_.DeadIds()) r->add_bad_parent_ids(id);
  r->set_reason("every parent failed");
  // The session never takes mu_ (nor waits on a callback) while sending: safe under mu_.
  Send(req);
}

// ---------------------------------------------------------------------------------------------
// Parents and availability

void PeerTask::AddParentLocked(const sv1::CandidateParent& c) {
  if (c.peer_id() == peer_id_ || stopping_) return;
  auto address = CheckParentAddress(c.peer_id(), c.host().id(), c.host().ip(), c.host().grpc_port(),
                                    c.host().piece_port());
  if (!address.ok()) {
    DF_LOG_WARN("task {} scheduler named a parent that cannot be used, ignored: {}",
                request_.task_id, address.status().ToString());
    return;
  }
  // A known parent that the scheduler took away comes back; a dead one (failed) is not retried.
  Parent* p = parents_.Offer(*address);
  if (!p) return;
  // ParentSet numbers its parents 0, 1, 2, ... in the order it adds them: links_ follows.
  auto& link = links_.emplace_back(std::make_unique<ParentLink>());
  link->sync_ctx = std::make_unique<grpc::ClientContext>();
  if (ctx_.auth) ctx_.auth->Attach(link->sync_ctx.get());
  link->sync_thread = NamedThread(
      "df-parent-sync", [this, p, sync_ctx = link->sync_ctx.get()] { SyncParent(p, sync_ctx); });
}

void PeerTask::SyncParent(Parent* p, grpc::ClientContext* sync_ctx) {
  auto channel = grpc::CreateChannel(
      p->ip + ":" + std::to_string(p->grpc_port),
      ctx_.auth ? ctx_.auth->ChannelCredentials() : grpc::InsecureChannelCredentials());
  auto stub = dv1::DfdaemonUpload::NewStub(channel);
  dv1::SyncPiecesRequest req;
  req.set_task_id(request_.task_id);
  req.set_child_peer_id(peer_id_);
  req.set_child_host_id(ctx_.host_id);
  auto reader = stub->SyncPieces(sync_ctx, req);
  dv1::PieceAvailability msg;
  while (reader->Read(&msg)) {
    std::lock_guard<std::mutex> l(mu_);
    if (!layout_known_ && msg.content_length() >= 0) {
      Status layout = SetLayoutLocked(msg.content_length(), msg.piece_length());
      if (!layout.ok()) {
        DF_LOG_WARN("task {} parent {} sent a bad layout, dropped: {}", request_.task_id,
                    p->peer_id, layout.ToString());
        parents_.Drop(*p);
        continue;
      }
    }
    if (!layout_known_ || msg.content_length() != static_cast<int64_t>(layout_.content_length)) {
      continue;  // a parent that disagrees on the size is ignored until it agrees
    }
    // Wake one worker per piece it can now fetch, not all of them for every message: with one
    // message per verified piece, waking every worker each time costs more CPU than the data.
    uint32_t useful = 0;
    for (uint32_t n : msg.piece_numbers()) useful += picker_.SetHas(p->index, PieceNumber{n});
    for (uint32_t n : msg.receiving_piece_numbers()) {
      useful += picker_.SetReceiving(p->index, PieceNumber{n});
    }
    p->done = p->done || msg.done();
    for (uint32_t i = 0; i < useful && i < ctx_.config->concurrency; ++i) work_cv_.notify_one();
  }
  grpc::Status s = reader->Finish();
  std::lock_guard<std::mutex> l(mu_);
  if (!p->dead && !stopping_ && !finished_) {
    DF_LOG_INFO("task {} parent {} availability stream ended: {}", request_.task_id, p->peer_id,
                s.ok() ? std::string("the parent holds the whole task") : s.error_message());
  }
  // A parent that finished and closed its stream can still serve what it announced.
  parents_.StreamEnded(*p);
  WakeAll();
}

// ---------------------------------------------------------------------------------------------
// Workers

Status PeerTask::SetLayoutFromSizeLocked(int64_t content_length) {
  auto layout = ExpectedLayout(request_.piece_length, content_length);
  if (!layout.ok()) return layout.status();
  return SetLayoutLocked(content_length, layout->piece_length);
}

Status PeerTask::SetLayoutLocked(int64_t content_length, uint64_t piece_length) {
  // Sizes come from the origin, a parent or the scheduler: only the layout the task spec
  // implies is accepted, so nobody can make this peer allocate per-piece state for billions of
  // pieces or call a task of zero pieces done.
  DF_RETURN_IF_ERROR(CheckLayout(request_.piece_length, content_length, piece_length));
  DF_RETURN_IF_ERROR(storage_->SetContentLength(content_length, piece_length));
  layout_ = PieceLayout{static_cast<uint64_t>(content_length), piece_length};
  layout_known_ = true;
  uint32_t n = layout_.total_pieces();
  picker_.Reset(n);
  attempts_.assign(n, 0);
  digests_.assign(n, PieceDigest{});
  fetches_.assign(n, PieceFetch{});
  done_count_ = 0;
  completed_bytes_ = 0;
  for (uint32_t i : storage_->FinishedPieces()) {
    if (i < n && StateLocked(i) != PieceState::kDone) {
      SetStateLocked(i, PieceState::kDone);
      ++done_count_;
      completed_bytes_ += layout_.length(PieceNumber{i});
    }
  }
  if (done_count_ == n) {
    finished_ = true;
    status_ = Status::Ok();
  }
  WakeAll();
  return Status::Ok();
}

PeerTask::Assignment PeerTask::PickLocked(Parent* only) {
  Assignment a;
  if (!layout_known_) return a;
  // Rarest first, pieces held finished before pieces still being received: see
  // piece_picker.h. The parents in peer id order, as ties between them always went.
  auto pick = picker_.PickPiece(parents_.Loads(),
                                only ? std::optional<ParentIndex>(only->index) : std::nullopt);
  if (pick) {
    a.kind = Assignment::kParent;
    a.piece = pick->piece.value;
    a.parent = &parents_.at(pick->parent);
    return a;
  }
  if (only || !origin_enabled_) return a;
  if (origin_sequential_) {
    if (origin_inflight_ > 0) return a;
    a.kind = Assignment::kOrigin;
    return a;
  }
  if (origin_inflight_ >= ctx_.config->origin_concurrency) return a;
  if (auto first = picker_.FirstMissing()) {
    a.kind = Assignment::kOrigin;
    a.piece = first->value;
  }
  return a;
}

void PeerTask::Worker() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_ && !finished_) {
    Assignment a = PickLocked(nullptr);
    if (a.kind == Assignment::kNone) a = PickEndgameLocked();
    if (a.kind == Assignment::kNone) {
      work_cv_.wait_for(l, std::chrono::milliseconds(500));
      continue;
    }
    if (a.kind == Assignment::kDuplicate) {
      FetchDuplicateLocked(l, a.piece, a.parent);
      continue;
    }
    if (a.kind == Assignment::kParent) {
      FetchFromParentLocked(l, a.parent, a.piece);
      continue;
    }
    if (origin_sequential_) {
      ++origin_inflight_;
      l.unlock();
      Status s = StreamWholeFromOrigin();
      l.lock();
      --origin_inflight_;
      if (!s.ok()) {
        l.unlock();
        Finish(s);
        l.lock();
      }
      continue;
    }
    SetStateLocked(a.piece, PieceState::kInFlight);
    auto start = std::chrono::steady_clock::now();
    ++origin_inflight_;
    l.unlock();
    PieceChecksums sums;
    Status s = FetchFromOrigin(a.piece, &sums);
    auto cost_ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::steady_clock::now() - start)
                                             .count());
    l.lock();
    --origin_inflight_;
    CompletePieceLocked(l, a, s, sums.crc32c, cost_ns, &sums.sha256);
  }
}

PieceClientOptions PeerTask::ParentClientOptions() const {
  PieceClientOptions opts;
  opts.read_timeout_ms = static_cast<int>(ctx_.config->piece_timeout_ms);
  opts.congestion_control = ctx_.config->congestion_control;
  opts.sha256 = true;  // verified as it arrives, not read back from the file
  return opts;
}

void PeerTask::FetchFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t first) {
  // One connection, with up to `pipeline` requests queued on it: the parent sends the pieces
  // back to back, at the full rate of its uplink and without a round trip between them.
  const size_t pipeline = std::max<uint32_t>(ctx_.config->piece_pipeline_depth, 1);
  std::unique_ptr<PieceClient> client;
  auto& idle = LinkLocked(*p).idle_clients;
  if (!idle.empty()) {
    client = std::move(idle.back());
    idle.pop_back();
  } else {
    PieceClientOptions opts = ParentClientOptions();
    opts.accept_cut_through = ctx_.config->cut_through;
    client = std::make_unique<PieceClient>(p->ip, p->piece_port, opts);
  }
  ++p->connections;
  std::deque<uint32_t> queue;           // requested on this connection, in order
  auto request = [&](uint32_t piece) {  // called locked; returns locked
    SetStateLocked(piece, PieceState::kInFlight);
    fetches_[piece].asked_receiving = !picker_.has(p->index, PieceNumber{piece});
    ++p->inflight;
    queue.push_back(piece);
    l.unlock();
    Status s = client->SendRequest(request_.task_id, PieceNumber{piece});
    l.lock();
    return s;
  };
  Status broken = request(first);
  bool broken_counted = false;  // the failure that broke the connection was counted already
  while (broken.ok() && !queue.empty()) {
    while (queue.size() < pipeline && !stopping_ && !p->dead && !p->removed) {
      Assignment next = PickLocked(p);
      if (next.kind == Assignment::kNone) break;
      broken = request(next.piece);
      if (!broken.ok()) break;
    }
    if (!broken.ok()) break;
    if (!ReceiveHeadLocked(l, p, client.get(), queue, broken, broken_counted)) break;
    if (stopping_ || finished_) break;
  }
  // Requests that were never answered go back to the pool without counting as attempts, except
  // that a connection that broke while sending (the parent refuses connections, say) counts
  // against the parent and takes an attempt of its first piece, as a failed answer would.
  bool charge = !broken.ok() && !broken_counted;
  for (uint32_t piece : queue) {
    --p->inflight;
    if (charge) {
      charge = false;
      parents_.CountFailure(*p);
      CompletePieceLocked(l, Assignment{Assignment::kParent, piece, p}, broken, 0, 0);
      continue;
    }
    if (StateLocked(piece) == PieceState::kInFlight) SetStateLocked(piece, PieceState::kMissing);
  }
  if (!queue.empty()) work_cv_.notify_all();
  --p->connections;
  if (broken.ok() && queue.empty() && client->connected() &&
      idle.size() < ctx_.config->per_parent_concurrency) {
    idle.push_back(std::move(client));
  }
}

bool PeerTask::ReceiveHeadLocked(std::unique_lock<std::mutex>& l, Parent* p, PieceClient* client,
                                 std::deque<uint32_t>& queue, Status& broken,
                                 bool& broken_counted) {
  const uint32_t piece = queue.front();
  BeginReceiveLocked(piece, p, client);
  const bool forwarded = fetches_[piece].asked_receiving;
  const PieceLayout lay = layout_;
  const int fd = storage_->content_fd();
  TaskStorage* storage = storage_.get();
  l.unlock();
  PieceNumber n{piece};
  // Received in place: children may have the bytes as they land (cut-through).
  storage->BeginReceive(n);
  auto r = client->ReceivePiece(
      n, lay.offset(n), lay.length(n), fd,
      [storage, n](uint64_t in_place) { storage->AdvanceReceive(n, in_place); });
  l.lock();
  queue.pop_front();
  --p->inflight;
  fetches_[piece].writing = false;
  if (!r.ok() || fetches_[piece].cut) storage_->AbandonReceive(n);
  if (fetches_[piece].dup_parent) cv_.notify_all();  // a winning duplicate waits for this
  if (fetches_[piece].cut) {
    // The endgame duplicate won and cut this connection: the parent was slow, not faulty. What
    // it achieved at best becomes its rate, so that the requeued pieces go elsewhere.
    auto took = std::chrono::duration<double>(Now() - fetches_[piece].since).count();
    double bound = static_cast<double>(lay.length(n)) / std::max(took, 1e-3);
    parents_.CapRate(*p, bound);
    EndOriginalLocked(piece);
    broken = Status(StatusCode::kCancelled,
                    "endgame: a duplicate of piece " + std::to_string(piece) + " won");
    broken_counted = true;
    return false;
  }
  Status s = r.ok() ? Status::Ok() : r.status();
  if (s.ok() && !ClaimPieceLocked(l, piece, Copy::kOriginal)) {  // the duplicate committed it
    EndOriginalLocked(piece);
    return true;
  }
  if (s.ok()) s = VerifyFromParentLocked(l, p, piece, *r);
  UpdateParentLocked(p, piece, s, forwarded, r.ok() ? r->length : 0, r.ok() ? r->cost_ns : 0);
  // NotFound and DataLoss leave the connection usable; anything else dropped it with every
  // request queued on it.
  if (!s.ok() && s.code() != StatusCode::kNotFound && s.code() != StatusCode::kDataLoss) {
    broken = s;
    broken_counted = true;
  }
  // A failed original leaves the piece to its duplicate, when there is one.
  if (s.ok() || !fetches_[piece].dup_parent) {
    CompletePieceLocked(l, Assignment{Assignment::kParent, piece, p, forwarded}, s,
                        r.ok() ? r->crc32c : 0, r.ok() ? r->cost_ns : 0);
  }
  EndOriginalLocked(piece);
  return broken.ok();
}

Status PeerTask::VerifyFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t piece,
                                        const FetchedPiece& received) {
  Status s = VerifyPieceLocked(l, piece, received.sha256);
  if (s.code() == StatusCode::kDataLoss) {
    // The parent served bytes that are not the origin's: it is a liar or broken, and either
    // way it serves nothing more to this peer. The scheduler hears of it (CompletePieceLocked).
    DF_LOG_WARN("task {} parent {} served a corrupt piece {}; blocked for this task",
                request_.task_id, p->peer_id, piece);
    parents_.Drop(*p);
  } else if (s.code() == StatusCode::kNotFound && parents_.Unverifiable(*p)) {
    // Pieces nobody fetched from the origin: an honest parent cannot have them.
    DF_LOG_WARN("task {} parent {} serves pieces the origin fetcher never reported; blocked",
                request_.task_id, p->peer_id);
  }
  return s;
}

void PeerTask::UpdateParentLocked(Parent* p, uint32_t piece, const Status& s, bool forwarded,
                                  uint64_t length, uint64_t cost_ns) {
  if (s.ok()) {
    parents_.Served(*p, length, cost_ns);
  } else {
    parents_.Failed(*p, PieceNumber{piece}, s, forwarded);
  }
}

// ---------------------------------------------------------------------------------------------
// Endgame

PeerTask::Assignment PeerTask::PickEndgameLocked() {
  Assignment a;
  if (!ctx_.config->endgame || !layout_known_ || endgame_active_ >= ctx_.config->concurrency ||
      picker_.missing_count() > 0) {
    return a;
  }
  const auto now = Now();
  double most_overdue = 1.0;  // elapsed / allowed wait of the piece picked so far
  for (uint32_t i = 0; i < picker_.total_pieces(); ++i) {
    const PieceFetch& f = fetches_[i];
    if (StateLocked(i) != PieceState::kInFlight || !f.writing || f.cut || f.dup_parent ||
        f.claim != Copy::kNone) {
      continue;
    }
    double overdue = std::chrono::duration<double>(now - f.since) /
                     std::chrono::duration<double>(EndgameWaitLocked(i, *f.parent));
    if (overdue <= most_overdue) continue;
    if (Parent* d =
            parents_.FastestHolder(PieceNumber{i}, f.parent, ctx_.config->per_parent_concurrency)) {
      most_overdue = overdue;
      a = Assignment{Assignment::kDuplicate, i, d};
    }
  }
  return a;
}

std::chrono::nanoseconds PeerTask::EndgameWaitLocked(uint32_t piece, const Parent& p) const {
  double rate =
      p.rate_bytes_per_sec > 0 ? p.rate_bytes_per_sec : PiecePicker::kUnknownRateBytesPerSec;
  auto expected = std::chrono::duration<double>(
      kEndgameSlowdown * static_cast<double>(layout_.length(PieceNumber{piece})) / rate);
  return std::max<std::chrono::nanoseconds>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(expected), kEndgameMinWait);
}

void PeerTask::FetchDuplicateLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Parent* d) {
  // A connection of its own: cutting it cuts nothing else.
  auto client = std::make_unique<PieceClient>(d->ip, d->piece_port, ParentClientOptions());
  PieceFetch& f = fetches_[piece];
  f.dup_parent = d;
  f.dup_client = client.get();
  f.dup_cut = false;
  ++d->connections;
  ++d->inflight;
  ++endgame_active_;
  ++endgame_duplicates_;
  const PieceLayout lay = layout_;
  const std::string dir = DirOf(storage_->content_path());
  l.unlock();
  DF_LOG_DEBUG("task {} endgame: piece {} again from {}", request_.task_id, piece, d->peer_id);
  PieceNumber n{piece};
  auto tmp = OpenTempFile(dir);  // the original still writes the content file
  Result<FetchedPiece> r = tmp.status();
  if (tmp.ok()) {
    r = client->FetchPiece(request_.task_id, n, lay.offset(n), lay.length(n), tmp->get());
  }
  l.lock();
  --d->inflight;
  --d->connections;
  --endgame_active_;
  if (r.ok()) {
    endgame_duplicate_bytes_ += r->length;
    if (ctx_.endgame_duplicate_bytes) {
      ctx_.endgame_duplicate_bytes->Increment(static_cast<double>(r->length));
    }
  }
  if (r.ok() && !ClaimPieceLocked(l, piece, Copy::kDuplicate)) {
    return EndDuplicateLocked(l, piece, d, Status(StatusCode::kCancelled, "the original won"));
  }
  Status s = r.ok() ? VerifyFromParentLocked(l, d, piece, *r) : r.status();
  if (s.ok()) s = TakeOverPieceLocked(l, piece, tmp->get());
  if (!s.ok()) return EndDuplicateLocked(l, piece, d, s);
  UpdateParentLocked(d, piece, s, false, r->length, r->cost_ns);
  CompletePieceLocked(l, Assignment{Assignment::kParent, piece, d}, s, r->crc32c, r->cost_ns);
  EndDuplicateLocked(l, piece, d, s);
}

void PeerTask::EndDuplicateLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Parent* d,
                                  const Status& s) {
  PieceFetch& f = fetches_[piece];
  // Cut because the original won, or lost to it, or the task stops: not the parent's fault.
  bool ours = f.dup_cut || StateLocked(piece) == PieceState::kDone ||
              s.code() == StatusCode::kCancelled || stopping_;
  if (!s.ok() && !ours) UpdateParentLocked(d, piece, s, false, 0, 0);
  if (f.claim == Copy::kDuplicate) f.claim = Copy::kNone;
  f.dup_parent = nullptr;
  f.dup_client = nullptr;
  f.dup_cut = false;
  cv_.notify_all();  // an original waiting for the claim
  // The original failed (or was cut) meanwhile and left the piece to this copy: requeue it.
  if (!s.ok() && StateLocked(piece) == PieceState::kInFlight && !f.parent) {
    CompletePieceLocked(l, Assignment{Assignment::kParent, piece, d}, s, 0, 0);
  }
}

Status PeerTask::TakeOverPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece, int from_fd) {
  if (fetches_[piece].writing && !fetches_[piece].cut) {
    fetches_[piece].cut = true;
    fetches_[piece].client->Interrupt();
  }
  // Until the original's receive returned, it may still write into the content file.
  cv_.wait(l, [&] { return !fetches_[piece].writing || stopping_; });
  if (fetches_[piece].writing) return Status(StatusCode::kCancelled, "download cancelled");
  const PieceLayout lay = layout_;
  const int fd = storage_->content_fd();
  PieceNumber n{piece};
  // Children following the original's bytes must not take the copy's for them.
  storage_->AbandonReceive(n);
  l.unlock();
  Status s = CopyRange(from_fd, fd, lay.offset(n), lay.length(n));
  l.lock();
  return s;
}

bool PeerTask::ClaimPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Copy who) {
  cv_.wait(l, [&] { return fetches_[piece].claim == Copy::kNone || stopping_; });
  if (stopping_ || StateLocked(piece) != PieceState::kInFlight) return false;
  fetches_[piece].claim = who;
  return true;
}

void PeerTask::BeginReceiveLocked(uint32_t piece, Parent* p, PieceClient* client) {
  PieceFetch& f = fetches_[piece];
  f.since = Now();
  f.parent = p;
  f.client = client;
  f.writing = true;
}

void PeerTask::EndOriginalLocked(uint32_t piece) {
  PieceFetch& f = fetches_[piece];
  const bool endgame = f.dup_parent != nullptr || f.cut;
  if (f.claim == Copy::kOriginal) f.claim = Copy::kNone;
  f.parent = nullptr;
  f.client = nullptr;
  f.writing = false;
  f.cut = false;
  if (f.dup_parent && !f.dup_cut && StateLocked(piece) == PieceState::kDone) {
    f.dup_cut = true;  // the original won: the duplicate is of no use any more
    f.dup_client->Interrupt();
  }
  if (endgame) cv_.notify_all();
}

void PeerTask::CompletePieceLocked(std::unique_lock<std::mutex>& l, const Assignment& a, Status s,
                                   uint32_t crc, uint64_t cost_ns,
                                   const PieceDigest* origin_digest) {
  uint64_t length = layout_.length(PieceNumber{a.piece});
  std::string parent_id = a.kind == Assignment::kParent ? a.parent->peer_id : std::string();
  if (s.ok()) {
    l.unlock();
    // Children check this piece against the digest reported here, so the report goes out
    // before the commit lets any child see the piece.
    if (origin_digest) ReportPiece(a.piece, parent_id, length, cost_ns, crc, origin_digest);
    s = storage_->CommitPiece(PieceNumber{a.piece}, crc);
    l.lock();
  }
  if (s.ok()) {
    SetStateLocked(a.piece, PieceState::kDone);
    if (origin_digest) digests_[a.piece] = *origin_digest;
    (a.kind == Assignment::kParent ? bytes_from_peers_ : bytes_from_origin_) += length;
    OnPieceDoneLocked(a.piece);
    bool all = done_count_ == picker_.total_pieces();
    l.unlock();
    DF_LOG_DEBUG("piece {} of task {} done source={} bytes={} ms={:.1f}", a.piece, request_.task_id,
                 parent_id.empty() ? "origin" : parent_id, length,
                 static_cast<double>(cost_ns) / 1e6);
    if (!origin_digest) ReportPiece(a.piece, parent_id, length, cost_ns, crc);
    if (all) Finish(Status::Ok());
    l.lock();
    return;
  }
  storage_->AbandonReceive(PieceNumber{a.piece});  // children forwarded its bytes: void
  SetStateLocked(a.piece, PieceState::kMissing);
  bool from_origin = a.kind == Assignment::kOrigin;
  if (ctx_.piece_failures && !stopping_) {
    ctx_.piece_failures
        ->Add({{"source", from_origin ? "origin" : "peer"}, {"reason", StatusCodeName(s.code())}})
        .Increment();
  }
  // A piece asked for while its parent was still receiving it, that did not come because that
  // receive failed, costs no attempt: the parent's own retry is on its way.
  bool counts =
      !(a.forwarded && (s.code() == StatusCode::kNotFound || s.code() == StatusCode::kAborted));
  bool fatal =
      (from_origin && IsPermanent(s)) || s.code() == StatusCode::kNoSpace ||
      (counts && ++attempts_[a.piece] >= ctx_.config->piece_retry_limit * (from_origin ? 1 : 4));
  l.unlock();
  if (!from_origin) {
    bool temporary = s.code() == StatusCode::kNotFound || s.code() == StatusCode::kAborted;
    ReportPieceFailed(a.piece, parent_id, temporary, s);
  }
  DF_LOG_DEBUG("piece {} of task {} failed: {}", a.piece, request_.task_id, s.ToString());
  if (fatal) Finish(s);
  l.lock();
}

void PeerTask::OnPieceDoneLocked(uint32_t piece) {
  // No wake-up: the worker that finished picks the next piece itself, the controller polls,
  // and Finish() wakes the waiters on completion.
  ++done_count_;
  completed_bytes_ += layout_.length(PieceNumber{piece});
  last_progress_ = Now();
}

std::pair<PieceLayout, int> PeerTask::LayoutAndFd() const {
  std::lock_guard<std::mutex> l(mu_);
  return {layout_, storage_->content_fd()};
}

void PeerTask::WakeAll() const {
  cv_.notify_all();
  work_cv_.notify_all();
}

bool PeerTask::KeepGoing() const {
  std::lock_guard<std::mutex> l(mu_);
  return !stopping_;
}

Status PeerTask::FetchFromOrigin(uint32_t piece, PieceChecksums* sums) {
  auto [lay, fd] = LayoutAndFd();
  TaskStorage* storage = nullptr;  // fixed once workers run
  {
    std::lock_guard<std::mutex> l(mu_);
    storage = storage_.get();
  }
  // Written in place: children may have the bytes as they land (cut-through; the piece server
  // forwards only while this is the task's one receive). A failure abandons the receive
  // (CompletePieceLocked).
  return origin_.FetchPiece(
      lay, PieceNumber{piece}, fd, storage, [this] { return KeepGoing(); }, sums);
}

// For origins without range support: one GET streams the whole file; each piece commits as soon
// as its last byte is written, so children can fetch it while the rest still streams.
Status PeerTask::StreamWholeFromOrigin() {
  auto [lay, fd] = LayoutAndFd();
  auto on_piece = [&, lay = lay](PieceNumber n, const PieceChecksums& sums) -> Status {
    // Reported before the commit makes the piece visible to children (they verify it).
    ReportPiece(n.value, "", lay.length(n), 1, sums.crc32c, &sums.sha256);
    DF_RETURN_IF_ERROR(storage_->CommitPiece(n, sums.crc32c));
    std::lock_guard<std::mutex> l(mu_);
    if (StateLocked(n.value) != PieceState::kDone) {
      SetStateLocked(n.value, PieceState::kDone);
      digests_[n.value] = sums.sha256;
      bytes_from_origin_ += lay.length(n);
      OnPieceDoneLocked(n.value);
    }
    return Status::Ok();
  };
  DF_RETURN_IF_ERROR(origin_.StreamWhole(
      lay, fd, [this] { return KeepGoing(); }, on_piece));
  Finish(Status::Ok());
  return Status::Ok();
}

}  // namespace df
