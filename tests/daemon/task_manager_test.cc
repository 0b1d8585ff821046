// TaskManager: one download per task shared by its clients, cancelled tasks reaped and started
// afresh, and the cap on running downloads. No scheduler: every download goes to a real nginx.
#include "daemon/task_manager.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/digest.h"
#include "engine_fixture.h"

namespace df {
namespace {

class TaskManagerTest : public testing::EngineTest {};

TEST_F(TaskManagerTest, ConcurrentAcquiresOfOneTaskShareOneDownload) {
  StartOrigin(4 * kPiece);
  TaskManager manager(ctx_);
  std::vector<std::shared_ptr<PeerTask>> got(8);
  std::vector<std::thread> clients;
  for (auto& g : got) {
    clients.emplace_back([&] { g = manager.Acquire(Request()).value(); });
  }
  for (auto& c : clients) c.join();
  for (const auto& g : got) EXPECT_EQ(g, got[0]);
  ASSERT_TRUE(got[0]->WaitFinished(30000));
  EXPECT_TRUE(got[0]->Progress().status.ok()) << got[0]->Progress().status.ToString();
  EXPECT_LT(origin_->BytesServed(), 2 * size_) << "the task was downloaded more than once";
  EXPECT_EQ(Sha256File(got[0]->storage()->content_path()).value(), sha256_);
}

// Issue 14: after DeleteTask, new downloads of the task waited forever on the dead one and Reap
// never removed it.
TEST_F(TaskManagerTest, ACancelledTaskIsReapedAndANewDownloadOfItStarts) {
  StartOrigin(4 * kPiece, "1m");  // ~4 s: the cancel lands in the middle
  TaskManager manager(ctx_);
  auto first = manager.Acquire(Request()).value();
  manager.Cancel(Request().task_id);
  ASSERT_TRUE(first->WaitFinished(10000)) << "a cancelled download did not finish";
  EXPECT_EQ(first->Progress().status.code(), StatusCode::kCancelled);
  first.reset();  // no client holds it any more
  manager.Reap();
  EXPECT_EQ(manager.Find(Request().task_id), nullptr) << "the cancelled task was not reaped";
  EXPECT_TRUE(manager.Failed(Request().task_id));

  auto second = manager.Acquire(Request()).value();
  ASSERT_TRUE(second->WaitFinished(30000));
  EXPECT_TRUE(second->Progress().status.ok()) << second->Progress().status.ToString();
  EXPECT_EQ(Sha256File(second->storage()->content_path()).value(), sha256_);
  EXPECT_FALSE(manager.Failed(Request().task_id));
}

TEST_F(TaskManagerTest, OverMaxRunningTasksAcquireFailsWithAClearError) {
  StartOrigin(4 * kPiece, "1m");
  config_.max_running_tasks = 1;
  TaskManager manager(ctx_);
  auto running = manager.Acquire(Request());
  ASSERT_TRUE(running.ok()) << running.status().ToString();
  TaskRequest other = Request();
  other.tag = "other";
  other.task_id = TaskId(TaskIdInput{other.url, other.tag, "", 0, {}});
  auto refused = manager.Acquire(other);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("max_running_tasks"), std::string::npos)
      << refused.status().ToString();

  // A client of the running task is not refused: it shares the download.
  EXPECT_EQ(manager.Acquire(Request()).value(), running.value());
  manager.Cancel(Request().task_id);
  ASSERT_TRUE(running.value()->WaitFinished(10000));
  EXPECT_TRUE(manager.Acquire(other).ok()) << "the cap still counted a finished task";
}

}  // namespace
}  // namespace df
