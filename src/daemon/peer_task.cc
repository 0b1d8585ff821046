#include "daemon/peer_task.h"

#include <linux/magic.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <deque>

#include "common/crc32c.h"
#include "common/ids.h"
#include "common/log.h"
#include "daemon/scheduler_client.h"

namespace df {

namespace sv1 = df::scheduler::v1;
namespace dv1 = df::dfdaemon::v1;
using Clock = std::chrono::steady_clock;

namespace {
constexpr uint32_t kParentFailureLimit = 3;       // consecutive failures before a parent is dropped
constexpr double kUnknownRateBytesPerSec = 50e6;  // prior for a parent not yet measured
constexpr auto kRescheduleInterval = std::chrono::seconds(1);

// Writes all of data[0..len) at `offset`; advances `offset` past it.
Status PwriteAll(int fd, const char* data, size_t len, uint64_t* offset) {
  while (len > 0) {
    ssize_t w = ::pwrite(fd, data, len, static_cast<off_t>(*offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write piece", errno);
    }
    data += w;
    len -= static_cast<size_t>(w);
    *offset += static_cast<uint64_t>(w);
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

// A parent the scheduler named: its address, what it holds, and how it has served us.
struct PeerTask::Parent {
  std::string peer_id;
  std::string host_id;
  std::string ip;
  uint16_t grpc_port = 0;
  uint16_t piece_port = 0;
  std::vector<bool> has;          // by piece number; sized when the layout is known
  uint32_t inflight = 0;          // pieces requested from it and not answered yet
  uint32_t connections = 0;       // workers talking to it (each on one connection)
  uint32_t failures = 0;          // consecutive
  double rate_bytes_per_sec = 0;  // EWMA of piece throughput; 0 = not measured yet
  bool dead = false;
  bool done = false;  // holds the whole task
  std::vector<std::unique_ptr<PieceClient>> idle_clients;
  std::unique_ptr<grpc::ClientContext> sync_ctx;
  std::thread sync_thread;
};

PeerTask::PeerTask(const DaemonContext& ctx, TaskRequest request)
    : ctx_(ctx), request_(std::move(request)), peer_id_(NewPeerId(ctx.host_id)) {}

PeerTask::~PeerTask() {
  Cancel();
  if (controller_.joinable()) controller_.join();
}

void PeerTask::Start() {
  controller_ = std::thread([this] { Run(); });
}

void PeerTask::Cancel() {
  std::lock_guard<std::mutex> l(mu_);
  if (!finished_) {
    stopping_ = true;
    status_ = Status(StatusCode::kCancelled, "download cancelled");
  }
  WakeAll();
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
    // The announce stream is opened before any worker starts and stays put until they are
    // joined, so workers and readers may use announce_ without further locking.
    bool scheduled = ctx_.scheduler != nullptr && OpenAnnounce();
    for (uint32_t i = 0; i < ctx_.config->concurrency; ++i) {
      workers_.emplace_back([this] { Worker(); });
    }
    if (!scheduled) {
      Status o = EnableOrigin(ctx_.scheduler ? "scheduler unreachable" : "no scheduler");
      if (!o.ok()) Finish(o);
    }
    std::unique_lock<std::mutex> l(mu_);
    while (!finished_ && !stopping_) {
      cv_.wait_for(l, std::chrono::milliseconds(200));
      if (finished_ || stopping_) break;
      bool have_parent = std::any_of(parents_.begin(), parents_.end(),
                                     [](const auto& kv) { return !kv.second->dead; });
      bool stalled = Clock::now() - last_progress_ >
                     std::chrono::milliseconds(ctx_.config->schedule_timeout_ms);
      if (!origin_enabled_ && (want_origin_ || (!have_parent && stalled))) {
        std::string reason = want_origin_ ? want_origin_reason_ : "no parent in time";
        l.unlock();
        Status o = EnableOrigin(reason);
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
    for (auto& [id, p] : parents_) {
      if (p->sync_ctx) p->sync_ctx->TryCancel();
    }
  }
  WakeAll();
  for (auto& w : workers_) w.join();
  for (auto& [id, p] : parents_) {
    if (p->sync_thread.joinable()) p->sync_thread.join();
  }
  if (announce_) {
    {
      std::lock_guard<std::mutex> wl(write_mu_);
      announce_->WritesDone();
    }
    // The scheduler closes its side after WritesDone; cancel in case it does not in time.
    std::thread canceller([this] {
      std::this_thread::sleep_for(std::chrono::seconds(2));
      announce_ctx_->TryCancel();
    });
    if (announce_reader_.joinable()) announce_reader_.join();
    announce_ctx_->TryCancel();
    canceller.join();
  }
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
  last_progress_ = Clock::now();
  TaskMeta m = storage_->meta();
  if (m.content_length >= 0 && m.piece_length > 0) {
    DF_RETURN_IF_ERROR(SetLayoutLocked(m.content_length, m.piece_length));
  }
  return Status::Ok();
}

Status PeerTask::EnableOrigin(const std::string& reason) {
  if (request_.disable_back_to_source) {
    return Unavailable("no parent could serve the task and back-to-source is disabled (" + reason +
                       ")");
  }
  DF_LOG_INFO("task {} back to source: {}", request_.task_id.substr(0, 12), reason);
  auto backend = ctx_.backends->ForUrl(request_.url);
  if (!backend.ok()) return backend.status();
  BackendRequest breq{request_.url, request_.headers, 0, 10000};
  auto info = backend.value()->Stat(breq);
  if (!info.ok()) return info.status();
  if (info->content_length < 0) {
    return Status(
        StatusCode::kHttpError,
        request_.url + ": origin did not report a size (chunked responses are not supported yet)");
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t piece_length =
        request_.piece_length ? request_.piece_length : ChoosePieceLength(info->content_length);
    if (!layout_known_) DF_RETURN_IF_ERROR(SetLayoutLocked(info->content_length, piece_length));
    if (layout_.content_length != static_cast<uint64_t>(info->content_length)) {
      return DataLoss("origin size changed: " + std::to_string(info->content_length) +
                      " != " + std::to_string(layout_.content_length));
    }
    origin_enabled_ = true;
    origin_sequential_ = !info->supports_range;
    want_origin_ = false;
  }
  WakeAll();
  if (announce_) {
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
  bool report = false;
  PieceLayout lay;
  uint64_t from_origin = 0, from_peers = 0;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (finished_) return;
    if (stopping_ && status.ok()) return;
    finished_ = true;
    status_ = status;
    report = announce_ != nullptr;
    lay = layout_;
    from_origin = bytes_from_origin_;
    from_peers = bytes_from_peers_;
  }
  WakeAll();
  if (status.ok()) {
    DF_LOG_INFO("task {} finished: {} bytes, {} from origin, {} from peers",
                request_.task_id.substr(0, 12), lay.content_length, from_origin, from_peers);
  } else {
    DF_LOG_WARN("task {} failed: {}", request_.task_id.substr(0, 12), status.ToString());
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

// ---------------------------------------------------------------------------------------------
// Scheduler stream

bool PeerTask::OpenAnnounce() {
  announce_ctx_ = std::make_unique<grpc::ClientContext>();
  auto stream = ctx_.scheduler->stub()->AnnouncePeer(announce_ctx_.get());
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
  task->set_piece_length(request_.piece_length);
  for (const auto& [k, v] : request_.headers) (*task->mutable_request_headers())[k] = v;
  {
    std::lock_guard<std::mutex> l(mu_);
    task->set_content_length(layout_known_ ? static_cast<int64_t>(layout_.content_length) : -1);
    if (layout_known_) task->set_piece_length(layout_.piece_length);
    for (uint32_t i = 0; i < pieces_.size(); ++i) {
      if (pieces_[i] == PieceState::kDone) reg->add_finished_pieces(i);
    }
  }
  req.set_host_id(ctx_.host_id);
  req.set_task_id(request_.task_id);
  req.set_peer_id(peer_id_);
  if (!stream->Write(req)) {
    grpc::Status s = stream->Finish();
    DF_LOG_WARN("register with scheduler {} failed: {}", ctx_.scheduler->address(),
                s.error_message());
    return false;
  }
  announce_ = std::move(stream);
  announce_reader_ = std::thread([this] { ReadAnnounce(); });
  return true;
}

void PeerTask::ReadAnnounce() {
  sv1::AnnouncePeerResponse resp;
  while (announce_->Read(&resp)) {
    if (resp.has_normal_task()) {
      HandleCandidates(resp.normal_task());
    } else if (resp.has_need_back_to_source()) {
      std::lock_guard<std::mutex> l(mu_);
      want_origin_ = true;
      want_origin_reason_ = "scheduler: " + resp.need_back_to_source().reason();
      WakeAll();
    } else if (resp.has_empty_task()) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (!layout_known_) (void)SetLayoutLocked(0, kMinPieceLength);
      }
      Finish(Status::Ok());
    }
  }
  std::lock_guard<std::mutex> l(mu_);
  if (!finished_ && !stopping_ && !origin_enabled_) {
    // The scheduler went away mid-download: degrade to the origin rather than fail.
    want_origin_ = true;
    want_origin_reason_ = "scheduler stream closed";
    WakeAll();
  }
}

void PeerTask::HandleCandidates(const sv1::NormalTaskResponse& resp) {
  std::lock_guard<std::mutex> l(mu_);
  if (resp.has_task() && !layout_known_ && resp.task().content_length() >= 0 &&
      resp.task().piece_length() > 0) {
    (void)SetLayoutLocked(resp.task().content_length(), resp.task().piece_length());
  }
  for (const auto& c : resp.candidate_parents()) AddParentLocked(c);
  WakeAll();
}

void PeerTask::Send(sv1::AnnouncePeerRequest& req) {
  req.set_host_id(ctx_.host_id);
  req.set_task_id(request_.task_id);
  req.set_peer_id(peer_id_);
  std::lock_guard<std::mutex> wl(write_mu_);
  if (announce_) (void)announce_->Write(req);
}

void PeerTask::ReportPiece(uint32_t piece, const std::string& parent_id, uint64_t length,
                           uint64_t cost_ns, uint32_t crc) {
  if (!announce_) return;
  sv1::AnnouncePeerRequest req;
  auto* f = req.mutable_piece_finished();
  f->set_piece_number(piece);
  f->set_parent_id(parent_id);
  f->set_length(length);
  f->set_cost_ns(cost_ns);
  f->set_crc32c(crc);
  Send(req);
}

void PeerTask::ReportPieceFailed(uint32_t piece, const std::string& parent_id, bool temporary,
                                 const Status& why) {
  if (!announce_) return;
  sv1::AnnouncePeerRequest req;
  auto* f = req.mutable_piece_failed();
  f->set_piece_number(piece);
  f->set_parent_id(parent_id);
  f->set_temporary(temporary);
  f->set_reason(why.ToString());
  Send(req);
}

void PeerTask::MaybeRescheduleLocked() {
  if (!announce_ || Clock::now() - last_reschedule_ < kRescheduleInterval) return;
  if (parents_.empty()) return;  // still waiting for the first answer
  last_reschedule_ = Clock::now();
  sv1::AnnouncePeerRequest req;
  auto* r = req.mutable_reschedule();
  for (const auto& [id, p] : parents_) {
    if (p->dead) r->add_bad_parent_ids(id);
  }
  r->set_reason("every parent failed");
  // Send() takes write_mu_ only; mu_ is never taken under write_mu_, so this order is safe.
  Send(req);
}

// ---------------------------------------------------------------------------------------------
// Parents and availability

void PeerTask::AddParentLocked(const sv1::CandidateParent& c) {
  if (c.peer_id() == peer_id_ || stopping_) return;
  auto it = parents_.find(c.peer_id());
  if (it != parents_.end()) return;  // known (alive or dead: a dead parent is not retried)
  auto p = std::make_unique<Parent>();
  p->peer_id = c.peer_id();
  p->host_id = c.host().id();
  p->ip = c.host().ip();
  p->grpc_port = static_cast<uint16_t>(c.host().grpc_port());
  p->piece_port = static_cast<uint16_t>(c.host().piece_port());
  if (layout_known_) p->has.assign(layout_.total_pieces(), false);
  p->sync_ctx = std::make_unique<grpc::ClientContext>();
  Parent* raw = p.get();
  parents_[c.peer_id()] = std::move(p);
  raw->sync_thread = std::thread([this, raw] { SyncParent(raw); });
}

void PeerTask::SyncParent(Parent* p) {
  auto channel = grpc::CreateChannel(p->ip + ":" + std::to_string(p->grpc_port),
                                     grpc::InsecureChannelCredentials());
  auto stub = dv1::DfdaemonUpload::NewStub(channel);
  dv1::SyncPiecesRequest req;
  req.set_task_id(request_.task_id);
  req.set_child_peer_id(peer_id_);
  req.set_child_host_id(ctx_.host_id);
  auto reader = stub->SyncPieces(p->sync_ctx.get(), req);
  dv1::PieceAvailability msg;
  while (reader->Read(&msg)) {
    std::lock_guard<std::mutex> l(mu_);
    if (!layout_known_ && msg.content_length() >= 0 && msg.piece_length() > 0) {
      (void)SetLayoutLocked(msg.content_length(), msg.piece_length());
    }
    if (!layout_known_ || msg.content_length() != static_cast<int64_t>(layout_.content_length)) {
      continue;  // a parent that disagrees on the size is ignored until it agrees
    }
    // Wake one worker per piece it can now fetch, not all of them for every message: with one
    // message per verified piece, waking every worker each time costs more CPU than the data.
    uint32_t useful = 0;
    for (uint32_t n : msg.piece_numbers()) {
      if (n >= p->has.size() || p->has[n]) continue;
      p->has[n] = true;
      if (pieces_[n] == PieceState::kMissing) ++useful;
    }
    p->done = p->done || msg.done();
    for (uint32_t i = 0; i < useful && i < ctx_.config->concurrency; ++i) work_cv_.notify_one();
  }
  grpc::Status s = reader->Finish();
  std::lock_guard<std::mutex> l(mu_);
  if (!p->dead && !stopping_ && !finished_) {
    DF_LOG_INFO("task {} parent {} availability stream ended: {}", request_.task_id.substr(0, 12),
                p->peer_id, s.error_message());
  }
  // A parent that finished and closed its stream can still serve what it announced.
  if (!p->done) p->dead = true;
  WakeAll();
}

// ---------------------------------------------------------------------------------------------
// Workers

Status PeerTask::SetLayoutLocked(int64_t content_length, uint64_t piece_length) {
  DF_RETURN_IF_ERROR(storage_->SetContentLength(content_length, piece_length));
  layout_ = PieceLayout{static_cast<uint64_t>(content_length), piece_length};
  layout_known_ = true;
  struct statfs fs {};
  content_on_tmpfs_ =
      ::fstatfs(storage_->content_fd(), &fs) == 0 && fs.f_type == static_cast<long>(TMPFS_MAGIC);
  uint32_t n = layout_.total_pieces();
  pieces_.assign(n, PieceState::kMissing);
  attempts_.assign(n, 0);
  for (auto& [id, p] : parents_) p->has.assign(n, false);
  done_count_ = 0;
  completed_bytes_ = 0;
  for (uint32_t i : storage_->FinishedPieces()) {
    if (i < n && pieces_[i] != PieceState::kDone) {
      pieces_[i] = PieceState::kDone;
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
  // Rarest first among what live parents hold; among equally rare pieces the lowest number.
  // The seed fetches from the origin in piece order, so in-order requests let a chain of peers
  // forward each piece one hop per piece time, instead of leaving it in a random backlog.
  uint32_t best_count = UINT32_MAX;
  Parent* best_parent = nullptr;
  for (uint32_t i = 0; i < pieces_.size(); ++i) {
    if (pieces_[i] != PieceState::kMissing) continue;
    uint32_t count = 0;
    Parent* choice = nullptr;
    double choice_cost = 0;
    for (auto& [id, p] : parents_) {
      if (p->dead || i >= p->has.size() || !p->has[i]) continue;
      ++count;
      if (only ? p.get() != only : p->connections >= ctx_.config->per_parent_concurrency) continue;
      double rate = p->rate_bytes_per_sec > 0 ? p->rate_bytes_per_sec : kUnknownRateBytesPerSec;
      double cost = (p->inflight + 1) / rate;
      if (!choice || cost < choice_cost) {
        choice = p.get();
        choice_cost = cost;
      }
    }
    if (!choice) continue;
    if (count < best_count) {
      best_count = count;
      best_parent = choice;
      a.piece = i;
    }
  }
  if (best_parent) {
    a.kind = Assignment::kParent;
    a.parent = best_parent;
    return a;
  }
  if (only || !origin_enabled_) return a;
  if (origin_sequential_) {
    if (origin_inflight_ > 0) return a;
    a.kind = Assignment::kOrigin;
    return a;
  }
  if (origin_inflight_ >= ctx_.config->origin_concurrency) return a;
  for (uint32_t i = 0; i < pieces_.size(); ++i) {
    if (pieces_[i] == PieceState::kMissing) {
      a.kind = Assignment::kOrigin;
      a.piece = i;
      return a;
    }
  }
  return a;
}

void PeerTask::Worker() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stopping_ && !finished_) {
    Assignment a = PickLocked(nullptr);
    if (a.kind == Assignment::kNone) {
      work_cv_.wait_for(l, std::chrono::milliseconds(500));
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
    pieces_[a.piece] = PieceState::kInFlight;
    uint32_t crc = 0;
    auto start = Clock::now();
    ++origin_inflight_;
    l.unlock();
    Status s = FetchFromOrigin(a.piece, &crc);
    auto cost_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    l.lock();
    --origin_inflight_;
    CompletePieceLocked(l, a, s, crc, cost_ns);
  }
}

void PeerTask::FetchFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t first) {
  // One connection, with up to `pipeline` requests queued on it: the parent sends the pieces
  // back to back, at the full rate of its uplink and without a round trip between them.
  const size_t pipeline = std::max<uint32_t>(ctx_.config->piece_pipeline_depth, 1);
  std::unique_ptr<PieceClient> client;
  if (!p->idle_clients.empty()) {
    client = std::move(p->idle_clients.back());
    p->idle_clients.pop_back();
  } else {
    PieceClientOptions opts;
    opts.read_timeout_ms = static_cast<int>(ctx_.config->piece_timeout_ms);
    opts.congestion_control = ctx_.config->congestion_control;
    opts.receive_into_mapping = content_on_tmpfs_;
    client = std::make_unique<PieceClient>(p->ip, p->piece_port, opts);
  }
  ++p->connections;
  std::deque<uint32_t> queue;           // requested on this connection, in order
  auto request = [&](uint32_t piece) {  // called locked; returns locked
    pieces_[piece] = PieceState::kInFlight;
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
    while (queue.size() < pipeline && !stopping_ && !p->dead) {
      Assignment next = PickLocked(p);
      if (next.kind == Assignment::kNone) break;
      broken = request(next.piece);
      if (!broken.ok()) break;
    }
    if (!broken.ok()) break;
    uint32_t piece = queue.front();
    l.unlock();
    auto [lay, fd] = LayoutAndFd();
    PieceNumber n{piece};
    auto r = client->ReceivePiece(n, lay.offset(n), lay.length(n), fd);
    l.lock();
    queue.pop_front();
    --p->inflight;
    Status s = r.ok() ? Status::Ok() : r.status();
    if (s.ok()) {
      p->failures = 0;
      double rate = static_cast<double>(r->length) * 1e9 /
                    static_cast<double>(std::max<uint64_t>(r->cost_ns, 1));
      p->rate_bytes_per_sec =
          p->rate_bytes_per_sec > 0 ? 0.7 * p->rate_bytes_per_sec + 0.3 * rate : rate;
    } else if (s.code() == StatusCode::kNotFound) {
      if (piece < p->has.size()) p->has[piece] = false;  // it no longer has it
    } else {
      // DataLoss leaves the connection usable; anything else dropped it with every request
      // queued on it.
      if (s.code() != StatusCode::kDataLoss) {
        broken = s;
        broken_counted = true;
      }
      CountParentFailureLocked(p);
    }
    Assignment a{Assignment::kParent, piece, p};
    CompletePieceLocked(l, a, s, r.ok() ? r->crc32c : 0, r.ok() ? r->cost_ns : 0);
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
      CountParentFailureLocked(p);
      CompletePieceLocked(l, Assignment{Assignment::kParent, piece, p}, broken, 0, 0);
      continue;
    }
    if (pieces_[piece] == PieceState::kInFlight) pieces_[piece] = PieceState::kMissing;
  }
  if (!queue.empty()) work_cv_.notify_all();
  --p->connections;
  if (broken.ok() && queue.empty() && client->connected() &&
      p->idle_clients.size() < ctx_.config->per_parent_concurrency) {
    p->idle_clients.push_back(std::move(client));
  }
}

void PeerTask::CountParentFailureLocked(Parent* p) {
  if (++p->failures >= kParentFailureLimit) {
    p->dead = true;
    if (p->sync_ctx) p->sync_ctx->TryCancel();
  }
}

void PeerTask::CompletePieceLocked(std::unique_lock<std::mutex>& l, const Assignment& a, Status s,
                                   uint32_t crc, uint64_t cost_ns) {
  uint64_t length = layout_.length(PieceNumber{a.piece});
  std::string parent_id = a.kind == Assignment::kParent ? a.parent->peer_id : std::string();
  if (s.ok()) {
    l.unlock();
    s = storage_->CommitPiece(PieceNumber{a.piece}, crc);
    l.lock();
  }
  if (s.ok()) {
    pieces_[a.piece] = PieceState::kDone;
    (a.kind == Assignment::kParent ? bytes_from_peers_ : bytes_from_origin_) += length;
    OnPieceDoneLocked(a.piece);
    bool all = done_count_ == pieces_.size();
    l.unlock();
    DF_LOG_DEBUG("piece {} of task {} done source={} bytes={} ms={:.1f}", a.piece,
                 request_.task_id.substr(0, 12), parent_id.empty() ? "origin" : parent_id, length,
                 static_cast<double>(cost_ns) / 1e6);
    ReportPiece(a.piece, parent_id, length, cost_ns, crc);
    if (all) Finish(Status::Ok());
    l.lock();
    return;
  }
  pieces_[a.piece] = PieceState::kMissing;
  bool from_origin = a.kind == Assignment::kOrigin;
  bool fatal = (from_origin && IsPermanent(s)) || s.code() == StatusCode::kNoSpace ||
               ++attempts_[a.piece] >= ctx_.config->piece_retry_limit * (from_origin ? 1 : 4);
  l.unlock();
  if (!from_origin) ReportPieceFailed(a.piece, parent_id, s.code() == StatusCode::kNotFound, s);
  DF_LOG_DEBUG("piece {} of task {} failed: {}", a.piece, request_.task_id.substr(0, 12),
               s.ToString());
  if (fatal) Finish(s);
  l.lock();
}

void PeerTask::OnPieceDoneLocked(uint32_t piece) {
  // No wake-up: the worker that finished picks the next piece itself, the controller polls,
  // and Finish() wakes the waiters on completion.
  ++done_count_;
  completed_bytes_ += layout_.length(PieceNumber{piece});
  last_progress_ = Clock::now();
}

std::pair<PieceLayout, int> PeerTask::LayoutAndFd() const {
  std::lock_guard<std::mutex> l(mu_);
  return {layout_, storage_->content_fd()};
}

void PeerTask::WakeAll() const {
  cv_.notify_all();
  work_cv_.notify_all();
}

Status PeerTask::FetchFromOrigin(uint32_t piece, uint32_t* crc) {
  auto backend = ctx_.backends->ForUrl(request_.url);
  if (!backend.ok()) return backend.status();
  auto [lay, fd] = LayoutAndFd();
  PieceNumber n{piece};
  uint64_t offset = lay.offset(n);
  uint32_t c = 0;
  ByteSink sink = [&](const char* data, size_t len) -> Status {
    c = Crc32cExtend(c, data, len);
    DF_RETURN_IF_ERROR(PwriteAll(fd, data, len, &offset));
    std::lock_guard<std::mutex> l(mu_);
    return stopping_ ? Status(StatusCode::kCancelled, "cancelled") : Status::Ok();
  };
  BackendRequest breq{request_.url, request_.headers,
                      static_cast<int64_t>(ctx_.config->piece_timeout_ms), 10000};
  DF_RETURN_IF_ERROR(
      backend.value()->Read(breq, lay.offset(n), static_cast<int64_t>(lay.length(n)), sink));
  *crc = c;
  return Status::Ok();
}

// For origins without range support: one GET streams the whole file; each piece commits as soon
// as its last byte is written, so children can fetch it while the rest still streams.
Status PeerTask::StreamWholeFromOrigin() {
  auto backend = ctx_.backends->ForUrl(request_.url);
  if (!backend.ok()) return backend.status();
  auto [lay, fd] = LayoutAndFd();
  uint64_t offset = 0;
  uint32_t crc = 0;
  uint32_t piece = 0;
  ByteSink sink = [&](const char* data, size_t len) -> Status {
    while (len > 0) {
      uint64_t piece_end = lay.offset(PieceNumber{piece}) + lay.length(PieceNumber{piece});
      size_t take = static_cast<size_t>(std::min<uint64_t>(len, piece_end - offset));
      crc = Crc32cExtend(crc, data, take);
      DF_RETURN_IF_ERROR(PwriteAll(fd, data, take, &offset));
      data += take;
      len -= take;
      if (offset == piece_end) {
        DF_RETURN_IF_ERROR(storage_->CommitPiece(PieceNumber{piece}, crc));
        std::lock_guard<std::mutex> l(mu_);
        if (pieces_[piece] != PieceState::kDone) {
          pieces_[piece] = PieceState::kDone;
          bytes_from_origin_ += lay.length(PieceNumber{piece});
          OnPieceDoneLocked(piece);
        }
        ++piece;
        crc = 0;
      }
    }
    std::lock_guard<std::mutex> l(mu_);
    return stopping_ ? Status(StatusCode::kCancelled, "cancelled") : Status::Ok();
  };
  BackendRequest breq{request_.url, request_.headers, 0, 10000};
  DF_RETURN_IF_ERROR(backend.value()->Read(breq, 0, -1, sink));
  if (offset != lay.content_length) return DataLoss(request_.url + ": origin sent a short body");
  Finish(Status::Ok());
  return Status::Ok();
}

}  // namespace df
