// PeerTask: one download of one task on this host — the download engine.
//
// It registers with the scheduler over the AnnouncePeer stream, subscribes to the piece
// availability of every parent the scheduler names, and runs `concurrency` workers. A worker
// takes the rarest piece some parent with a free connection holds (the parent with the least
// in-flight work over measured rate), then keeps `piece_pipeline_depth` requests queued on that
// one connection for as long as the parent holds pieces this peer misses. Each piece is
// CRC32C-verified, written at its offset, committed to storage (from then on this peer serves it),
// and reported to the scheduler with (parent, size, duration). Without a scheduler, when the
// scheduler says so, or when no parent shows up in time, it goes back to the origin with ranged
// GETs: the system degrades, never fails.
//
// Threads: a controller, one reader of the scheduler stream, one availability reader per parent
// and `concurrency` workers, all owned and joined by the PeerTask.
#pragma once

#include <grpcpp/grpcpp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "common/auth.h"
#include "common/piece.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/piece_client.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"
#include "storage/piece_store.h"

namespace df {

class SchedulerClient;

// What a PeerTask needs from its daemon; everything here outlives every PeerTask.
struct DaemonContext {
  const DaemonConfig* config = nullptr;
  PieceStore* store = nullptr;
  BackendRegistry* backends = nullptr;
  SchedulerClient* scheduler = nullptr;  // null: no scheduler, always back to source
  const ControlAuth* auth = nullptr;     // credentials and token of every control RPC it makes
  std::string host_id;
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
};

// The sha256 of one piece; all zeros = unknown.
using PieceDigest = std::array<uint8_t, 32>;

struct TaskProgress {
  std::string peer_id;
  int64_t content_length = -1;
  uint64_t piece_length = 0;
  uint64_t completed_length = 0;
  uint32_t finished_pieces = 0;
  uint32_t total_pieces = 0;
  uint64_t bytes_from_origin = 0;
  uint64_t bytes_from_peers = 0;
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
  struct Parent;
  enum class PieceState : uint8_t { kMissing, kInFlight, kDone };
  struct Assignment {
    enum Kind { kNone, kParent, kOrigin } kind = kNone;
    uint32_t piece = 0;
    Parent* parent = nullptr;
  };

  // Controller.
  void Run();
  Status Prepare();
  Status EnableOrigin(const std::string& reason);
  void Finish(Status status);

  // Scheduler stream.
  bool OpenAnnounce();
  // Registers again after the stream was lost (controller only); backs off on failure.
  void Reconnect();
  void ReadAnnounce(grpc::ClientReaderWriter<df::scheduler::v1::AnnouncePeerRequest,
                                             df::scheduler::v1::AnnouncePeerResponse>* stream);
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
  void SyncParent(Parent* p);

  // Workers.
  void Worker();
  // The next piece to fetch: from a parent with a free connection (rarest first), else from the
  // origin when allowed. With `only`, a piece that parent holds, to queue on its connection.
  Assignment PickLocked(Parent* only);
  // Fetches `first` and whatever else `p` holds that is missing, over one pipelined connection,
  // until `p` has nothing more to offer. Called and returns with `l` locked.
  void FetchFromParentLocked(std::unique_lock<std::mutex>& l, Parent* p, uint32_t first);
  // One more consecutive failure of `p`; the parent is dropped at kParentFailureLimit.
  void CountParentFailureLocked(Parent* p);
  // Commits (or requeues, or fails the task on) one fetched piece and reports it.
  // `origin_digest`: the sha256 of a piece fetched from the origin, kept and reported.
  void CompletePieceLocked(std::unique_lock<std::mutex>& l, const Assignment& a, Status s,
                           uint32_t crc, uint64_t cost_ns,
                           const PieceDigest* origin_digest = nullptr);
  // Checks a piece a parent served against its origin digest, asking the scheduler for it
  // when needed (waits at most kDigestWait). Ok when it matches, or when the scheduler says no
  // digest can be had for the task (counted, see docs/security.md); DataLoss when it does not
  // match; NotFound when the piece has no digest yet although one is expected (no honest parent
  // can hold a piece the origin fetcher has not fetched).
  Status VerifyPieceLocked(std::unique_lock<std::mutex>& l, uint32_t piece);
  // After registering again: tells the new scheduler the origin digests this peer holds.
  void ReportKnownDigests();
  Status FetchFromOrigin(uint32_t piece, uint32_t* crc, PieceDigest* sha256);
  Status StreamWholeFromOrigin();
  Status SetLayoutLocked(int64_t content_length, uint64_t piece_length);
  // The layout the task spec implies for a size this peer learned itself (origin, empty task).
  Status SetLayoutFromSizeLocked(int64_t content_length);
  void OnPieceDoneLocked(uint32_t piece);
  // The layout and the content file for a fetch; both are fixed once a worker runs.
  std::pair<PieceLayout, int> LayoutAndFd() const;
  // Wakes the controller, WaitFinished() callers and every worker (state changes).
  void WakeAll() const;

  const DaemonContext ctx_;
  const TaskRequest request_;
  const std::string peer_id_;
  std::thread controller_;

  mutable std::mutex mu_;
  mutable std::condition_variable cv_;       // any state change below (controller, waiters)
  mutable std::condition_variable work_cv_;  // workers: a piece may have become assignable
  std::shared_ptr<TaskStorage> storage_;     // GUARDED_BY(mu_)
  bool layout_known_ = false;                // GUARDED_BY(mu_)
  PieceLayout layout_;                       // GUARDED_BY(mu_)
  std::vector<PieceState> pieces_;           // GUARDED_BY(mu_)
  std::vector<uint32_t> attempts_;           // GUARDED_BY(mu_)
  std::vector<PieceDigest> digests_;         // GUARDED_BY(mu_): origin digests by piece
  uint64_t digest_responses_ = 0;            // GUARDED_BY(mu_): PieceDigests answers received
  bool digests_expected_ = false;            // GUARDED_BY(mu_): from the last PieceDigests
  uint32_t unverified_pieces_ = 0;           // GUARDED_BY(mu_): accepted on CRC32C only (no digest)
  uint32_t done_count_ = 0;                  // GUARDED_BY(mu_)
  uint64_t completed_bytes_ = 0;             // GUARDED_BY(mu_)
  uint64_t bytes_from_origin_ = 0;           // GUARDED_BY(mu_)
  uint64_t bytes_from_peers_ = 0;            // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<Parent>> parents_;  // GUARDED_BY(mu_), by peer id
  bool origin_enabled_ = false;                             // GUARDED_BY(mu_)
  bool origin_sequential_ = false;                          // GUARDED_BY(mu_): origin has no ranges
  bool want_origin_ = false;        // GUARDED_BY(mu_): scheduler said back to source
  std::string want_origin_reason_;  // GUARDED_BY(mu_)
  uint32_t origin_inflight_ = 0;    // GUARDED_BY(mu_)
  bool content_on_tmpfs_ = false;   // GUARDED_BY(mu_): receive pieces into a mapping
  bool finished_ = false;           // GUARDED_BY(mu_)
  bool stopping_ = false;           // GUARDED_BY(mu_)
  Status status_;                   // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point last_progress_;    // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point last_reschedule_;  // GUARDED_BY(mu_)
  bool announce_lost_ = false;  // GUARDED_BY(mu_): the scheduler stream ended under us
  bool reader_done_ = false;    // GUARDED_BY(mu_): the stream's reader thread returned
  std::chrono::milliseconds reconnect_backoff_{500};      // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_reconnect_;  // GUARDED_BY(mu_)
  std::vector<std::thread> workers_;

  // Scheduler stream: one writer at a time (write_mu_), one reader thread. The controller
  // replaces the stream after a loss (under write_mu_); only it reads these two pointers
  // without the lock.
  std::mutex write_mu_;
  std::unique_ptr<grpc::ClientContext> announce_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<df::scheduler::v1::AnnouncePeerRequest,
                                           df::scheduler::v1::AnnouncePeerResponse>>
      announce_;
  std::thread announce_reader_;
};

}  // namespace df
