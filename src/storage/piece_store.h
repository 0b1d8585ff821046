// Peer storage: one content file per task, pieces written at their offsets, and metadata
// (task, piece bitmap, per-piece CRC32C) in a crash-safe SQLite database (WAL).
//
// Invariant: a piece is "finished" only after its bytes are in the content file and its CRC32C
// was verified by the writer; CommitPiece records it. After a restart, Open() re-reads every
// recorded piece of unfinished tasks and drops those whose CRC32C no longer matches, so a peer
// never reports or serves a piece it has not verified.
//
// Durability: piece writes are not synced one by one (a power loss may lose recent bytes; the
// re-verification above catches that). When the last piece commits the task is recorded done
// with content_synced = 0; SyncFinishedTasks() (the daemon calls it in the background and at
// shutdown) later fdatasyncs the content and only then records content_synced = 1. So finishing
// a download never waits for a multi-GB flush, and a task recorded done and synced has durable
// bytes: Open() trusts it without reading it (startup stays fast with a large cache). A task
// recorded done but not synced (a crash before the background sync, a store written before the
// content_synced column existed, or an fdatasync that failed) is re-verified on Open() like an
// unfinished one: if every piece still matches, it is synced and marked so; otherwise it becomes
// unfinished and resumes. (A column rather than comparing mtimes with a recorded sync
// time: mtime does not say whether the bytes reached the disk, and clocks move.)
//
// Layout under `dir`:  dir/metadata.db   dir/content/<task_id>
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/fd.h"
#include "common/piece.h"
#include "common/status.h"

namespace df {

// What the store remembers about a task.
struct TaskMeta {
  std::string task_id;
  std::string url;
  int64_t content_length = -1;  // -1 while unknown
  uint64_t piece_length = 0;
  std::string digest;  // "sha256:HEX" or empty
  int64_t created_unix_ms = 0;
  int64_t accessed_unix_ms = 0;
  bool done = false;  // every piece finished
  // The content was fdatasync'ed after the task was done (SyncFinishedTasks); done tasks
  // without it are re-verified on Open().
  bool content_synced = false;
};

class PieceStore;

// One task's content and piece state. Thread-safe. Obtained from PieceStore; shared by the
// downloader, the piece server and availability streams; must not outlive its PieceStore.
class TaskStorage {
 public:
  const std::string& task_id() const { return task_id_; }
  // Content file, opened O_RDWR: writers pwrite() at piece offsets, the server sendfile()s.
  int content_fd() const { return fd_.get(); }
  const std::string& content_path() const { return path_; }

  TaskMeta meta() const;
  PieceLayout layout() const;  // precondition: content length known

  // Records the size once it is known (after the first stat of the origin or a parent).
  // Truncates/extends the content file. InvalidArgument when it contradicts a recorded size.
  Status SetContentLength(int64_t content_length, uint64_t piece_length);

  // Records that piece `n` (already written at its offset) has CRC32C `crc`. Idempotent.
  // Wakes WaitForPieces() callers. When the last piece commits, the task becomes done (recorded
  // unsynced; see SyncContent).
  Status CommitPiece(PieceNumber n, uint32_t crc);

  bool HasPiece(PieceNumber n) const;
  // CRC32C of a finished piece; false when the piece is not finished.
  bool PieceCrc(PieceNumber n, uint32_t* crc) const;
  uint32_t finished_count() const;
  bool done() const;
  // Finished piece numbers in the order they were committed.
  std::vector<uint32_t> FinishedPieces() const;
  // Re-reads every finished piece from the content fd and checks it against its recorded
  // CRC32C. OK when all match; DataLoss naming the first piece that does not (or that the file
  // is too short for). Changes nothing. Reads the whole content: for rare checks (a digest
  // mismatch), never per request.
  Status VerifyContent() const;

  // True when the content file was written after the task became done: an output hard-linked
  // to it (PlaceOutput) was edited in place, say. Compares the file's mtime with the one
  // recorded when the task became done (or was loaded done). One fstat.
  bool ContentModifiedSinceDone() const;
  // Takes the current content as the done content again (after VerifyContent passed).
  void AcceptContent();

  // Blocks until more than `cursor` pieces are finished, the task is done, `timeout_ms` passes
  // or Close() is called; appends pieces finished[cursor..] to `out` and returns the new cursor.
  // A subscriber starts with cursor 0 and passes back what it got.
  size_t WaitForPieces(size_t cursor, int timeout_ms, std::vector<uint32_t>* out) const;

  // ---- Cut-through forwarding (docs/piece_protocol.md, "Forwarding a piece still arriving").
  // The one writer of a piece's bytes in place (the downloader) announces the receive
  // (BeginReceive), moves its watermark as bytes land (AdvanceReceive: bytes in place counted
  // from the piece's start, never decreasing), and ends it: CommitPiece when the piece verified,
  // AbandonReceive otherwise (failed, cut, or about to be overwritten by another copy). The
  // piece server follows a receive with WaitReceive and forwards what is in place; a retry of
  // the piece is a new receive with a new generation, so a follower never mixes two.
  struct ReceiveView {
    enum State : uint8_t { kNone, kReceiving, kCommitted, kAbandoned };
    State state = kNone;
    uint32_t generation = 0;  // 0: no receive of the piece began since the task was opened
    uint64_t bytes = 0;       // in place (the piece's length once committed)
  };
  void BeginReceive(PieceNumber n);
  void AdvanceReceive(PieceNumber n, uint64_t bytes_in_place);
  void AbandonReceive(PieceNumber n);
  // The piece's latest receive, at once.
  ReceiveView CurrentReceive(PieceNumber n) const;
  // Receives in place going on now (begun, not committed or abandoned), over all pieces.
  int ActiveReceives() const;
  // Bytes in place of the receives going on now: progress between piece completions (dfget's
  // bar). Scans every piece under the lock: for a few calls a second, not per chunk.
  uint64_t ReceivingBytes() const;
  // Bytes from offset 0 covered by finished pieces (0..k-1 all finished); the content length
  // once done, 0 while the size is unknown. `from_piece` lets a caller that already knows a
  // finished prefix of that many pieces skip it (the prefix only grows until a delete).
  uint64_t FinishedPrefixBytes(uint32_t* from_piece) const;
  // Waits until receive `generation` of piece `n` has more than `have` bytes in place, or is
  // over (committed, abandoned, or replaced by a newer one), or `deadline` passes, or Close()
  // (a receive still going then reads as abandoned: the task was deleted).
  ReceiveView WaitReceive(PieceNumber n, uint32_t generation, uint64_t have,
                          std::chrono::steady_clock::time_point deadline) const;

  // Availability for a child: like WaitForPieces, and also the pieces whose receive in place got
  // its first bytes since the last call, which a child may ask for with cut-through.
  struct AvailabilityCursor {
    size_t finished = 0;
    size_t receiving = 0;
  };
  void WaitForAvailability(AvailabilityCursor* cursor, int timeout_ms,
                           std::vector<uint32_t>* finished, std::vector<uint32_t>* receiving) const;

  // Listeners for code that cannot block in WaitForAvailability (a stream served by gRPC's
  // callback API). `fn` runs whenever a WaitForAvailability caller would be woken: the size
  // learned, a piece committed, a receive's first bytes, Close(). It runs on the thread that
  // made the change, outside the task's lock, and must be quick: post work, never do it.
  // RemoveAvailabilityListener returns once no call of that `fn` runs, so what `fn` points at
  // may be freed after it. `fn` must not add or remove listeners.
  uint64_t AddAvailabilityListener(std::function<void()> fn);
  void RemoveAvailabilityListener(uint64_t id);

  // Wakes every waiter; later waits return at once. Called when the task is deleted.
  void Close();
  bool closed() const;

  // Constructed by PieceStore only.
  TaskStorage(PieceStore* store, TaskMeta meta, std::string path, UniqueFd fd,
              std::vector<std::pair<uint32_t, uint32_t>> finished);

 private:
  friend class PieceStore;
  // Sets the in-memory access time (persisted by OpenTask).
  void Touch(int64_t now_unix_ms);
  // For a done task not synced yet: fdatasync the content, then record content_synced = 1
  // (a failed sync is logged and leaves the task to be re-verified on the next Open()). Returns
  // whether it synced anything.
  Result<bool> SyncContent();
  // Sizes the per-piece vectors for `total_pieces`. EXCLUSIVE_LOCKS_REQUIRED(mu_).
  void ResizeLocked(uint32_t total_pieces);

  PieceStore* const store_;
  const std::string task_id_;
  const std::string path_;
  UniqueFd fd_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  TaskMeta meta_;                // GUARDED_BY(mu_)
  std::vector<uint32_t> crc_;    // GUARDED_BY(mu_); index = piece number
  std::vector<bool> have_;       // GUARDED_BY(mu_)
  std::vector<uint32_t> order_;  // GUARDED_BY(mu_); commit order
  struct Receive {
    uint64_t bytes = 0;
    uint32_t generation = 0;
    ReceiveView::State state = ReceiveView::kNone;
  };
  std::vector<Receive> receives_;    // GUARDED_BY(mu_); index = piece number
  std::vector<uint32_t> begun_;      // GUARDED_BY(mu_); receives' first bytes, in order
  uint32_t next_generation_ = 1;     // GUARDED_BY(mu_)
  int active_receives_ = 0;          // GUARDED_BY(mu_): receives_ in state kReceiving
  mutable int receive_waiters_ = 0;  // GUARDED_BY(mu_): WaitReceive callers waiting
  // Receive progress and ends; separate from cv_ so that the watermark moving every chunk does
  // not wake availability streams.
  mutable std::condition_variable receive_cv_;
  bool closed_ = false;  // GUARDED_BY(mu_)
  // Calls every availability listener; called without mu_ held.
  void NotifyAvailability() const;
  // Separate from mu_: listeners run under it, and they may read this task (under mu_).
  mutable std::mutex listeners_mu_;
  std::vector<std::pair<uint64_t, std::function<void()>>> listeners_;  // GUARDED_BY(listeners_mu_)
  uint64_t next_listener_id_ = 1;                                      // GUARDED_BY(listeners_mu_)
  int64_t done_mtime_ns_ = -1;  // GUARDED_BY(mu_): content mtime when done; -1 = not done
};

// Garbage collection policy.
struct GcPolicy {
  int64_t task_ttl_ms = 6 * 3600 * 1000;  // finished tasks not accessed for this long go
  double disk_high_watermark = 0.90;      // above this used fraction of the filesystem...
  double disk_low_watermark = 0.70;       // ...delete least recently used tasks down to this
};

// Why CollectGarbage deleted a task (the `reason` of its log line and of the daemon's
// df_daemon_evictions_total).
enum class EvictionReason { kTtl, kDiskHighWatermark };
inline constexpr size_t kEvictionReasons = 2;
const char* EvictionReasonName(EvictionReason reason);  // "ttl", "disk_high_watermark"

// Tasks CollectGarbage deleted for one reason since the store was opened, and their content
// bytes (known content length; 0 for a task whose length was never learned).
struct EvictionCount {
  uint64_t tasks = 0;
  uint64_t bytes = 0;
};

// The store. Thread-safe.
class PieceStore {
 public:
  // Opens (creating) the store in `dir`; re-verifies unfinished tasks' pieces (see above).
  // IoError when the directory or database cannot be opened.
  static Result<std::unique_ptr<PieceStore>> Open(const std::string& dir);
  ~PieceStore();

  // Returns the task's storage, creating it (empty content file) when absent. Updates its
  // access time. `meta.task_id` must be non-empty; other fields fill in a new record.
  // A task whose content file was removed or replaced behind the store's back (see
  // FindTask) is dropped first and created afresh.
  Result<std::shared_ptr<TaskStorage>> OpenTask(const TaskMeta& meta);
  // The task's storage if the store has it, else nullptr. When the content file was removed
  // (the open fd has no links left) or replaced (the path names another inode) by hand, the
  // task is dropped (metadata, pieces, and the handle, which is closed) and nullptr returned.
  std::shared_ptr<TaskStorage> FindTask(const std::string& task_id);
  // Removes content and metadata. NotFound when absent. Waiters on it are woken.
  Status DeleteTask(const std::string& task_id);
  std::vector<TaskMeta> ListTasks();

  // Deletes tasks that are idle (no TaskStorage handle held outside the store) and either
  // expired by TTL or, while disk use is above the high watermark, least recently accessed
  // until below the low watermark. Returns the number of tasks deleted. Each deletion is an
  // eviction: one info line `evicted task_id=... url=... reason=...` (URL redacted) and a count
  // in evictions().
  Result<int> CollectGarbage(const GcPolicy& policy);
  // Evictions since Open (never decreases). Thread-safe, lock-free.
  EvictionCount evictions(EvictionReason reason) const;

  // Makes the content of every finished task durable (see Durability above): fdatasync, then
  // content_synced = 1. Returns how many tasks it synced. Called by the daemon's housekeeping
  // and at shutdown; the syncs run without the store's lock.
  Result<int> SyncFinishedTasks();

  const std::string& dir() const { return dir_; }

 private:
  // Deletes an idle task for `reason`: its log line and its count. EXCLUSIVE_LOCKS_REQUIRED(mu_).
  Status EvictLocked(const TaskMeta& meta, EvictionReason reason, const std::string& why);
  friend class TaskStorage;
  PieceStore(std::string dir, void* db);
  Status Exec(const std::string& sql);
  Status PersistPiece(const std::string& task_id, uint32_t piece, uint32_t crc);
  Status PersistMeta(const TaskMeta& meta);
  // Locked variants: EXCLUSIVE_LOCKS_REQUIRED(mu_).
  Status PersistPieceLocked(const std::string& task_id, uint32_t piece, uint32_t crc);
  Status PersistMetaLocked(const TaskMeta& meta);
  // Persists the task's current metadata; the snapshot is taken under mu_ so that concurrent
  // writers never store an older state over a newer one.
  Status PersistTask(const TaskStorage& task);
  // OpenTask without applying meta.content_length. Takes mu_.
  Result<std::shared_ptr<TaskStorage>> OpenOrCreateTask(const TaskMeta& meta);
  // Helpers of Open(); see piece_store.cc.
  Status InitSchema();
  Status LoadTasks();
  // Re-verifies a task recorded done but not synced; updates `meta` (content_synced, or done =
  // false when pieces were lost) and persists it. EXCLUSIVE_LOCKS_REQUIRED(mu_).
  Status ReverifyUnsyncedDoneTaskLocked(TaskMeta& meta, int fd, size_t verified_pieces);
  std::string ContentPath(const std::string& task_id) const;
  // Removes `task_id` from the map, the database and the disk. EXCLUSIVE_LOCKS_REQUIRED(mu_).
  Status DeleteTaskLocked(const std::string& task_id);
  // Drops `task` when its content file is gone or replaced; true when it did.
  // EXCLUSIVE_LOCKS_REQUIRED(mu_).
  Result<bool> DropIfContentGoneLocked(const std::shared_ptr<TaskStorage>& task);

  const std::string dir_;
  std::mutex mu_;
  void* db_;                           // sqlite3*, GUARDED_BY(mu_)
  void* insert_piece_stmt_ = nullptr;  // sqlite3_stmt*, GUARDED_BY(mu_); prepared once
  std::unordered_map<std::string, std::shared_ptr<TaskStorage>> tasks_;  // GUARDED_BY(mu_)
  // Written under mu_ (EvictLocked), read without it (evictions()); indexed by EvictionReason.
  std::array<std::atomic<uint64_t>, kEvictionReasons> evicted_tasks_{};
  std::array<std::atomic<uint64_t>, kEvictionReasons> evicted_bytes_{};
};

}  // namespace df
