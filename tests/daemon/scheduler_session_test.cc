// SchedulerSession against an in-process gRPC scheduler (FakeScheduler): registration,
// responses, a lost stream, registering again, and a close that is not a loss.
#include "daemon/scheduler_session.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "fake_scheduler.h"

namespace df {
namespace {

namespace sv1 = df::scheduler::v1;
using namespace std::chrono_literals;

// What the session's callbacks saw.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  int normal = 0;
  int digests = 0;
  int parents = 0;
  int ends = 0;

  template <typename Pred>
  bool Wait(Pred pred) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, 10s, pred);
  }
};

class SchedulerSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(scheduler_.ok());
    sv1::CandidateParent parent;
    parent.set_peer_id("parent-1");
    scheduler_.SetParents({parent}, 4096, 1024);
  }

  std::unique_ptr<SchedulerSession> NewSession(SchedulerClient* client) {
    return std::make_unique<SchedulerSession>(
        client, "task-1", "host-1", "peer-1",
        [this](const sv1::AnnouncePeerResponse& r) {
          std::lock_guard<std::mutex> l(seen_.mu);
          if (r.has_normal_task()) {
            ++seen_.normal;
            seen_.parents += r.normal_task().candidate_parents_size();
          }
          if (r.has_piece_digests()) ++seen_.digests;
          seen_.cv.notify_all();
        },
        [this] {
          std::lock_guard<std::mutex> l(seen_.mu);
          ++seen_.ends;
          seen_.cv.notify_all();
        });
  }

  static sv1::AnnouncePeerRequest Registration() {
    sv1::AnnouncePeerRequest req;
    req.mutable_register_()->mutable_task()->set_url("http://origin/file");
    return req;
  }

  testing::FakeScheduler scheduler_;
  const ControlAuth no_auth_;
  Seen seen_;
};

TEST_F(SchedulerSessionTest, RegistersAndDeliversEveryResponse) {
  SchedulerClient client(scheduler_.address(), &no_auth_, nullptr);
  auto session = NewSession(&client);
  EXPECT_FALSE(session->open());
  ASSERT_TRUE(session->Open(Registration()));
  EXPECT_TRUE(session->open());
  EXPECT_EQ(session->address(), scheduler_.address());
  ASSERT_TRUE(scheduler_.WaitRegistrations(1, 10s));
  ASSERT_TRUE(seen_.Wait([&] { return seen_.normal == 1; }));
  EXPECT_EQ(seen_.parents, 1);

  sv1::AnnouncePeerRequest ask;
  ask.mutable_piece_digests_request()->set_first_piece(0);
  session->Send(ask);
  EXPECT_EQ(ask.task_id(), "task-1");  // every request carries the ids
  EXPECT_EQ(ask.peer_id(), "peer-1");
  EXPECT_EQ(ask.host_id(), "host-1");
  ASSERT_TRUE(seen_.Wait([&] { return seen_.digests == 1; }));
}

TEST_F(SchedulerSessionTest, ALostStreamIsReportedOnceAndOpenRegistersAgain) {
  SchedulerClient client(scheduler_.address(), &no_auth_, nullptr);
  auto session = NewSession(&client);
  ASSERT_TRUE(session->Open(Registration()));
  ASSERT_TRUE(scheduler_.WaitRegistrations(1, 10s));
  // The answer to the first registration is in before the drop (else it may be lost with it).
  ASSERT_TRUE(seen_.Wait([&] { return seen_.normal == 1; }));

  scheduler_.DropStreams();  // as a scheduler crash does
  ASSERT_TRUE(seen_.Wait([&] { return seen_.ends == 1; }));
  EXPECT_FALSE(session->open());
  sv1::AnnouncePeerRequest dropped;
  dropped.mutable_piece_digests_request();
  session->Send(dropped);  // no stream: dropped, never blocks or crashes

  session->MarkSchedulerFailed();
  EXPECT_FALSE(client.ForTask("task-1").healthy());

  ASSERT_TRUE(session->Open(Registration()));
  ASSERT_TRUE(scheduler_.WaitRegistrations(2, 10s));
  ASSERT_TRUE(seen_.Wait([&] { return seen_.normal == 2; }));
  session->Close();
  std::lock_guard<std::mutex> l(seen_.mu);
  EXPECT_EQ(seen_.ends, 1);  // the close asked for is not a loss
}

TEST_F(SchedulerSessionTest, CloseIsNotALossAndIsIdempotent) {
  SchedulerClient client(scheduler_.address(), &no_auth_, nullptr);
  auto session = NewSession(&client);
  ASSERT_TRUE(session->Open(Registration()));
  ASSERT_TRUE(seen_.Wait([&] { return seen_.normal == 1; }));
  const auto start = std::chrono::steady_clock::now();
  session->Close(2s);
  session->Close(2s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_FALSE(session->open());
  EXPECT_FALSE(session->Open(Registration()));  // closed for good
  std::lock_guard<std::mutex> l(seen_.mu);
  EXPECT_EQ(seen_.ends, 0);
}

TEST_F(SchedulerSessionTest, AnUnreachableSchedulerFailsTheOpenAndIsMarkedFailed) {
  // Port 1 on loopback: nothing listens there.
  SchedulerClient client("127.0.0.1:1", &no_auth_, nullptr);
  auto session = NewSession(&client);
  EXPECT_FALSE(session->Open(Registration()));
  EXPECT_FALSE(session->open());
  EXPECT_FALSE(client.ForTask("task-1").healthy());
  EXPECT_EQ(session->address(), "127.0.0.1:1");
  std::lock_guard<std::mutex> l(seen_.mu);
  EXPECT_EQ(seen_.ends, 0);
}

}  // namespace
}  // namespace df
