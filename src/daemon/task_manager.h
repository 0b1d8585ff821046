// TaskManager: the running PeerTasks of this daemon, one per task id, shared by every client
// that asks for the same task (two dfget calls for one URL download it once).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "daemon/peer_task.h"

namespace df {

// What the daemon's downloads did since it started, for its metrics. Every field only grows.
struct TaskCounters {
  uint64_t started = 0;
  uint64_t succeeded = 0;
  std::map<std::string, uint64_t> failed_by_reason;  // StatusCodeName of the failure
  uint64_t bytes_from_peers = 0;
  uint64_t bytes_from_origin = 0;
};

// Thread-safe. Destroying it cancels and joins every running task.
class TaskManager {
 public:
  explicit TaskManager(const DaemonContext& ctx) : ctx_(ctx) {}
  ~TaskManager();

  // The running task for `req.task_id`, or a new one started for `req`. A task that already
  // finished (either way) or was cancelled is replaced, so a failed download can be retried.
  // Unavailable when max_running_tasks tasks run already.
  Result<std::shared_ptr<PeerTask>> Acquire(const TaskRequest& req);
  // The running task for `task_id`, or null.
  std::shared_ptr<PeerTask> Find(const std::string& task_id);
  // Cancels a running task (DeleteTask). No-op when none runs.
  void Cancel(const std::string& task_id);
  // Cancels every running task (daemon shutdown); they finish once their threads are done.
  void CancelAll();
  // True when the last download of `task_id` here failed or was cancelled and none runs now:
  // this daemon will get no more pieces of it (a parent ends its children's availability
  // streams then, instead of holding them). Remembered for the last kFailedMemory tasks.
  bool Failed(const std::string& task_id) const;
  // Forgets finished (or cancelled) tasks that no client holds any more.
  void Reap();
  size_t running() const;
  // Counts over every task this manager started: those forgotten (finished and reaped, or
  // replaced) and the bytes of those still held.
  TaskCounters Counters() const;

 private:
  // Adds a task that leaves tasks_ to retired_. EXCLUSIVE_LOCKS_REQUIRED(mu_).
  void RetireLocked(const PeerTask& task);

  const DaemonContext ctx_;
  mutable std::mutex mu_;
  static constexpr size_t kFailedMemory = 4096;
  std::map<std::string, std::shared_ptr<PeerTask>> tasks_;  // GUARDED_BY(mu_)
  std::set<std::string> failed_;  // GUARDED_BY(mu_): reaped tasks whose download failed
  TaskCounters retired_;          // GUARDED_BY(mu_): started, and all about tasks gone
};

// Places the task's content at `output_path` atomically: a hard link to the content on its
// filesystem (free, whatever the size), else an in-kernel copy (reflink where the filesystem
// shares extents), under a temporary name in the output's directory (not fsynced), then
// rename(2). An edit of a linked output in place writes the cached content too; the store
// re-verifies such content before a download reuses it (PieceStore::OpenTask) and children
// verify every piece they fetch, so edited bytes never pass for the task's. Only a regular file at
// `output_path` is replaced: a symlink, device, fifo, socket or directory there gives
// InvalidArgument naming the path and is left alone. On any failure the temporary is removed and
// nothing appears at `output_path`.
Status PlaceOutput(const std::string& content_path, uint64_t content_length,
                   const std::string& output_path);

// OK when `output_path` holds nothing or a regular file, i.e. what PlaceOutput may replace;
// InvalidArgument naming the path and what is there (symlink, directory, device...) otherwise.
// Lets a request be refused before its download; PlaceOutput checks again.
Status CheckOutputReplaceable(const std::string& output_path);

// Checks the sha256 of `path` against `digest` ("sha256:HEX"); DataLoss on mismatch.
Status VerifyDigest(const std::string& path, const std::string& digest);

}  // namespace df
