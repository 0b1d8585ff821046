// Specifications of the peer piece store: persistence, crash recovery, deletion, GC, waiting.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <csignal>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "common/crc32c.h"
#include "storage/piece_store.h"

namespace df {
namespace {

constexpr uint64_t kPieceLength = 64 * 1024;

// A temporary directory removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "storage_test.XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Deterministic content of piece `n`: every byte is derived from the piece number.
std::string PieceBytes(uint32_t n, uint64_t length) {
  std::string s(length, '\0');
  for (uint64_t i = 0; i < length; ++i) s[i] = static_cast<char>((n * 131 + i * 7) & 0xff);
  return s;
}

TaskMeta MakeMeta(const std::string& id, int64_t content_length = -1) {
  TaskMeta m;
  m.task_id = id;
  m.url = "http://origin/" + id;
  m.content_length = content_length;
  m.piece_length = kPieceLength;
  return m;
}

// Writes piece `n` at its offset and commits it with its real CRC32C.
void WriteAndCommit(TaskStorage& task, uint32_t n) {
  PieceLayout layout = task.layout();
  std::string bytes = PieceBytes(n, layout.length(PieceNumber{n}));
  ASSERT_EQ(::pwrite(task.content_fd(), bytes.data(), bytes.size(),
                     static_cast<off_t>(layout.offset(PieceNumber{n}))),
            static_cast<ssize_t>(bytes.size()));
  ASSERT_TRUE(task.CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok());
}

std::unique_ptr<PieceStore> OpenStore(const std::string& dir) {
  auto store = PieceStore::Open(dir);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return std::move(store).value();
}

TEST(PieceStore, CommittedPiecesSurviveReopen) {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 5 * kPieceLength + 100));
    ASSERT_TRUE(task.ok());
    EXPECT_EQ((*task)->layout().total_pieces(), 6u);
    for (uint32_t n : {3u, 0u, 5u}) WriteAndCommit(**task, n);
    EXPECT_FALSE((*task)->done());
  }
  auto store = OpenStore(dir.path());
  auto task = store->FindTask("t1");
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->FinishedPieces(), (std::vector<uint32_t>{3, 0, 5}));
  uint32_t crc = 0;
  ASSERT_TRUE(task->PieceCrc(PieceNumber{5}, &crc));
  std::string last = PieceBytes(5, 100);
  EXPECT_EQ(crc, Crc32c(last.data(), last.size()));
  EXPECT_FALSE(task->HasPiece(PieceNumber{1}));
  EXPECT_EQ(task->meta().url, "http://origin/t1");
}

// What dfget streams (-O -) and draws: the finished prefix grows only through consecutive
// pieces, and bytes of receives in place count until their piece commits or is abandoned.
TEST(PieceStore, FinishedPrefixAndReceivingBytesFollowThePieces) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength + 100)).value();
  uint32_t cursor = 0;
  EXPECT_EQ(task->FinishedPrefixBytes(&cursor), 0u);
  WriteAndCommit(*task, 1);
  EXPECT_EQ(task->FinishedPrefixBytes(&cursor), 0u) << "piece 0 is missing: nothing to stream";
  WriteAndCommit(*task, 0);
  EXPECT_EQ(task->FinishedPrefixBytes(&cursor), 2 * kPieceLength);
  EXPECT_EQ(cursor, 2u);
  task->BeginReceive(PieceNumber{2});
  task->AdvanceReceive(PieceNumber{2}, 1000);
  task->BeginReceive(PieceNumber{3});
  task->AdvanceReceive(PieceNumber{3}, 60);
  EXPECT_EQ(task->ReceivingBytes(), 1060u);
  task->AbandonReceive(PieceNumber{3});
  EXPECT_EQ(task->ReceivingBytes(), 1000u);
  WriteAndCommit(*task, 3);
  EXPECT_EQ(task->FinishedPrefixBytes(&cursor), 2 * kPieceLength) << "piece 2 still missing";
  WriteAndCommit(*task, 2);
  EXPECT_EQ(task->ReceivingBytes(), 0u);
  EXPECT_EQ(task->FinishedPrefixBytes(&cursor), 3 * kPieceLength + 100) << "the content length";
  uint32_t stale = 99;
  EXPECT_EQ(task->FinishedPrefixBytes(&stale), 3 * kPieceLength + 100) << "a bad cursor restarts";
}

TEST(PieceStore, LastCommitMakesTaskDoneAndDurable) {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength)).value();
    for (uint32_t n = 0; n < 3; ++n) WriteAndCommit(*task, n);
    EXPECT_TRUE(task->done());
    EXPECT_EQ(task->finished_count(), 3u);
    // Committing again is idempotent.
    EXPECT_TRUE(task->CommitPiece(PieceNumber{1}, 0).ok());
    EXPECT_EQ(task->finished_count(), 3u);
  }
  auto store = OpenStore(dir.path());
  ASSERT_EQ(store->ListTasks().size(), 1u);
  EXPECT_TRUE(store->ListTasks()[0].done);
}

TEST(PieceStore, CorruptedPieceOfUnfinishedTaskIsDroppedOnReopen) {
  TempDir dir;
  std::string path;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 4 * kPieceLength)).value();
    for (uint32_t n : {0u, 1u, 2u}) WriteAndCommit(*task, n);
    path = task->content_path();
  }
  // Flip one byte inside piece 1 behind the store's back.
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, kPieceLength + 10), 1);
  byte = static_cast<char>(byte ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &byte, 1, kPieceLength + 10), 1);
  ::close(fd);

  auto store = OpenStore(dir.path());
  auto task = store->FindTask("t1");
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->FinishedPieces(), (std::vector<uint32_t>{0, 2}));
  // The drop is persistent, not just in memory.
  store.reset();
  store = OpenStore(dir.path());
  EXPECT_EQ(store->FindTask("t1")->FinishedPieces(), (std::vector<uint32_t>{0, 2}));
}

TEST(PieceStore, FinishedTaskWithMissingContentIsDropped) {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", kPieceLength)).value();
    WriteAndCommit(*task, 0);
    ASSERT_TRUE(task->done());
    ::unlink(task->content_path().c_str());
  }
  auto store = OpenStore(dir.path());
  EXPECT_EQ(store->FindTask("t1"), nullptr);
  EXPECT_TRUE(store->ListTasks().empty());
}

// Issue: `rm DATA_DIR/content/<task>` broke every later download of the URL until a restart,
// because the store kept serving the open handle of the deleted file.
TEST(PieceStore, ContentFileRemovedByHandIsNoticedAndTheTaskStartsFresh) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  std::string path;
  {
    auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength)).value();
    for (uint32_t n : {0u, 1u}) WriteAndCommit(*task, n);
    ASSERT_TRUE(task->done());
    path = task->content_path();
  }
  ASSERT_EQ(::unlink(path.c_str()), 0);
  EXPECT_EQ(store->FindTask("t1"), nullptr);

  {
    auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength));
    ASSERT_TRUE(task.ok()) << task.status().ToString();
    EXPECT_FALSE((*task)->done());
    EXPECT_EQ((*task)->finished_count(), 0u);
    struct stat by_path {};
    struct stat by_fd {};
    ASSERT_EQ(::stat(path.c_str(), &by_path), 0) << "a fresh content file is created";
    ASSERT_EQ(::fstat((*task)->content_fd(), &by_fd), 0);
    EXPECT_EQ(by_path.st_ino, by_fd.st_ino);
    EXPECT_EQ(by_path.st_size, static_cast<off_t>(2 * kPieceLength));
  }
  // The drop is recorded: a reopened store does not resurrect the old pieces.
  store.reset();
  EXPECT_EQ(OpenStore(dir.path())->FindTask("t1")->finished_count(), 0u);
}

TEST(PieceStore, ContentFileReplacedByHandIsNoticed) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  std::string path;
  {
    auto task = store->OpenTask(MakeMeta("t1", kPieceLength)).value();
    WriteAndCommit(*task, 0);
    path = task->content_path();
  }
  // Another file now sits at the path (same size, other bytes): the recorded CRC32Cs describe the
  // old inode, not this one.
  std::string tmp = path + ".new";
  std::string other(kPieceLength, 'z');
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, other.data(), other.size()), static_cast<ssize_t>(other.size()));
  ::close(fd);
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0);

  auto task = store->OpenTask(MakeMeta("t1", kPieceLength));
  ASSERT_TRUE(task.ok()) << task.status().ToString();
  EXPECT_FALSE((*task)->done());
  EXPECT_FALSE((*task)->HasPiece(PieceNumber{0}));
}

// Runs `sql` on the store's database behind its back (the store must be closed); the error text
// or "" when it succeeded.
std::string RawSql(const std::string& dir, const std::string& sql) {
  sqlite3* db = nullptr;
  std::string error;
  if (sqlite3_open((dir + "/metadata.db").c_str(), &db) != SQLITE_OK) error = "cannot open";
  char* err = nullptr;
  if (error.empty() && sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    error = err ? err : "error";
  }
  sqlite3_free(err);
  sqlite3_close(db);
  return error;
}

// One integer column of the task's row.
int64_t TaskColumn(const std::string& dir, const std::string& task_id, const std::string& column) {
  sqlite3* db = nullptr;
  sqlite3_open((dir + "/metadata.db").c_str(), &db);
  sqlite3_stmt* q = nullptr;
  int64_t v = -1;
  std::string sql = "SELECT " + column + " FROM tasks WHERE task_id = ?";
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &q, nullptr) == SQLITE_OK) {
    sqlite3_bind_text(q, 1, task_id.c_str(), -1, SQLITE_TRANSIENT);
    if (sqlite3_step(q) == SQLITE_ROW) v = sqlite3_column_int64(q, 0);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

void FlipByte(const std::string& path, off_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char byte = 0;
  ASSERT_EQ(::pread(fd, &byte, 1, offset), 1);
  byte = static_cast<char>(byte ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &byte, 1, offset), 1);
  ::close(fd);
}

// Issue 14: finished tasks were never re-verified after a power loss although their content was
// never synced. Finishing never waits for a flush; the background sync records the content
// durable (content_synced in the task's row), and only then is the task trusted unread.
TEST(PieceStore, FinishedTasksAreRecordedSyncedOnlyAfterTheBackgroundSync) {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength)).value();
    auto other = store->OpenTask(MakeMeta("t2", 2 * kPieceLength)).value();
    WriteAndCommit(*task, 0);
    EXPECT_EQ(store->SyncFinishedTasks().value(), 0) << "nothing is finished yet";
    WriteAndCommit(*task, 1);
    WriteAndCommit(*other, 0);
    ASSERT_TRUE(task->done());
    EXPECT_EQ(TaskColumn(dir.path(), "t1", "done"), 1);
    EXPECT_EQ(TaskColumn(dir.path(), "t1", "content_synced"), 0);
    EXPECT_EQ(store->SyncFinishedTasks().value(), 1);
    EXPECT_EQ(store->SyncFinishedTasks().value(), 0) << "a synced task is not synced again";
  }
  EXPECT_EQ(TaskColumn(dir.path(), "t1", "done"), 1);
  EXPECT_EQ(TaskColumn(dir.path(), "t1", "content_synced"), 1);
  EXPECT_EQ(TaskColumn(dir.path(), "t2", "content_synced"), 0);
}

// A store written before content syncing existed recorded tasks done over unsynced content (a
// power loss could have left holes or stale bytes): Open() re-verifies them like unfinished
// tasks, and a task that lost a piece resumes instead of serving it.
TEST(PieceStore, DoneTaskWhoseContentWasNotSyncedIsReverifiedOnOpen) {
  TempDir dir;
  std::string path;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength)).value();
    for (uint32_t n = 0; n < 3; ++n) WriteAndCommit(*task, n);
    ASSERT_TRUE(task->done());
    path = task->content_path();
  }
  // What the old store left behind: no content_synced column (the error, on a store that
  // predates it, is expected). Then piece 1 loses its bytes.
  (void)RawSql(dir.path(), "ALTER TABLE tasks DROP COLUMN content_synced");
  FlipByte(path, kPieceLength + 10);

  {
    auto store = OpenStore(dir.path());
    auto task = store->FindTask("t1");
    ASSERT_NE(task, nullptr);
    EXPECT_FALSE(task->done());
    EXPECT_EQ(task->FinishedPieces(), (std::vector<uint32_t>{0, 2}));
  }
  EXPECT_EQ(TaskColumn(dir.path(), "t1", "done"), 0) << "the drop is persistent";
  auto store = OpenStore(dir.path());
  auto task = store->FindTask("t1");
  ASSERT_NE(task, nullptr);
  WriteAndCommit(*task, 1);  // and the task resumes
  EXPECT_TRUE(task->done());
}

TEST(PieceStore, DoneTaskThatPassesReverificationIsSyncedAndTrustedAfterwards) {
  TempDir dir;
  {
    auto store = OpenStore(dir.path());
    auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength)).value();
    for (uint32_t n = 0; n < 2; ++n) WriteAndCommit(*task, n);
  }
  (void)RawSql(dir.path(), "ALTER TABLE tasks DROP COLUMN content_synced");
  {
    auto store = OpenStore(dir.path());
    auto task = store->FindTask("t1");
    ASSERT_NE(task, nullptr);
    EXPECT_TRUE(task->done());
    EXPECT_EQ(task->finished_count(), 2u);
  }
  EXPECT_EQ(TaskColumn(dir.path(), "t1", "done"), 1);
  EXPECT_EQ(TaskColumn(dir.path(), "t1", "content_synced"), 1);
}

// Outputs are hard links to the content: an edit in place writes the cached file. The next
// OpenTask (a download reusing the task) checks the content when it changed after the task was
// done, keeps it when it still matches (touched), and starts afresh when it does not.
TEST(PieceStore, EditedContentOfAFinishedTaskIsCheckedBeforeReuse) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  std::string path;
  {
    auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength)).value();
    for (uint32_t n : {0u, 1u}) WriteAndCommit(*task, n);
    ASSERT_TRUE(task->done());
    EXPECT_FALSE(task->ContentModifiedSinceDone());
    path = task->content_path();
  }
  // Touched, bytes unchanged: still the task.
  timespec later[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), later, 0), 0);
  {
    auto task = store->OpenTask(MakeMeta("t1")).value();
    EXPECT_TRUE(task->done());
    EXPECT_FALSE(task->ContentModifiedSinceDone()) << "accepted after the check";
  }
  // Edited through another name of the file (a linked output): a fresh task.
  std::string link = dir.path() + "/output";
  ASSERT_EQ(::link(path.c_str(), link.c_str()), 0);
  FlipByte(link, kPieceLength + 3);
  auto task = store->OpenTask(MakeMeta("t1")).value();
  EXPECT_FALSE(task->done());
  EXPECT_EQ(task->finished_count(), 0u);
  EXPECT_EQ(std::filesystem::file_size(link), 2 * kPieceLength) << "the user's file is left alone";
}

TEST(TaskStorage, VerifyContentChecksEveryFinishedPieceAgainstItsCrc) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength + 7)).value();
  for (uint32_t n : {3u, 0u, 1u}) WriteAndCommit(*task, n);
  EXPECT_TRUE(task->VerifyContent().ok());
  FlipByte(task->content_path(), kPieceLength + 1);
  Status s = task->VerifyContent();
  EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
  EXPECT_NE(s.message().find("piece 1"), std::string::npos) << s.message();
  EXPECT_EQ(task->finished_count(), 3u) << "verifying changes nothing";
}

TEST(PieceStore, DeleteRemovesContentAndMetadataAndWakesWaiters) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1", 2 * kPieceLength)).value();
  WriteAndCommit(*task, 0);
  std::string path = task->content_path();
  std::thread waiter([&] {
    std::vector<uint32_t> got;
    EXPECT_EQ(task->WaitForPieces(1, -1, &got), 1u);  // returns once closed
  });
  ASSERT_TRUE(store->DeleteTask("t1").ok());
  waiter.join();
  struct stat st {};
  EXPECT_NE(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(store->FindTask("t1"), nullptr);
  EXPECT_EQ(store->DeleteTask("t1").code(), StatusCode::kNotFound);
  EXPECT_EQ(task->CommitPiece(PieceNumber{1}, 0).code(), StatusCode::kNotFound);
  store.reset();
  EXPECT_TRUE(OpenStore(dir.path())->ListTasks().empty());
}

TEST(PieceStore, GcDeletesExpiredIdleFinishedTasksOnly) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  {
    auto old_done = store->OpenTask(MakeMeta("old-done", kPieceLength)).value();
    WriteAndCommit(*old_done, 0);
    auto partial = store->OpenTask(MakeMeta("partial", 2 * kPieceLength)).value();
    WriteAndCommit(*partial, 0);
  }
  auto held = store->OpenTask(MakeMeta("held", kPieceLength)).value();
  WriteAndCommit(*held, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));

  GcPolicy policy;
  policy.task_ttl_ms = 5;
  policy.disk_high_watermark = 1.0;  // watermarks off
  auto deleted = store->CollectGarbage(policy);
  ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
  EXPECT_EQ(*deleted, 1);
  EXPECT_EQ(store->FindTask("old-done"), nullptr);
  EXPECT_NE(store->FindTask("partial"), nullptr);  // unfinished tasks do not expire by TTL
  EXPECT_NE(store->FindTask("held"), nullptr);     // in use
  EXPECT_EQ(store->evictions(EvictionReason::kTtl).tasks, 1u);
  EXPECT_EQ(store->evictions(EvictionReason::kTtl).bytes, kPieceLength);
  EXPECT_EQ(store->evictions(EvictionReason::kDiskHighWatermark).tasks, 0u);

  policy.task_ttl_ms = 3600 * 1000;
  EXPECT_EQ(store->CollectGarbage(policy).value(), 0);
  EXPECT_EQ(store->evictions(EvictionReason::kTtl).tasks, 1u);  // counts never go back
}

TEST(PieceStore, GcAboveHighWatermarkSparesTasksInUse) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  { auto a = store->OpenTask(MakeMeta("a", kPieceLength)).value(); }
  auto held = store->OpenTask(MakeMeta("held", kPieceLength)).value();
  GcPolicy policy;
  policy.task_ttl_ms = 3600 * 1000;
  policy.disk_high_watermark = 0.0;  // any disk use is "above": everything idle goes
  policy.disk_low_watermark = 0.0;
  EXPECT_EQ(store->CollectGarbage(policy).value(), 1);
  EXPECT_EQ(store->FindTask("a"), nullptr);
  EXPECT_NE(store->FindTask("held"), nullptr);
  EXPECT_EQ(store->evictions(EvictionReason::kDiskHighWatermark).tasks, 1u);
  EXPECT_EQ(store->evictions(EvictionReason::kDiskHighWatermark).bytes, kPieceLength);
  EXPECT_EQ(store->evictions(EvictionReason::kTtl).tasks, 0u);
}

// The order needs a filesystem whose use the test controls: a small tmpfs of its own (root).
TEST(PieceStore, GcAboveHighWatermarkDeletesIdleTasksLeastRecentlyUsedFirst) {
  TempDir dir;
  std::string mnt = dir.path() + "/tmpfs";
  std::filesystem::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=100m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs (needs root): " << std::strerror(errno);
  }
  {
    auto store = OpenStore(mnt);
    // Three finished tasks of 16 MiB, used in the order old, middle, new: 48 of 100 MiB, plus
    // the metadata database (a few MiB at most).
    const uint64_t pieces = 16 * kMiB / kPieceLength;
    for (const char* id : {"old", "middle", "new"}) {
      auto t = store->OpenTask(MakeMeta(id, static_cast<int64_t>(pieces * kPieceLength))).value();
      for (uint32_t n = 0; n < pieces; ++n) WriteAndCommit(*t, n);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // distinct access times
    }
    GcPolicy policy;
    policy.task_ttl_ms = 3600 * 1000;
    policy.disk_high_watermark = 0.40;  // 0.48 and more is above
    policy.disk_low_watermark = 0.42;   // one task less (0.32 and the database) is enough
    EXPECT_EQ(store->CollectGarbage(policy).value(), 1);
    EXPECT_EQ(store->FindTask("old"), nullptr) << "the least recently used task goes first";
    EXPECT_NE(store->FindTask("middle"), nullptr);
    EXPECT_NE(store->FindTask("new"), nullptr);
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
}

TEST(TaskStorage, WaitForPiecesWakesOnCommit) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength)).value();
  std::vector<uint32_t> got;
  EXPECT_EQ(task->WaitForPieces(0, 10, &got), 0u);  // times out with nothing
  EXPECT_TRUE(got.empty());

  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    WriteAndCommit(*task, 2);
  });
  auto start = std::chrono::steady_clock::now();
  size_t cursor = task->WaitForPieces(0, 10'000, &got);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  writer.join();
  EXPECT_EQ(cursor, 1u);
  EXPECT_EQ(got, (std::vector<uint32_t>{2}));

  WriteAndCommit(*task, 0);
  WriteAndCommit(*task, 1);
  cursor = task->WaitForPieces(cursor, 10'000, &got);
  EXPECT_EQ(cursor, 3u);
  EXPECT_EQ(got, (std::vector<uint32_t>{2, 0, 1}));
  // Done: further waits return at once.
  EXPECT_EQ(task->WaitForPieces(cursor, -1, &got), 3u);
}

TEST(TaskStorage, AReceiveInPlaceIsFollowedUntilItCommitsOrIsAbandoned) {
  using View = TaskStorage::ReceiveView;
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1", 3 * kPieceLength)).value();
  const auto soon = [] { return std::chrono::steady_clock::now() + std::chrono::milliseconds(20); };
  EXPECT_EQ(task->CurrentReceive(PieceNumber{1}).state, View::kNone);

  EXPECT_EQ(task->ActiveReceives(), 0);
  task->BeginReceive(PieceNumber{1});
  EXPECT_EQ(task->ActiveReceives(), 1);
  View first = task->CurrentReceive(PieceNumber{1});
  ASSERT_EQ(first.state, View::kReceiving);
  EXPECT_EQ(first.bytes, 0u);
  // Not announced before its first bytes are in.
  TaskStorage::AvailabilityCursor cursor;
  std::vector<uint32_t> finished, receiving;
  task->WaitForAvailability(&cursor, 10, &finished, &receiving);
  EXPECT_TRUE(finished.empty());
  EXPECT_TRUE(receiving.empty());

  // A waiter wakes when bytes land; the watermark never goes back.
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    task->AdvanceReceive(PieceNumber{1}, 4096);
  });
  View v = task->WaitReceive(PieceNumber{1}, first.generation, 0,
                             std::chrono::steady_clock::now() + std::chrono::seconds(10));
  writer.join();
  EXPECT_EQ(v.bytes, 4096u);
  // Now announced to availability streams as receiving, not as finished.
  task->WaitForAvailability(&cursor, 10'000, &finished, &receiving);
  EXPECT_TRUE(finished.empty());
  EXPECT_EQ(receiving, (std::vector<uint32_t>{1}));
  task->AdvanceReceive(PieceNumber{1}, 100);
  EXPECT_EQ(task->CurrentReceive(PieceNumber{1}).bytes, 4096u);
  // Nothing new: the wait times out with the same view.
  EXPECT_EQ(task->WaitReceive(PieceNumber{1}, first.generation, 4096, soon()).bytes, 4096u);

  // Abandoned, then received again: a new generation, so a follower of the first sees it end.
  task->AbandonReceive(PieceNumber{1});
  EXPECT_EQ(task->CurrentReceive(PieceNumber{1}).state, View::kAbandoned);
  EXPECT_EQ(task->ActiveReceives(), 0);
  task->BeginReceive(PieceNumber{1});
  View second = task->CurrentReceive(PieceNumber{1});
  EXPECT_NE(second.generation, first.generation);
  EXPECT_EQ(second.bytes, 0u);
  EXPECT_NE(task->WaitReceive(PieceNumber{1}, first.generation, 4096, soon()).generation,
            first.generation);

  // The commit ends the receive that wrote the piece; a committed piece never begins again.
  task->AdvanceReceive(PieceNumber{1}, 10);
  WriteAndCommit(*task, 1);
  View done = task->CurrentReceive(PieceNumber{1});
  EXPECT_EQ(done.state, View::kCommitted);
  EXPECT_EQ(task->ActiveReceives(), 0);
  EXPECT_EQ(done.generation, second.generation);
  task->BeginReceive(PieceNumber{1});
  task->AbandonReceive(PieceNumber{1});
  EXPECT_EQ(task->CurrentReceive(PieceNumber{1}).state, View::kCommitted);
  finished.clear();
  receiving.clear();
  task->WaitForAvailability(&cursor, 10'000, &finished, &receiving);
  EXPECT_EQ(finished, (std::vector<uint32_t>{1}));
  EXPECT_EQ(receiving, (std::vector<uint32_t>{1}));  // the second receive
  // A deleted task ends every receive for its followers at once.
  task->BeginReceive(PieceNumber{2});
  View third = task->CurrentReceive(PieceNumber{2});
  task->Close();
  auto start = std::chrono::steady_clock::now();
  View closed = task->WaitReceive(PieceNumber{2}, third.generation, 0,
                                  std::chrono::steady_clock::now() + std::chrono::seconds(10));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(closed.state, View::kAbandoned);
  // Out of range: nothing happens.
  task->BeginReceive(PieceNumber{7});
  task->AdvanceReceive(PieceNumber{7}, 1);
  EXPECT_EQ(task->CurrentReceive(PieceNumber{7}).state, View::kNone);
}

TEST(TaskStorage, SetContentLengthTruncatesAndRejectsContradictions) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("t1")).value();
  EXPECT_EQ(task->meta().content_length, -1);
  ASSERT_TRUE(task->SetContentLength(1000, kPieceLength).ok());
  struct stat st {};
  ASSERT_EQ(::fstat(task->content_fd(), &st), 0);
  EXPECT_EQ(st.st_size, 1000);
  EXPECT_TRUE(task->SetContentLength(1000, kPieceLength).ok());
  EXPECT_EQ(task->SetContentLength(999, kPieceLength).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(task->CommitPiece(PieceNumber{1}, 0).code(), StatusCode::kInvalidArgument);
}

TEST(TaskStorage, EmptyContentIsDoneAtOnce) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("empty", 0)).value();
  EXPECT_TRUE(task->done());
}

TEST(PieceStore, RejectsTaskIdsThatAreNotFileNames) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  for (const char* bad : {"", "../x", "a/b", ".hidden"}) {
    EXPECT_EQ(store->OpenTask(MakeMeta(bad)).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(store->OpenTask(MakeMeta("sha256:0123abcdef")).ok());
}

TEST(PieceStore, NoSpaceIsReportedAsNoSpace) {
  TempDir dir;
  auto store = OpenStore(dir.path());
  auto task = store->OpenTask(MakeMeta("huge")).value();
  Status s = task->SetContentLength(int64_t{1} << 60, kPieceLength);  // 1 EiB
  EXPECT_EQ(s.code(), StatusCode::kNoSpace) << s.ToString();
}

// A child process writes and commits pieces, then dies by SIGKILL (no destructor, no clean
// SQLite close); a new store in this process resumes exactly the committed pieces.
TEST(PieceStore, ResumesAfterKill) {
  TempDir dir;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = PieceStore::Open(dir.path());
    if (!store.ok()) ::_exit(2);
    auto task = (*store)->OpenTask(MakeMeta("t1", 8 * kPieceLength));
    if (!task.ok()) ::_exit(3);
    for (uint32_t n : {7u, 1u, 4u}) {
      std::string bytes = PieceBytes(n, kPieceLength);
      if (::pwrite((*task)->content_fd(), bytes.data(), bytes.size(),
                   static_cast<off_t>(n * kPieceLength)) != static_cast<ssize_t>(kPieceLength) ||
          !(*task)->CommitPiece(PieceNumber{n}, Crc32c(bytes.data(), bytes.size())).ok()) {
        ::_exit(4);
      }
    }
    // Written but never committed: must not be reported after the restart.
    std::string bytes = PieceBytes(2, kPieceLength);
    (void)!::pwrite((*task)->content_fd(), bytes.data(), bytes.size(), 2 * kPieceLength);
    ::kill(::getpid(), SIGKILL);
    ::_exit(5);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL) << wstatus;

  auto store = OpenStore(dir.path());
  auto task = store->FindTask("t1");
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->FinishedPieces(), (std::vector<uint32_t>{7, 1, 4}));
  EXPECT_FALSE(task->HasPiece(PieceNumber{2}));
  // And it carries on: finishing the rest makes it done.
  for (uint32_t n : {0u, 2u, 3u, 5u, 6u}) WriteAndCommit(*task, n);
  EXPECT_TRUE(task->done());
}

}  // namespace
}  // namespace df
