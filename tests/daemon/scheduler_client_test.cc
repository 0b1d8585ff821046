// SchedulerClient with several schedulers: which scheduler a task goes to.
#include "daemon/scheduler_client.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "common/net.h"
#include "daemon/config.h"

namespace df {
namespace {

TEST(SchedulerAddresses, ACommaListIsSplitAndEveryEntryChecked) {
  auto ok = ParseSchedulerAddresses("10.0.0.1:8002, 10.0.0.2:8002,[::1]:8002");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok.value(), (std::vector<std::string>{"10.0.0.1:8002", "10.0.0.2:8002", "[::1]:8002"}));
  for (const char* bad : {"", "a:1,", ",a:1", "a:1,,b:2", "host", "a:1,a:1", ":8002", "a:"}) {
    EXPECT_EQ(ParseSchedulerAddresses(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(SchedulerClientRing, TasksSpreadOverSchedulersAndOnlyAFailedOnesTasksMove) {
  const ControlAuth none;
  SchedulerClient a("10.0.0.1:8002,10.0.0.2:8002,10.0.0.3:8002", &none, nullptr);
  SchedulerClient b("10.0.0.1:8002,10.0.0.2:8002,10.0.0.3:8002", &none, nullptr);
  std::map<std::string, std::string> owner;
  std::map<std::string, int> load;
  for (int i = 0; i < 3000; ++i) {
    const std::string task = "task-" + std::to_string(i);
    owner[task] = a.ForTask(task).address();
    // Every daemon computes the same owner (the hash does not depend on the process).
    ASSERT_EQ(b.ForTask(task).address(), owner[task]);
    ++load[owner[task]];
  }
  ASSERT_EQ(load.size(), 3u);
  for (const auto& [address, n] : load) EXPECT_GT(n, 800) << address << " gets " << n;

  SchedulerClient::Endpoint& failed = a.ForTask("task-0");
  failed.MarkFailed();
  int moved = 0;
  for (const auto& [task, address] : owner) {
    const std::string now = a.ForTask(task).address();
    if (address == failed.address()) {
      EXPECT_NE(now, address) << task;
      ++moved;
    } else {
      EXPECT_EQ(now, address) << task << " moved although its scheduler is up";
    }
  }
  EXPECT_EQ(moved, load[failed.address()]);
}

}  // namespace
}  // namespace df
