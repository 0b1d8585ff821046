#include "daemon/task_manager.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>

#include "common/digest.h"
#include "common/fd.h"

namespace df {

TaskManager::~TaskManager() {
  std::map<std::string, std::shared_ptr<PeerTask>> tasks;
  {
    std::lock_guard<std::mutex> l(mu_);
    tasks.swap(tasks_);
  }
  for (auto& [id, t] : tasks) t->Cancel();
  tasks.clear();  // joins each task's threads
}

Result<std::shared_ptr<PeerTask>> TaskManager::Acquire(const TaskRequest& req) {
  std::shared_ptr<PeerTask> old;  // destroyed (joined) outside the lock
  std::lock_guard<std::mutex> l(mu_);
  auto it = tasks_.find(req.task_id);
  if (it != tasks_.end()) {
    // A cancelled task is over even while its threads wind down: a new client gets a new one.
    if (!it->second->Progress().finished && !it->second->cancelled()) return it->second;
    old = std::move(it->second);
    RetireLocked(*old);
    tasks_.erase(it);
  }
  failed_.erase(req.task_id);
  size_t live = 0;
  for (const auto& [id, t] : tasks_) live += t->Progress().finished ? 0 : 1;
  if (live >= ctx_.config->max_running_tasks) {
    return Unavailable("too many downloads running (" + std::to_string(live) +
                       "; max_running_tasks is " + std::to_string(ctx_.config->max_running_tasks) +
                       ")");
  }
  auto t = std::make_shared<PeerTask>(ctx_, req);
  ++retired_.started;
  t->Start();
  tasks_[req.task_id] = t;
  return t;
}

std::shared_ptr<PeerTask> TaskManager::Find(const std::string& task_id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = tasks_.find(task_id);
  return it == tasks_.end() ? nullptr : it->second;
}

void TaskManager::Cancel(const std::string& task_id) {
  if (auto t = Find(task_id)) t->Cancel();
}

bool TaskManager::Failed(const std::string& task_id) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return failed_.count(task_id) > 0;
  TaskProgress p = it->second->Progress();
  return (p.finished && !p.status.ok()) || it->second->cancelled();
}

void TaskManager::CancelAll() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& [id, t] : tasks_) t->Cancel();
}

void TaskManager::Reap() {
  std::vector<std::shared_ptr<PeerTask>> dead;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = tasks_.begin(); it != tasks_.end();) {
      TaskProgress p = it->second->Progress();
      if (it->second.use_count() == 1 && (p.finished || it->second->cancelled())) {
        if (!p.finished || !p.status.ok()) {
          if (failed_.size() >= kFailedMemory) failed_.clear();
          failed_.insert(it->first);
        }
        RetireLocked(*it->second);
        dead.push_back(std::move(it->second));
        it = tasks_.erase(it);
      } else {
        ++it;
      }
    }
  }
}

void TaskManager::RetireLocked(const PeerTask& task) {
  TaskProgress p = task.Progress();
  retired_.bytes_from_peers += p.bytes_from_peers;
  retired_.bytes_from_origin += p.bytes_from_origin;
  if (p.finished && p.status.ok()) {
    ++retired_.succeeded;
  } else {
    // A task retired unfinished was cancelled (DeleteTask, shutdown).
    ++retired_.failed_by_reason[p.finished ? StatusCodeName(p.status.code()) : "Cancelled"];
  }
}

TaskCounters TaskManager::Counters() const {
  std::lock_guard<std::mutex> l(mu_);
  TaskCounters c = retired_;
  for (const auto& [id, t] : tasks_) {
    TaskProgress p = t->Progress();
    c.bytes_from_peers += p.bytes_from_peers;
    c.bytes_from_origin += p.bytes_from_origin;
  }
  return c;
}

size_t TaskManager::running() const {
  std::lock_guard<std::mutex> l(mu_);
  return tasks_.size();
}

namespace {

std::string TempNameFor(const std::string& output_path) {
  size_t slash = output_path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : output_path.substr(0, slash);
  std::string base = slash == std::string::npos ? output_path : output_path.substr(slash + 1);
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return dir + "/." + base + ".dfget-" + std::to_string(rng() % 1000000000) + ".tmp";
}

// Fills `out` with the first `length` bytes of `in`. A reflink (FICLONE) shares extents
// copy-on-write: instant, yet independent of the cache. Where the filesystem cannot, an
// in-kernel copy: copy_file_range, or sendfile where that refuses (across filesystems on older
// kernels).
Status CopyContent(int in, int out, uint64_t length, const std::string& from,
                   const std::string& to) {
  if (::ioctl(out, FICLONE, in) == 0) {
    struct stat st {};
    if (::fstat(out, &st) != 0) return ErrnoStatus("stat " + to, errno);
    if (static_cast<uint64_t>(st.st_size) < length) {
      return DataLoss(from + " is shorter than expected");
    }
    if (::ftruncate(out, static_cast<off_t>(length)) != 0) {
      return ErrnoStatus("truncate " + to, errno);
    }
    return Status::Ok();
  }
  uint64_t left = length;
  while (left > 0) {
    ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, left, 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
      n = ::sendfile(out, in, nullptr, left);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("copy to " + to, errno);
    }
    if (n == 0) return DataLoss(from + " is shorter than expected");
    left -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

// Creates `to` (which must not exist) as a copy of `from`; removes it on failure. Not fsynced,
// as curl and wget do not: a download that returns does not wait for gigabytes to reach the disk
// (the cache copy is made durable in the background, see PieceStore::SyncFinishedTasks).
Status CopyFile(const std::string& from, uint64_t length, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoStatus("open " + from, errno);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out) return ErrnoStatus("create " + to, errno);
  Status s = CopyContent(in.get(), out.get(), length, from, to);
  if (!s.ok()) ::unlink(to.c_str());
  return s;
}

const char* FileKind(mode_t mode) {
  if (S_ISLNK(mode)) return "symlink";
  if (S_ISDIR(mode)) return "directory";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISFIFO(mode)) return "fifo";
  if (S_ISSOCK(mode)) return "socket";
  return "special file";
}

}  // namespace

// Only nothing or a regular file may be replaced: rename(2) replaces a symlink itself, not its
// target (`-O /dev/stdout` as root destroyed the system's /dev/stdout), and devices, fifos,
// sockets and directories are not downloads. lstat, so that a symlink is seen as one. (Another
// check before the rename narrows the window; rename never follows a link, so a swap in it can
// only hurt what the swapper could already change.)
Status CheckOutputReplaceable(const std::string& output_path) {
  struct stat st {};
  if (::lstat(output_path.c_str(), &st) != 0) {
    return errno == ENOENT ? Status::Ok() : ErrnoStatus("lstat " + output_path, errno);
  }
  if (S_ISREG(st.st_mode)) return Status::Ok();
  return InvalidArgument("output path " + output_path + " is a " + FileKind(st.st_mode) +
                         ", not a regular file: refusing to replace it");
}

Status PlaceOutput(const std::string& content_path, uint64_t content_length,
                   const std::string& output_path) {
  DF_RETURN_IF_ERROR(CheckOutputReplaceable(output_path));
  struct stat content_st {};
  struct stat output_st {};
  if (::stat(content_path.c_str(), &content_st) == 0 &&
      ::stat(output_path.c_str(), &output_st) == 0 && content_st.st_dev == output_st.st_dev &&
      content_st.st_ino == output_st.st_ino) {
    return Status::Ok();  // the output already is this content
  }
  std::string tmp = TempNameFor(output_path);
  // A hard link costs nothing, where a copy writes the whole file again (8 peers copying 1 GiB
  // each doubled dfbench's time on one disk). An edit of the output in place then changes the
  // cache too: the store notices (PieceStore: content modified since done) and re-verifies it
  // before any download hands it out again, and children verify every piece they get.
  if (::link(content_path.c_str(), tmp.c_str()) != 0) {
    if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
      return ErrnoStatus("link " + tmp, errno);
    }
    DF_RETURN_IF_ERROR(CopyFile(content_path, content_length, tmp));  // another filesystem
  }
  Status s = CheckOutputReplaceable(output_path);  // the copy may have taken a while
  if (s.ok() && ::rename(tmp.c_str(), output_path.c_str()) != 0) {
    s = ErrnoStatus("rename to " + output_path, errno);
  }
  if (!s.ok()) ::unlink(tmp.c_str());
  return s;
}

Status VerifyDigest(const std::string& path, const std::string& digest) {
  auto want = ParseDigest(digest);
  if (!want.ok()) return want.status();
  auto got = Sha256File(path);
  if (!got.ok()) return got.status();
  if (got.value() != want->hex) {
    return DataLoss("digest mismatch: want sha256:" + want->hex + ", got sha256:" + got.value());
  }
  return Status::Ok();
}

}  // namespace df
