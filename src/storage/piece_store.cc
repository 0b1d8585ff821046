#include "storage/piece_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <vector>

#include "common/crc32c.h"
#include "common/log.h"
#include "common/redact.h"

namespace df {
namespace {

// Lock order: PieceStore::mu_ may be held while taking TaskStorage::mu_, never the reverse
// (TaskStorage calls into the store only without its own lock).

int64_t NowUnixMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

sqlite3* Db(void* db) { return static_cast<sqlite3*>(db); }

Status SqliteError(sqlite3* db, const std::string& what) {
  return IoError("sqlite " + what + ": " + sqlite3_errmsg(db));
}

// RAII prepared statement.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool ok() const { return rc_ == SQLITE_OK; }
  sqlite3_stmt* get() const { return stmt_; }
  Status Error(const std::string& what) const { return SqliteError(db_, what); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

std::string ColumnText(sqlite3_stmt* s, int col) {
  const unsigned char* t = sqlite3_column_text(s, col);
  return t ? reinterpret_cast<const char*>(t) : "";
}

// Task ids become file names: allow only a conservative character set (hex ids, "sha256:..."
// digests) so that an id can never escape the content directory.
bool IsSafeTaskId(const std::string& id) {
  if (id.empty() || id.size() > 200 || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
           c == '-';
  });
}

// CRC32C of `length` bytes at `offset` of `fd`; nullopt-like false when the file is short.
bool ComputeCrc(int fd, uint64_t offset, uint64_t length, std::vector<char>& buf, uint32_t* crc) {
  uint32_t c = 0;
  while (length > 0) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(length, buf.size()));
    ssize_t r = ::pread(fd, buf.data(), want, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c = Crc32cExtend(c, buf.data(), static_cast<size_t>(r));
    offset += static_cast<uint64_t>(r);
    length -= static_cast<uint64_t>(r);
  }
  *crc = c;
  return true;
}

Result<UniqueFd> OpenContentFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd) return ErrnoStatus("open " + path, errno);
  return fd;
}

// Used fraction of the filesystem holding `dir`, as df(1) reports it.
Result<double> DiskUsedFraction(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return ErrnoStatus("statvfs " + dir, errno);
  double used = static_cast<double>(st.f_blocks - st.f_bfree);
  double usable = used + static_cast<double>(st.f_bavail);
  return usable > 0 ? used / usable : 0.0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TaskStorage

namespace {
// The content file's mtime in ns, or -2 when it cannot be read (never equal to a recorded one).
int64_t ContentMtimeNs(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return -2;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}
}  // namespace

TaskStorage::TaskStorage(PieceStore* store, TaskMeta meta, std::string path, UniqueFd fd,
                         std::vector<std::pair<uint32_t, uint32_t>> finished)
    : store_(store),
      task_id_(meta.task_id),
      path_(std::move(path)),
      fd_(std::move(fd)),
      meta_(std::move(meta)) {
  if (meta_.content_length >= 0 && meta_.piece_length > 0) ResizeLocked(layout().total_pieces());
  for (auto [piece, crc] : finished) {
    if (piece >= have_.size() || have_[piece]) continue;
    have_[piece] = true;
    crc_[piece] = crc;
    order_.push_back(piece);
  }
  if (meta_.done) done_mtime_ns_ = ContentMtimeNs(fd_.get());
}

bool TaskStorage::ContentModifiedSinceDone() const {
  std::lock_guard lock(mu_);
  return done_mtime_ns_ >= 0 && ContentMtimeNs(fd_.get()) != done_mtime_ns_;
}

void TaskStorage::AcceptContent() {
  std::lock_guard lock(mu_);
  if (meta_.done) done_mtime_ns_ = ContentMtimeNs(fd_.get());
}

void TaskStorage::ResizeLocked(uint32_t total_pieces) {
  have_.assign(total_pieces, false);
  crc_.assign(total_pieces, 0);
  receives_.assign(total_pieces, Receive{});
  begun_.clear();
  active_receives_ = 0;
  order_.clear();
  order_.reserve(total_pieces);
}

TaskMeta TaskStorage::meta() const {
  std::lock_guard lock(mu_);
  return meta_;
}

PieceLayout TaskStorage::layout() const {
  std::lock_guard lock(mu_);
  return PieceLayout{static_cast<uint64_t>(std::max<int64_t>(meta_.content_length, 0)),
                     meta_.piece_length};
}

Status TaskStorage::SetContentLength(int64_t content_length, uint64_t piece_length) {
  if (content_length < 0 || piece_length == 0) {
    return InvalidArgument("task " + task_id_ + ": invalid content length " +
                           std::to_string(content_length) + " / piece length " +
                           std::to_string(piece_length));
  }
  {
    std::lock_guard lock(mu_);
    if (meta_.content_length >= 0) {
      if (meta_.content_length == content_length && meta_.piece_length == piece_length) {
        return Status::Ok();
      }
      return InvalidArgument("task " + task_id_ + ": content length " +
                             std::to_string(content_length) + "/" + std::to_string(piece_length) +
                             " contradicts recorded " + std::to_string(meta_.content_length) + "/" +
                             std::to_string(meta_.piece_length));
    }
    struct statvfs st {};
    if (::fstatvfs(fd_.get(), &st) == 0 &&
        static_cast<uint64_t>(st.f_bavail) * st.f_frsize < static_cast<uint64_t>(content_length)) {
      return ErrnoStatus(
          "task " + task_id_ + ": reserve " + std::to_string(content_length) + " bytes in " + path_,
          ENOSPC);
    }
    if (::ftruncate(fd_.get(), content_length) != 0) {
      return ErrnoStatus("ftruncate " + path_, errno);
    }
    meta_.content_length = content_length;
    meta_.piece_length = piece_length;
    PieceLayout geometry{static_cast<uint64_t>(content_length), piece_length};
    ResizeLocked(geometry.total_pieces());
    if (geometry.total_pieces() == 0) meta_.done = meta_.content_synced = true;  // no bytes
  }
  cv_.notify_all();
  NotifyAvailability();
  return store_->PersistTask(*this);
}

Status TaskStorage::CommitPiece(PieceNumber n, uint32_t crc) {
  {
    std::lock_guard lock(mu_);
    if (closed_) return NotFound("task " + task_id_ + " was deleted");
    if (n.value >= have_.size()) {
      return InvalidArgument("task " + task_id_ + ": piece " + std::to_string(n.value) +
                             " out of range (" + std::to_string(have_.size()) + " pieces)");
    }
    if (have_[n.value]) return Status::Ok();
  }
  // Persist first: a piece is visible in memory (and so served) only once it is durable.
  DF_RETURN_IF_ERROR(store_->PersistPiece(task_id_, n.value, crc));
  bool became_done = false;
  {
    std::lock_guard lock(mu_);
    if (have_[n.value]) return Status::Ok();  // a concurrent commit of the same piece won
    have_[n.value] = true;
    crc_[n.value] = crc;
    if (Receive& r = receives_[n.value]; r.state == ReceiveView::kReceiving) {
      r.state = ReceiveView::kCommitted;
      --active_receives_;
    }
    order_.push_back(n.value);
    if (order_.size() == have_.size()) {
      meta_.done = true;
      became_done = true;
      done_mtime_ns_ = ContentMtimeNs(fd_.get());
    }
  }
  cv_.notify_all();
  receive_cv_.notify_all();  // a server forwarding this piece sends its end
  NotifyAvailability();
  // If this write is lost in a crash the task is merely re-verified on the next Open().
  if (became_done) return store_->PersistTask(*this);  // done, not synced yet
  return Status::Ok();
}

Result<bool> TaskStorage::SyncContent() {
  {
    std::lock_guard lock(mu_);
    if (!meta_.done || meta_.content_synced || closed_) return false;
  }
  // A persisted done + content_synced lets Open() skip reading the task: the bytes must be on
  // disk first. A failed sync changes nothing: the task is re-verified on the next Open().
  if (::fdatasync(fd_.get()) != 0) {
    DF_LOG_WARN("fdatasync failed, task will be re-verified on restart task_id={} path={}: {}",
                task_id_, path_, ErrnoStatus("fdatasync", errno).message());
    return false;
  }
  {
    std::lock_guard lock(mu_);
    meta_.content_synced = true;
  }
  DF_RETURN_IF_ERROR(store_->PersistTask(*this));
  return true;
}

bool TaskStorage::HasPiece(PieceNumber n) const {
  std::lock_guard lock(mu_);
  return n.value < have_.size() && have_[n.value];
}

bool TaskStorage::PieceCrc(PieceNumber n, uint32_t* crc) const {
  std::lock_guard lock(mu_);
  if (n.value >= have_.size() || !have_[n.value]) return false;
  *crc = crc_[n.value];
  return true;
}

uint32_t TaskStorage::finished_count() const {
  std::lock_guard lock(mu_);
  return static_cast<uint32_t>(order_.size());
}

bool TaskStorage::done() const {
  std::lock_guard lock(mu_);
  return meta_.done;
}

std::vector<uint32_t> TaskStorage::FinishedPieces() const {
  std::lock_guard lock(mu_);
  return order_;
}

Status TaskStorage::VerifyContent() const {
  PieceLayout layout;
  std::vector<std::pair<uint32_t, uint32_t>> finished;
  {
    std::lock_guard lock(mu_);
    layout = PieceLayout{static_cast<uint64_t>(std::max<int64_t>(meta_.content_length, 0)),
                         meta_.piece_length};
    finished.reserve(order_.size());
    for (uint32_t piece : order_) finished.emplace_back(piece, crc_[piece]);
  }
  std::vector<char> buf(1 << 20);
  for (auto [piece, crc] : finished) {
    PieceNumber n{piece};
    uint32_t actual = 0;
    if (!ComputeCrc(fd_.get(), layout.offset(n), layout.length(n), buf, &actual) || actual != crc) {
      return DataLoss("task " + task_id_ + ": piece " + std::to_string(piece) + " of " + path_ +
                      " no longer matches its CRC32C");
    }
  }
  return Status::Ok();
}

size_t TaskStorage::WaitForPieces(size_t cursor, int timeout_ms, std::vector<uint32_t>* out) const {
  std::unique_lock lock(mu_);
  auto ready = [&] { return order_.size() > cursor || meta_.done || closed_; };
  if (timeout_ms < 0) {
    cv_.wait(lock, ready);
  } else {
    cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), ready);
  }
  if (cursor < order_.size()) out->insert(out->end(), order_.begin() + cursor, order_.end());
  return std::max(cursor, order_.size());
}

void TaskStorage::Close() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
  receive_cv_.notify_all();
  NotifyAvailability();
}

bool TaskStorage::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

uint64_t TaskStorage::AddAvailabilityListener(std::function<void()> fn) {
  std::lock_guard lock(listeners_mu_);
  const uint64_t id = next_listener_id_++;
  listeners_.emplace_back(id, std::move(fn));
  return id;
}

void TaskStorage::RemoveAvailabilityListener(uint64_t id) {
  std::lock_guard lock(listeners_mu_);  // waits for a NotifyAvailability in progress
  std::erase_if(listeners_, [id](const auto& l) { return l.first == id; });
}

void TaskStorage::NotifyAvailability() const {
  std::lock_guard lock(listeners_mu_);
  for (const auto& [id, fn] : listeners_) fn();
}

void TaskStorage::BeginReceive(PieceNumber n) {
  {
    std::lock_guard lock(mu_);
    if (n.value >= receives_.size() || have_[n.value]) return;
    Receive& r = receives_[n.value];
    if (r.state != ReceiveView::kReceiving) ++active_receives_;
    r = Receive{0, next_generation_++, ReceiveView::kReceiving};
    if (next_generation_ == 0) next_generation_ = 1;
  }
  receive_cv_.notify_all();  // followers of an older receive of the piece
}

void TaskStorage::AdvanceReceive(PieceNumber n, uint64_t bytes_in_place) {
  std::unique_lock lock(mu_);
  if (n.value >= receives_.size()) return;
  Receive& r = receives_[n.value];
  if (r.state != ReceiveView::kReceiving || bytes_in_place <= r.bytes) return;
  const bool first_bytes = r.bytes == 0;
  r.bytes = bytes_in_place;
  // Notified under the lock only when someone waits: this runs once per received chunk.
  if (receive_waiters_ > 0) receive_cv_.notify_all();
  if (first_bytes) {
    // Announced once bytes are here, not when the receive begins: bytes come only from a
    // source that has them, so peers that follow each other's receives (a cycle of parents)
    // never wait on each other for bytes none of them will get.
    begun_.push_back(n.value);
    lock.unlock();
    cv_.notify_all();
    NotifyAvailability();
  }
}

void TaskStorage::AbandonReceive(PieceNumber n) {
  {
    std::lock_guard lock(mu_);
    if (n.value >= receives_.size()) return;
    Receive& r = receives_[n.value];
    if (r.state != ReceiveView::kReceiving) return;
    r.state = ReceiveView::kAbandoned;
    --active_receives_;
  }
  receive_cv_.notify_all();
}

TaskStorage::ReceiveView TaskStorage::CurrentReceive(PieceNumber n) const {
  std::lock_guard lock(mu_);
  if (n.value >= receives_.size()) return {};
  const Receive& r = receives_[n.value];
  return ReceiveView{r.state, r.generation, r.bytes};
}

uint64_t TaskStorage::ReceivingBytes() const {
  std::lock_guard lock(mu_);
  if (active_receives_ == 0) return 0;
  uint64_t bytes = 0;
  for (const Receive& r : receives_) {
    if (r.state == ReceiveView::kReceiving) bytes += r.bytes;
  }
  return bytes;
}

uint64_t TaskStorage::FinishedPrefixBytes(uint32_t* from_piece) const {
  std::lock_guard lock(mu_);
  if (meta_.content_length < 0 || meta_.piece_length == 0) return 0;
  uint32_t n = *from_piece;
  if (n > have_.size()) n = 0;  // a caller's stale cursor
  while (n < have_.size() && have_[n]) ++n;
  *from_piece = n;
  const uint64_t length = static_cast<uint64_t>(meta_.content_length);
  return std::min<uint64_t>(length, uint64_t{n} * meta_.piece_length);
}

int TaskStorage::ActiveReceives() const {
  std::lock_guard lock(mu_);
  return active_receives_;
}

TaskStorage::ReceiveView TaskStorage::WaitReceive(
    PieceNumber n, uint32_t generation, uint64_t have,
    std::chrono::steady_clock::time_point deadline) const {
  std::unique_lock lock(mu_);
  if (n.value >= receives_.size()) return {};
  auto view = [&] {
    const Receive& r = receives_[n.value];
    return ReceiveView{r.state, r.generation, r.bytes};
  };
  auto ready = [&] {
    const Receive& r = receives_[n.value];
    return closed_ || r.generation != generation || r.state != ReceiveView::kReceiving ||
           r.bytes > have;
  };
  ++receive_waiters_;
  receive_cv_.wait_until(lock, deadline, ready);
  --receive_waiters_;
  ReceiveView v = view();
  if (closed_ && v.state == ReceiveView::kReceiving) v.state = ReceiveView::kAbandoned;  // deleted
  return v;
}

void TaskStorage::WaitForAvailability(AvailabilityCursor* cursor, int timeout_ms,
                                      std::vector<uint32_t>* finished,
                                      std::vector<uint32_t>* receiving) const {
  std::unique_lock lock(mu_);
  auto ready = [&] {
    return order_.size() > cursor->finished || begun_.size() > cursor->receiving || meta_.done ||
           closed_;
  };
  cv_.wait_for(lock, std::chrono::milliseconds(std::max(timeout_ms, 0)), ready);
  if (cursor->finished < order_.size()) {
    finished->insert(finished->end(), order_.begin() + cursor->finished, order_.end());
    cursor->finished = order_.size();
  }
  if (cursor->receiving < begun_.size()) {
    receiving->insert(receiving->end(), begun_.begin() + cursor->receiving, begun_.end());
    cursor->receiving = begun_.size();
  }
}

void TaskStorage::Touch(int64_t now_unix_ms) {
  std::lock_guard lock(mu_);
  meta_.accessed_unix_ms = now_unix_ms;
}

// ---------------------------------------------------------------------------------------------
// PieceStore

PieceStore::PieceStore(std::string dir, void* db) : dir_(std::move(dir)), db_(db) {}

PieceStore::~PieceStore() {
  for (auto& [id, task] : tasks_) task->Close();
  sqlite3_finalize(static_cast<sqlite3_stmt*>(insert_piece_stmt_));
  sqlite3_close(Db(db_));
}

std::string PieceStore::ContentPath(const std::string& task_id) const {
  return dir_ + "/content/" + task_id;
}

Result<std::unique_ptr<PieceStore>> PieceStore::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir + "/content", ec);
  if (ec) return IoError("create " + dir + "/content: " + ec.message());
  std::string db_path = dir + "/metadata.db";
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(db_path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    Status s = IoError("open " + db_path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return s;
  }
  std::unique_ptr<PieceStore> store(new PieceStore(dir, db));
  std::lock_guard lock(store->mu_);
  DF_RETURN_IF_ERROR(store->InitSchema());
  DF_RETURN_IF_ERROR(store->LoadTasks());
  return store;
}

Status PieceStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(Db(db_), sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    Status s = IoError("sqlite exec in " + dir_ + ": " + (err ? err : "unknown error"));
    sqlite3_free(err);
    return s;
  }
  return Status::Ok();
}

Status PieceStore::InitSchema() {
  sqlite3_busy_timeout(Db(db_), 5000);
  // WAL + synchronous=NORMAL: a commit is atomic and survives a process crash without an fsync
  // per piece; on power loss the newest commits may roll back, which only costs a re-download.
  DF_RETURN_IF_ERROR(Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"));
  DF_RETURN_IF_ERROR(
      Exec("CREATE TABLE IF NOT EXISTS tasks ("
           "  task_id TEXT PRIMARY KEY, url TEXT NOT NULL, content_length INTEGER NOT NULL,"
           "  piece_length INTEGER NOT NULL, digest TEXT NOT NULL, created_ms INTEGER NOT NULL,"
           "  accessed_ms INTEGER NOT NULL, done INTEGER NOT NULL,"
           "  content_synced INTEGER NOT NULL DEFAULT 0);"
           "CREATE TABLE IF NOT EXISTS pieces ("
           "  task_id TEXT NOT NULL, piece INTEGER NOT NULL, crc INTEGER NOT NULL,"
           "  UNIQUE (task_id, piece));"));
  // A store from before content_synced: its done tasks were never synced, so the default (0)
  // makes the next LoadTasks() re-verify them once.
  Stmt has_synced(Db(db_),
                  "SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'content_synced'");
  if (!has_synced.ok()) return has_synced.Error("inspect tasks table");
  if (sqlite3_step(has_synced.get()) != SQLITE_ROW) {
    DF_RETURN_IF_ERROR(
        Exec("ALTER TABLE tasks ADD COLUMN content_synced INTEGER NOT NULL DEFAULT 0"));
  }
  auto** stmt = reinterpret_cast<sqlite3_stmt**>(&insert_piece_stmt_);
  if (sqlite3_prepare_v2(Db(db_),
                         "INSERT OR IGNORE INTO pieces (task_id, piece, crc) VALUES (?, ?, ?)", -1,
                         stmt, nullptr) != SQLITE_OK) {
    return SqliteError(Db(db_), "prepare insert piece");
  }
  return Status::Ok();
}

namespace {

std::vector<TaskMeta> ReadTaskRows(sqlite3* db, Status* status) {
  std::vector<TaskMeta> out;
  Stmt q(db,
         "SELECT task_id, url, content_length, piece_length, digest, created_ms, accessed_ms, "
         "done, content_synced FROM tasks");
  if (!q.ok()) {
    *status = q.Error("select tasks");
    return out;
  }
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    TaskMeta m;
    m.task_id = ColumnText(q.get(), 0);
    m.url = ColumnText(q.get(), 1);
    m.content_length = sqlite3_column_int64(q.get(), 2);
    m.piece_length = static_cast<uint64_t>(sqlite3_column_int64(q.get(), 3));
    m.digest = ColumnText(q.get(), 4);
    m.created_unix_ms = sqlite3_column_int64(q.get(), 5);
    m.accessed_unix_ms = sqlite3_column_int64(q.get(), 6);
    m.done = sqlite3_column_int(q.get(), 7) != 0;
    m.content_synced = sqlite3_column_int(q.get(), 8) != 0;
    out.push_back(std::move(m));
  }
  return out;
}

// (piece, crc) of one task in commit order.
std::vector<std::pair<uint32_t, uint32_t>> ReadPieceRows(sqlite3* db, const std::string& task_id) {
  std::vector<std::pair<uint32_t, uint32_t>> out;
  Stmt q(db, "SELECT piece, crc FROM pieces WHERE task_id = ? ORDER BY rowid");
  if (!q.ok()) return out;
  sqlite3_bind_text(q.get(), 1, task_id.c_str(), -1, SQLITE_TRANSIENT);
  while (sqlite3_step(q.get()) == SQLITE_ROW) {
    out.emplace_back(static_cast<uint32_t>(sqlite3_column_int64(q.get(), 0)),
                     static_cast<uint32_t>(sqlite3_column_int64(q.get(), 1)));
  }
  return out;
}

// Keeps the pieces of an unfinished task whose bytes still match their CRC32C.
std::vector<std::pair<uint32_t, uint32_t>> VerifyPieces(
    const TaskMeta& meta, int fd, const std::vector<std::pair<uint32_t, uint32_t>>& recorded) {
  std::vector<std::pair<uint32_t, uint32_t>> kept;
  if (meta.content_length < 0 || meta.piece_length == 0) return kept;
  PieceLayout layout{static_cast<uint64_t>(meta.content_length), meta.piece_length};
  std::vector<char> buf(1 << 20);
  for (auto [piece, crc] : recorded) {
    if (piece >= layout.total_pieces()) continue;
    PieceNumber n{piece};
    uint32_t actual = 0;
    if (ComputeCrc(fd, layout.offset(n), layout.length(n), buf, &actual) && actual == crc) {
      kept.emplace_back(piece, crc);
    }
  }
  return kept;
}

// True when `fd` is no longer the file at `path`: removed (no links left) or replaced by another
// inode. Other stat errors are not taken as proof, so a transient failure drops nothing.
bool ContentFileGone(int fd, const std::string& path) {
  struct stat by_fd {};
  struct stat by_path {};
  if (::fstat(fd, &by_fd) == 0 && by_fd.st_nlink == 0) return true;
  if (::stat(path.c_str(), &by_path) != 0) return errno == ENOENT || errno == ENOTDIR;
  return by_fd.st_dev != by_path.st_dev || by_fd.st_ino != by_path.st_ino;
}

bool ContentFileComplete(const std::string& path, int64_t content_length) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_size >= content_length;
}

}  // namespace

Status PieceStore::LoadTasks() {
  Status status;
  std::vector<TaskMeta> rows = ReadTaskRows(Db(db_), &status);
  DF_RETURN_IF_ERROR(status);
  for (TaskMeta& meta : rows) {
    std::string path = ContentPath(meta.task_id);
    bool trusted = meta.done && meta.content_synced;  // see the header: durable, not re-read
    if (!IsSafeTaskId(meta.task_id) ||
        (meta.done && !ContentFileComplete(path, meta.content_length))) {
      DF_LOG_WARN("dropping task whose content is missing task_id={} path={}", meta.task_id, path);
      DF_RETURN_IF_ERROR(DeleteTaskLocked(meta.task_id));
      continue;
    }
    auto fd = OpenContentFile(path);
    if (!fd.ok()) return fd.status();
    if (!trusted && meta.content_length >= 0 && ::ftruncate(fd->get(), meta.content_length) != 0) {
      // Restores the size of a partial task whose file was truncated or recreated.
      return ErrnoStatus("ftruncate " + path, errno);
    }
    auto recorded = ReadPieceRows(Db(db_), meta.task_id);
    std::vector<std::pair<uint32_t, uint32_t>> finished =
        trusted ? recorded : VerifyPieces(meta, fd->get(), recorded);
    if (meta.done && !trusted) {
      DF_RETURN_IF_ERROR(ReverifyUnsyncedDoneTaskLocked(meta, fd->get(), finished.size()));
    }
    if (finished.size() != recorded.size()) {
      DF_LOG_WARN("dropped unverified pieces task_id={} dropped={} kept={}", meta.task_id,
                  recorded.size() - finished.size(), finished.size());
      DF_RETURN_IF_ERROR(Exec("BEGIN"));
      DF_RETURN_IF_ERROR(Exec("DELETE FROM pieces WHERE task_id = '" + meta.task_id + "'"));
      for (auto [piece, crc] : finished)
        DF_RETURN_IF_ERROR(PersistPieceLocked(meta.task_id, piece, crc));
      DF_RETURN_IF_ERROR(Exec("COMMIT"));
    }
    std::string id = meta.task_id;
    tasks_[id] = std::make_shared<TaskStorage>(this, std::move(meta), std::move(path),
                                               std::move(fd).value(), std::move(finished));
  }
  // Orphan piece rows (a commit racing a delete) carry no task: drop them.
  return Exec("DELETE FROM pieces WHERE task_id NOT IN (SELECT task_id FROM tasks)");
}

Status PieceStore::ReverifyUnsyncedDoneTaskLocked(TaskMeta& meta, int fd, size_t verified_pieces) {
  PieceLayout layout{static_cast<uint64_t>(meta.content_length), meta.piece_length};
  if (verified_pieces == layout.total_pieces()) {
    meta.content_synced = ::fdatasync(fd) == 0;
  } else {
    DF_LOG_WARN("finished task lost pieces since it was recorded unsynced, resuming task_id={}",
                meta.task_id);
    meta.done = false;
  }
  return PersistMetaLocked(meta);
}

Status PieceStore::PersistPiece(const std::string& task_id, uint32_t piece, uint32_t crc) {
  std::lock_guard lock(mu_);
  return PersistPieceLocked(task_id, piece, crc);
}

Status PieceStore::PersistPieceLocked(const std::string& task_id, uint32_t piece, uint32_t crc) {
  auto* stmt = static_cast<sqlite3_stmt*>(insert_piece_stmt_);
  sqlite3_reset(stmt);
  sqlite3_bind_text(stmt, 1, task_id.c_str(), static_cast<int>(task_id.size()), SQLITE_STATIC);
  sqlite3_bind_int64(stmt, 2, piece);
  sqlite3_bind_int64(stmt, 3, crc);
  int rc = sqlite3_step(stmt);
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  if (rc != SQLITE_DONE) {
    return SqliteError(Db(db_), "record piece " + std::to_string(piece) + " of task " + task_id);
  }
  return Status::Ok();
}

Status PieceStore::PersistMeta(const TaskMeta& meta) {
  std::lock_guard lock(mu_);
  return PersistMetaLocked(meta);
}

Status PieceStore::PersistTask(const TaskStorage& task) {
  std::lock_guard lock(mu_);
  return PersistMetaLocked(task.meta());
}

Status PieceStore::PersistMetaLocked(const TaskMeta& meta) {
  Stmt q(Db(db_),
         "INSERT OR REPLACE INTO tasks (task_id, url, content_length, piece_length, digest, "
         "created_ms, accessed_ms, done, content_synced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!q.ok()) return q.Error("prepare insert task");
  sqlite3_bind_text(q.get(), 1, meta.task_id.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(q.get(), 2, meta.url.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.get(), 3, meta.content_length);
  sqlite3_bind_int64(q.get(), 4, static_cast<int64_t>(meta.piece_length));
  sqlite3_bind_text(q.get(), 5, meta.digest.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(q.get(), 6, meta.created_unix_ms);
  sqlite3_bind_int64(q.get(), 7, meta.accessed_unix_ms);
  sqlite3_bind_int(q.get(), 8, meta.done ? 1 : 0);
  sqlite3_bind_int(q.get(), 9, meta.content_synced ? 1 : 0);
  if (sqlite3_step(q.get()) != SQLITE_DONE) return q.Error("record task " + meta.task_id);
  return Status::Ok();
}

Result<std::shared_ptr<TaskStorage>> PieceStore::OpenTask(const TaskMeta& meta) {
  if (!IsSafeTaskId(meta.task_id)) {
    return InvalidArgument("invalid task id '" + meta.task_id + "'");
  }
  auto task = OpenOrCreateTask(meta);
  if (!task.ok()) return task.status();
  // SetContentLength persists through the store, so it runs after mu_ is released.
  if (meta.content_length >= 0 && meta.piece_length > 0 && (*task)->meta().content_length < 0) {
    DF_RETURN_IF_ERROR((*task)->SetContentLength(meta.content_length, meta.piece_length));
  }
  return task;
}

Result<std::shared_ptr<TaskStorage>> PieceStore::OpenOrCreateTask(const TaskMeta& meta) {
  int64_t now_ms = NowUnixMs();
  std::lock_guard lock(mu_);
  if (auto it = tasks_.find(meta.task_id); it != tasks_.end()) {
    std::shared_ptr<TaskStorage> task = it->second;
    auto gone = DropIfContentGoneLocked(task);
    if (!gone.ok()) return gone.status();
    if (!*gone && task->ContentModifiedSinceDone()) {
      // Written after it was done: an output linked to it was edited, say. A download must not
      // hand out those bytes as the task's: check them all, and start afresh if they changed.
      if (task->VerifyContent().ok()) {
        task->AcceptContent();
      } else {
        DF_LOG_WARN(
            "content of finished task changed behind the store (an edited output?), "
            "downloading it again task_id={} path={}",
            task->task_id(), task->content_path());
        DF_RETURN_IF_ERROR(DeleteTaskLocked(task->task_id()));
        gone = true;
      }
    }
    if (!*gone) {
      task->Touch(now_ms);
      DF_RETURN_IF_ERROR(PersistMetaLocked(task->meta()));
      return task;
    }
  }
  std::string path = ContentPath(meta.task_id);
  auto fd = OpenContentFile(path);
  if (!fd.ok()) return fd.status();
  // A stale file from a task whose metadata was lost must not leak old bytes into this one.
  if (::ftruncate(fd->get(), 0) != 0) return ErrnoStatus("ftruncate " + path, errno);
  TaskMeta fresh = meta;
  fresh.content_length = -1;
  fresh.done = false;
  fresh.content_synced = false;
  fresh.created_unix_ms = now_ms;
  fresh.accessed_unix_ms = now_ms;
  DF_RETURN_IF_ERROR(PersistMetaLocked(fresh));
  auto task = std::make_shared<TaskStorage>(this, fresh, path, std::move(fd).value(),
                                            std::vector<std::pair<uint32_t, uint32_t>>{});
  tasks_[meta.task_id] = task;
  return task;
}

std::shared_ptr<TaskStorage> PieceStore::FindTask(const std::string& task_id) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return nullptr;
  std::shared_ptr<TaskStorage> task = it->second;
  auto gone = DropIfContentGoneLocked(task);
  if (!gone.ok()) DF_LOG_WARN("dropping task {}: {}", task_id, gone.status().ToString());
  return gone.ok() && !*gone ? task : nullptr;
}

Result<bool> PieceStore::DropIfContentGoneLocked(const std::shared_ptr<TaskStorage>& task) {
  if (!ContentFileGone(task->content_fd(), task->content_path())) return false;
  // Its pieces and CRC32Cs describe bytes that are no longer at the path: serving them or placing
  // them as an output would hand out the old inode (or fail); forget the task so that the next
  // download starts fresh. Holders of the old handle see it closed.
  DF_LOG_WARN("content file removed or replaced behind the store, dropping task task_id={} path={}",
              task->task_id(), task->content_path());
  DF_RETURN_IF_ERROR(DeleteTaskLocked(task->task_id()));
  return true;
}

Status PieceStore::DeleteTask(const std::string& task_id) {
  std::lock_guard lock(mu_);
  if (tasks_.find(task_id) == tasks_.end()) return NotFound("task " + task_id + " not in store");
  return DeleteTaskLocked(task_id);
}

Status PieceStore::DeleteTaskLocked(const std::string& task_id) {
  if (auto it = tasks_.find(task_id); it != tasks_.end()) {
    it->second->Close();
    tasks_.erase(it);
  }
  Stmt del_pieces(Db(db_), "DELETE FROM pieces WHERE task_id = ?");
  Stmt del_task(Db(db_), "DELETE FROM tasks WHERE task_id = ?");
  for (Stmt* q : {&del_pieces, &del_task}) {
    if (!q->ok()) return q->Error("prepare delete");
    sqlite3_bind_text(q->get(), 1, task_id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q->get()) != SQLITE_DONE) return q->Error("delete task " + task_id);
  }
  if (IsSafeTaskId(task_id)) {
    std::string path = ContentPath(task_id);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoStatus("unlink " + path, errno);
  }
  return Status::Ok();
}

std::vector<TaskMeta> PieceStore::ListTasks() {
  std::lock_guard lock(mu_);
  std::vector<TaskMeta> out;
  out.reserve(tasks_.size());
  for (const auto& [id, task] : tasks_) out.push_back(task->meta());
  return out;
}

Result<int> PieceStore::SyncFinishedTasks() {
  std::vector<std::shared_ptr<TaskStorage>> tasks;
  {
    std::lock_guard lock(mu_);
    for (const auto& [id, task] : tasks_) tasks.push_back(task);
  }
  int synced = 0;
  for (const auto& task : tasks) {
    auto s = task->SyncContent();
    if (!s.ok()) return s.status();
    synced += s.value() ? 1 : 0;
  }
  return synced;
}

const char* EvictionReasonName(EvictionReason reason) {
  switch (reason) {
    case EvictionReason::kTtl:
      return "ttl";
    case EvictionReason::kDiskHighWatermark:
      return "disk_high_watermark";
  }
  return "unknown";
}

EvictionCount PieceStore::evictions(EvictionReason reason) const {
  const auto i = static_cast<size_t>(reason);
  return {evicted_tasks_[i].load(std::memory_order_relaxed),
          evicted_bytes_[i].load(std::memory_order_relaxed)};
}

Status PieceStore::EvictLocked(const TaskMeta& meta, EvictionReason reason,
                               const std::string& why) {
  DF_RETURN_IF_ERROR(DeleteTaskLocked(meta.task_id));
  const uint64_t bytes = static_cast<uint64_t>(std::max<int64_t>(meta.content_length, 0));
  DF_LOG_INFO("evicted task_id={} url={} reason={} {} bytes={}", meta.task_id, RedactUrl(meta.url),
              EvictionReasonName(reason), why, bytes);
  const auto i = static_cast<size_t>(reason);
  evicted_tasks_[i].fetch_add(1, std::memory_order_relaxed);
  evicted_bytes_[i].fetch_add(bytes, std::memory_order_relaxed);
  return Status::Ok();
}

Result<int> PieceStore::CollectGarbage(const GcPolicy& policy) {
  int64_t now_ms = NowUnixMs();
  std::lock_guard lock(mu_);
  // Idle = nobody outside the store holds a handle; while mu_ is held nobody can get a new one.
  std::vector<TaskMeta> idle;
  for (const auto& [id, task] : tasks_) {
    if (task.use_count() == 1) idle.push_back(task->meta());
  }
  int deleted = 0;
  std::vector<TaskMeta> survivors;
  for (const TaskMeta& m : idle) {
    if (m.done && now_ms - m.accessed_unix_ms > policy.task_ttl_ms) {
      DF_RETURN_IF_ERROR(
          EvictLocked(m, EvictionReason::kTtl,
                      fmt::format("unused_s={} ttl_s={}", (now_ms - m.accessed_unix_ms) / 1000,
                                  policy.task_ttl_ms / 1000)));
      ++deleted;
    } else {
      survivors.push_back(m);
    }
  }
  auto used = DiskUsedFraction(dir_);
  if (!used.ok()) return used.status();
  if (*used <= policy.disk_high_watermark) return deleted;
  std::sort(survivors.begin(), survivors.end(), [](const TaskMeta& a, const TaskMeta& b) {
    return a.accessed_unix_ms < b.accessed_unix_ms;
  });
  for (const TaskMeta& m : survivors) {
    DF_RETURN_IF_ERROR(
        EvictLocked(m, EvictionReason::kDiskHighWatermark,
                    fmt::format("disk_used={:.3f} high_watermark={} low_watermark={}", *used,
                                policy.disk_high_watermark, policy.disk_low_watermark)));
    ++deleted;
    used = DiskUsedFraction(dir_);
    if (!used.ok()) return used.status();
    if (*used < policy.disk_low_watermark) break;
  }
  if (deleted > 0) DF_LOG_INFO("storage gc deleted={} dir={}", deleted, dir_);
  return deleted;
}

}  // namespace df
