// PeerTask: one download of one task on this host — the download engine.
//
// It registers with the scheduler over the AnnouncePeer stream (a SchedulerSession), subscribes
// to the piece availability of every parent the scheduler names, and runs `concurrency` workers.
// A worker takes the rarest piece some parent with a free connection holds (the parent with the
// least in-flight work over measured rate; see PiecePicker), then keeps `piece_pipeline_depth`
// requests queued on that one connection for as long as the parent holds pieces this peer
// misses. Each piece is CRC32C-verified, written at its offset, committed to storage (from then
// on this peer serves it), and reported to the scheduler with (parent, size, duration). Without
// a scheduler, when the scheduler says so, or when no parent shows up in time, it goes back to
// the origin with ranged GETs: the system degrades, never fails.
//
// Endgame: once no missing piece is left to assign (everything remaining is in flight), a piece
// whose copy has been arriving for more than max(2x the time its parent's measured rate predicts,
// 1 s) is requested again from a second parent that holds it and has a free connection. At most
// one duplicate per piece and `concurrency` at once. The duplicate is received on a connection of
// its own into a temporary file (never into the content file, where the original is still being
// written); the first copy to arrive and verify commits, once. When the duplicate wins, the
// original's connection is cut (not counted against its parent) and the duplicate is copied into
// place only after the original's receive has returned; when the original wins, the duplicate is
// cut and discarded. Received duplicate bytes are counted (TaskProgress, and the daemon's
// df_daemon_endgame_duplicate_bytes_total).
//
// Time: liveness timers (stall detection, reschedule interval, reconnect backoff, schedule
// timeout, endgame) read DaemonContext::clock; tests drive them with a ManualClock.
//
// Parts, each with tests of its own: the SchedulerSession (the AnnouncePeer stream), the
// PiecePicker (which piece next, from which parent), the ParentSet (the parents named, their
// liveness and measured rates, kept in step with the picker) and the OriginSource. PeerTask owns
// the threads and the connections and ties the parts together under one mutex.
//
// Threads: a controller, one reader of the scheduler stream, one availability reader per parent
// and `concurrency` workers, all owned and joined by the PeerTask.
#pragma once

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>

#include "backend/backend.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/piece.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/origin_source.h"
#include "daemon/parent_set.h"
#include "daemon/piece_client.h"
#include "daemon/piece_picker.h"
#include "daemon/scheduler_client.h"
#include "daemon/scheduler_session.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"
#include "storage/piece_store.h"

namespace df {

// What a PeerTask needs from its daemon; everything here outlives every PeerTask.
struct DaemonContext {
  const DaemonConfig* config = nullptr;
  PieceStore* store = nullptr;
  BackendRegistry* backends = nullptr;
  SchedulerClient* scheduler = nullptr;  // null: no scheduler, always back to source
  const ControlAuth* auth = nullptr;     // credentials and token of every control RPC it makes
  std::string host_id;
  // The time of the engine's liveness timers; null: the steady clock. Tests pass a ManualClock.
  const Clock* clock = nullptr;
  // Piece bytes received a second time by endgame, summed over tasks; null: not exported.
  prometheus::Counter* endgame_duplicate_bytes = nullptr;
  // Piece fetches that failed, labelled {source="peer"|"origin", reason=<status code name>};
  // fetches cut because the task stops are not failures. Null: not exported.
  prometheus::Family<prometheus::Counter>* piece_failures = nullptr;
  // Downloads that went to the origin, labelled {reason} (daemon_metrics.h's kBackToSource*).
  // Null: not exported.
  prometheus::Family<prometheus::Counter>* back_to_source = nullptr;
};

// The task to download, as asked by a client (or by the scheduler, for a seed).
struct TaskRequest {
  std::string task_id;
  std::string url;
  std::map<std::string, std::string> headers;
  std::string tag;
  std::string application;
  std::string digest;
  uint64_t piece_length = 0;                       // 0: chosen from the size
  std::vector<std::string> filtered_query_params;  // part of the id (task_spec.h)
  bool disable_back_to_source = false;
  bool id_from_digest = false;  // task_id is the digest's hex (TaskSpec::id_from_digest)
};

struct TaskProgress {
  std::string peer_id;
  int64_t content_length = -1;
  uint64_t piece_length = 0;
  uint64_t completed_length = 0;
  uint32_t finished_pieces = 0;
  uint32_t total_pieces = 0;
  uint64_t bytes_from_origin = 0;
  uint64_t bytes_from_peers = 0;
  // Endgame duplicates requested, and the bytes they received (a completed duplicate counts its
  // piece length whether it won or lost; a cut one counts nothing). Not in the two above.
  uint32_t endgame_duplicates = 0;
  uint64_t endgame_duplicate_bytes = 0;
  // Pieces taken from a parent on CRC32C alone (no origin digest to check them against, see
  // docs/security.md); 0 when every piece was checked or came from the origin.
  uint32_t unverified_pieces = 0;
  bool finished = false;
  Status status;  // meaningful once finished
};

// Thread-safe. Create, Start() once, then poll Progress()/WaitFinished(); destroy to stop.
class PeerTask {
 public:
  PeerTask(const DaemonContext& ctx, TaskRequest request);
  ~PeerTask();  // cancels if still running and joins every thread
  PeerTask(const PeerTask&) = delete;
  PeerTask& operator=(const PeerTask&) = delete;

  void Start();
  // Stops the download; it finishes with Cancelled once its threads are done.
  void Cancel();
  bool cancelled() const;
  TaskProgress Progress() const;
  // True once finished (success or failure); waits at most `timeout_ms`.
  bool WaitFinished(int timeout_ms) const;
  const TaskRequest& request() const { return request_; }
  // The storage of the task; null until the controller opened it.
  std::shared_ptr<TaskStorage> storage() const;

 private:
  using Parent = TaskParent;
  // The connections to one parent, by its ParentIndex: its availability stream (context and
  // reader thread) and the idle piece connections kept for reuse.
  struct ParentLink {
    std::unique_ptr<grpc::ClientContext> sync_ctx;
    std::thread sync_thread;
    std::vector<std::unique_ptr<PieceClient>> idle_clients;
  };
  struct Assignment {
    // kDuplicate: an endgame duplicate of an in-flight piece from `parent`.
    enum Kind { kNone, kParent, kOrigin, kDuplicate } kind = kNone;
    uint32_t piece = 0;
    Parent* parent = nullptr;
    // kParent: asked while the parent was still receiving it (cut-through).
    bool forwarded = false;
  };
  // Which copy of a piece may commit it: the first to arrive takes the claim; the other waits
  // for its verdict (ClaimPieceLocked).
  enum class Copy : uint8_t { kNone, kOriginal, kDuplicate };
  // A piece being received from a parent (the original, written in place) and its endgame
  // duplicate, if any (written into a temporary file). The clients are owned by their workers
  // and are set here only while those hold them.
  struct PieceFetch {
    Clock::TimePoint since;             // the original started to arrive
    Parent* parent = nullptr;           // the original's parent; null: none in flight
    PieceClient* client = nullptr;      // the original's connection
    bool writing = false;               // the original's receive may still write in place
    bool cut = false;                   // the duplicate won and interrupted the original
    Parent* dup_parent = nullptr;       // null: no duplicate
    PieceClient* dup_client = nullptr;  // the duplicate's connection (its own)
    bool dup_cut = false;               // the original won and interrupted the duplicate
    Copy claim = Copy::kNone;
    // The original was asked for while its parent was still receiving it (cut-through), as the
    // parent saw it when the request was sent (pipelined requests wait on the connection).
    bool asked_receiving = false;
  };

  // Controller.
  void Run();
  Status Prepare();
  // True when Prepare() found every piece in storage already (the task is finished): logs the
  // cache hit.
  bool ServedFromCache();
  // Goes back to the origin; `label` is the reason's metric label (kBackToSource*), `reason`
  // what the log and the scheduler read.
  Status EnableOrigin(const char* label, const std::string& reason);
  // Finishes the task with `status`; a content-addressed task (id_from_digest) that would
  // succeed is first checked against its digest, and fails with DataLoss (its content deleted
  // from the store) when it does not match.
  void Finish(Status status);
  Status VerifyContentAddressed();

  // Scheduler stream (session_).
  // Registers with the task's scheduler, telling the pieces held (controller only).
  bool OpenAnnounce();
  // Registers again after the stream was lost (controller only); backs off on failure.
  void Reconnect();
  // The session's callbacks (its reader thread).
  void OnSchedulerResponse(const df::scheduler::v1::AnnouncePeerResponse& resp);
  void OnSchedulerLost();
  // Liveness: parents that gave nothing for piece_timeout and hold nothing new are dropped and
  // replacements asked for.
  void DropStaleParentsLocked();
  void HandleCandidates(const df::scheduler::v1::NormalTaskResponse& resp);
  void Send(df::scheduler::v1::AnnouncePeerRequest& req);
  // `sha256`: the digest of a piece fetched from the origin (null for a parent's piece).
  void ReportPiece(uint32_t piece, const std::string& parent_id, uint64_t length, uint64_t cost_ns,
                   uint32_t crc, const PieceDigest* sha256 = nullptr);
  void ReportPieceFailed(uint32_t piece, const std::string& parent_id, bool temporary,
                         const Status& why);
  void MaybeRescheduleLocked();

  // Parents.
  void AddParentLocked(const df::scheduler::v1::CandidateParent& c);
  // Reads the availability stream of `p` (its thread) on `sync_ctx`, its link's context.
  void SyncParent(Parent* p, grpc::ClientContext* sync_ctx);
  ParentLink& LinkLocked(const Parent& p) { return *links_[p.index.value]; }

  // Workers.
  void Worker();
  // The next piece to fetch: from a parent with a free connection (rarest first), else from the
  // origin when allowed. With `only`, a piece that parent holds, to queue on its connection.
  Assignment PickLocked(Parent* only);
  PieceState StateLocked(uint32_t piece) const { return picker_.state(PieceNumber{piece}); }
  void SetStateLocked(uint32_t piece, PieceState state) {
    picker_.SetState(PieceNumber{piece}, state);
  }
  // Fetches `first` and whatever else `p` holds that is missing, over one pipelined connection,
  // until `p` has nothing more to offer. Called and returns with `l` locked.
  void FetchFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t first);
  // Receives the piece at the head of `client`'s queue from `p` into place and settles it
  // (verify, commit or requeue; endgame-aware). False when the connection is unusable after it
  // (`broken` says why; `broken_counted`: already charged to the parent).
  bool ReceiveHeadLocked(std::unique_lock<std::mutex>& l, Parent* p, PieceClient* client,
                         std::deque<uint32_t>& queue, Status& broken, bool& broken_counted);
  // Options of a connection to a parent.
  PieceClientOptions ParentClientOptions() const;
  // Verifies a piece `p` served (`received`: as VerifyPieceLocked) against its origin digest;
  // blocks `p` for this task when it lied (DataLoss) or keeps serving pieces nobody fetched.
  Status VerifyFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t piece,
                                const FetchedPiece& received);
  // Parent bookkeeping after a piece from `p` settled with `s`: failures, rate, availability.
  // `forwarded`: it was asked for while the parent was still receiving it (cut-through).
  void UpdateParentLocked(Parent* p, uint32_t piece, const Status& s, bool forwarded,
                          uint64_t length, uint64_t cost_ns);

  // Endgame (see the top of this file).
  // An overdue in-flight piece and the second parent to ask for it; kNone when none or disabled.
  Assignment PickEndgameLocked();
  // How long `piece` may take from `p` before it is overdue.
  std::chrono::nanoseconds EndgameWaitLocked(uint32_t piece, const Parent& p) const;
  // Fetches a duplicate of in-flight `piece` from `d` into a temporary file and, when it wins,
  // commits it. Called and returns with `l` locked.
  void FetchDuplicateLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Parent* d);
  // The end of a duplicate that did not commit (`s`: why); requeues the piece when no copy of it
  // is left in flight.
  void EndDuplicateLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Parent* d,
                          const Status& s);
  // The duplicate won: cuts the original (when still writing), waits until its receive returned,
  // then copies the duplicate from `from_fd` into place.
  Status TakeOverPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece, int from_fd);
  // Waits while the other copy of `piece` holds the commit claim; takes it unless the piece is
  // no longer in flight (the other copy committed it) or the task stops. True when taken.
  bool ClaimPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece, Copy who);
  // The original's receive of `piece` starts / is over (committed, failed, lost or cut).
  void BeginReceiveLocked(uint32_t piece, Parent* p, PieceClient* client);
  // Cuts every piece being received (from parents, originals and duplicates): the task stops.
  void InterruptReceivesLocked();
  void EndOriginalLocked(uint32_t piece);
  Clock::TimePoint Now() const { return clock_.Now(); }
  // Commits (or requeues, or fails the task on) one fetched piece and reports it.
  // `origin_digest`: the sha256 of a piece fetched from the origin, kept and reported.
  void CompletePieceLocked(std::unique_lock<std::mutex>& l, const Assignment& a, Status s,
                           uint32_t crc, uint64_t cost_ns,
                           const PieceDigest* origin_digest = nullptr);
  // Checks a piece a parent served, by the SHA-256 computed as it arrived (`received_sha256`),
  // against its origin digest, asking the scheduler for it when needed (waits at most
  // kDigestWait). Ok when it matches, or when the scheduler says no digest can be had for the
  // task (counted, see docs/security.md); DataLoss when it does not match; NotFound when the
  // piece has no digest yet although one is expected (no honest parent can hold a piece the
  // origin fetcher has not fetched).
  Status VerifyPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece,
                           const std::optional<PieceDigest>& received_sha256);
  // After registering again: tells the new scheduler the origin digests this peer holds.
  void ReportKnownDigests();
  // Origin (origin_): one piece by a ranged GET, or the whole object for an origin without
  // ranges (each piece committed and reported as its last byte lands; finishes the task).
  Status FetchFromOrigin(uint32_t piece, PieceChecksums* sums);
  Status StreamWholeFromOrigin();
  // False once the task stops (the origin's transfers end with Cancelled).
  bool KeepGoing() const;
  Status SetLayoutLocked(int64_t content_length, uint64_t piece_length);
  // The layout the task spec implies for a size this peer learned itself (origin, empty task).
  Status SetLayoutFromSizeLocked(int64_t content_length);
  void OnPieceDoneLocked(uint32_t piece);
  // The layout and the content file for a fetch; both are fixed once a worker runs.
  std::pair<PieceLayout, int> LayoutAndFd() const;
  // Wakes the controller, WaitFinished() callers and every worker (state changes).
  void WakeAll() const;

  const DaemonContext ctx_;
  const Clock& clock_;
  const TaskRequest request_;
  const std::string peer_id_;
  const OriginSource origin_;
  std::thread controller_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;       // any state change below (controller, waiters)
  mutable std::condition_variable work_cv_;  // workers: a piece may have become assignable
  std::shared_ptr<TaskStorage> storage_;     // GUARDED_BY(mu_)
  bool layout_known_ = false;                // GUARDED_BY(mu_)
  PieceLayout layout_;                       // GUARDED_BY(mu_)
  std::vector<uint32_t> attempts_;           // GUARDED_BY(mu_)
  std::vector<PieceDigest> digests_;         // GUARDED_BY(mu_): origin digests by piece
  uint64_t digest_responses_ = 0;            // GUARDED_BY(mu_): PieceDigests answers received
  bool digests_expected_ = false;            // GUARDED_BY(mu_): from the last PieceDigests
  uint32_t unverified_pieces_ = 0;           // GUARDED_BY(mu_): accepted on CRC32C only (no digest)
  uint32_t done_count_ = 0;                  // GUARDED_BY(mu_)
  uint64_t completed_bytes_ = 0;             // GUARDED_BY(mu_)
  uint64_t bytes_from_origin_ = 0;           // GUARDED_BY(mu_)
  uint64_t bytes_from_peers_ = 0;            // GUARDED_BY(mu_)
  std::vector<PieceFetch> fetches_;          // GUARDED_BY(mu_): by piece number
  uint32_t endgame_active_ = 0;              // GUARDED_BY(mu_): duplicates in flight
  uint32_t endgame_duplicates_ = 0;          // GUARDED_BY(mu_)
  uint64_t endgame_duplicate_bytes_ = 0;     // GUARDED_BY(mu_)

  // The state of every piece and what every parent holds (empty until the layout is known).
  PiecePicker picker_;  // GUARDED_BY(mu_)
  // The parents the scheduler named (kept in step with picker_), and their connections.
  ParentSet parents_;                               // GUARDED_BY(mu_)
  std::vector<std::unique_ptr<ParentLink>> links_;  // GUARDED_BY(mu_): by ParentIndex, never null
  bool origin_enabled_ = false;                     // GUARDED_BY(mu_)
  bool origin_sequential_ = false;                  // GUARDED_BY(mu_): origin has no ranges
  bool want_origin_ = false;          // GUARDED_BY(mu_): scheduler said back to source
  std::string want_origin_reason_;    // GUARDED_BY(mu_)
  uint32_t origin_inflight_ = 0;      // GUARDED_BY(mu_)
  bool finished_ = false;             // GUARDED_BY(mu_)
  bool stopping_ = false;             // GUARDED_BY(mu_)
  Status status_;                     // GUARDED_BY(mu_)
  Clock::TimePoint last_progress_;    // GUARDED_BY(mu_)
  Clock::TimePoint last_reschedule_;  // GUARDED_BY(mu_)
  bool announce_lost_ = false;        // GUARDED_BY(mu_): the scheduler stream ended under us
  std::chrono::milliseconds reconnect_backoff_{500};  // GUARDED_BY(mu_)
  Clock::TimePoint next_reconnect_;                   // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;

  // The AnnouncePeer stream; null without a scheduler. Created before any thread, closed by
  // the controller after the workers are joined.
  std::unique_ptr<SchedulerSession> session_;
};

}  // namespace df
