#include "daemon/task_manager.h"

#include <fcntl.h>
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
        dead.push_back(std::move(it->second));
        it = tasks_.erase(it);
      } else {
        ++it;
      }
    }
  }
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

Status CopyFile(const std::string& from, uint64_t length, const std::string& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoStatus("open " + from, errno);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out) return ErrnoStatus("create " + to, errno);
  uint64_t left = length;
  while (left > 0) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, left, 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
      n = ::sendfile(out.get(), in.get(), nullptr, left);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("copy to " + to, errno);
    }
    if (n == 0) return DataLoss(from + " is shorter than expected");
    left -= static_cast<uint64_t>(n);
  }
  if (::fsync(out.get()) != 0) return ErrnoStatus("fsync " + to, errno);
  return Status::Ok();
}

}  // namespace

Status PlaceOutput(const std::string& content_path, uint64_t content_length,
                   const std::string& output_path) {
  struct stat content_st, output_st;
  if (::stat(content_path.c_str(), &content_st) == 0 &&
      ::stat(output_path.c_str(), &output_st) == 0 && content_st.st_dev == output_st.st_dev &&
      content_st.st_ino == output_st.st_ino) {
    return Status::Ok();  // the output already is a link to this content
  }
  std::string tmp = TempNameFor(output_path);
  if (::link(content_path.c_str(), tmp.c_str()) != 0) {
    if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
      return ErrnoStatus("link " + tmp, errno);
    }
    Status s = CopyFile(content_path, content_length, tmp);
    if (!s.ok()) {
      ::unlink(tmp.c_str());
      return s;
    }
  }
  if (::rename(tmp.c_str(), output_path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoStatus("rename to " + output_path, err);
  }
  return Status::Ok();
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
