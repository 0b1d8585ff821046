// Preheat on the scheduler: Scheduler::PreheatTask (which seed triggers go out, which specs are
// refused) and who may call SchedulerAdmin.PreheatImage on a scheduler without token or TLS.
// The whole flow with a real registry, seed and daemon is tests/oci/oci_preheat_test.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <mutex>

#include "common/net.h"
#include "common/task_spec.h"
#include "scheduler/server.h"
#include "scheduler_admin.grpc.pb.h"

namespace df::scheduler {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'c');

// Records each trigger; the seed never registers (so the trigger stays pending).
class RecordingSeedTrigger final : public SeedTrigger {
 public:
  void Trigger(const v1::Host& seed, const v1::TaskInfo& task, DoneCallback) override {
    std::lock_guard lock(mu_);
    triggered_.push_back({seed.id(), task});
  }
  std::vector<std::pair<std::string, v1::TaskInfo>> triggered() const {
    std::lock_guard lock(mu_);
    return triggered_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, v1::TaskInfo>> triggered_;
};

v1::TaskInfo BlobTask(const std::string& url) {
  v1::TaskInfo info;
  info.set_url(url);
  info.set_digest(kDigest);
  info.set_id_from_digest(true);
  (*info.mutable_request_headers())["Authorization"] = "Bearer fresh";
  return info;
}

class PreheatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto trigger = std::make_unique<RecordingSeedTrigger>();
    trigger_ = trigger.get();
    scheduler_ = std::make_unique<Scheduler>(SchedulerConfig{}, NewEvaluator("default").value(),
                                             std::move(trigger), &metrics_);
  }
  void AnnounceSeed() {
    v1::Host host;
    host.set_id("seed-host");
    host.set_ip("127.0.0.1");
    host.set_grpc_port(4000);
    host.set_piece_port(4005);
    host.set_type(v1::HOST_TYPE_SEED);
    ASSERT_TRUE(scheduler_->AnnounceHost(host).ok());
  }

  prometheus::Registry registry_;
  SchedulerMetrics metrics_{registry_};
  RecordingSeedTrigger* trigger_ = nullptr;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(PreheatTest, ASeedIsTriggeredOnceForTheDigestKeyedTaskWithTheRequestsHeaders) {
  AnnounceSeed();
  const v1::TaskInfo info = BlobTask("https://ghcr.io/v2/org/app/blobs/" + kDigest);
  auto first = scheduler_->PreheatTask(info);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first.value(), Scheduler::PreheatOutcome::kTriggered);
  ASSERT_EQ(trigger_->triggered().size(), 1u);
  const auto [seed, task] = trigger_->triggered()[0];
  EXPECT_EQ(seed, "seed-host");
  EXPECT_EQ(task.task_id(), kDigest.substr(7)) << "keyed by the digest, as the mirror keys it";
  EXPECT_EQ(task.request_headers().at("Authorization"), "Bearer fresh");
  ASSERT_TRUE(scheduler_->StatTask(kDigest.substr(7)).ok());

  // The same blob through another registry is the same task, already on its way to a seed.
  auto again = scheduler_->PreheatTask(BlobTask("https://mirror.example/v2/x/blobs/" + kDigest));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), Scheduler::PreheatOutcome::kSeeded);
  EXPECT_EQ(trigger_->triggered().size(), 1u);
}

TEST_F(PreheatTest, RefusesBadSpecsAndSaysWhenNoSeedCanFetch) {
  auto none = scheduler_->PreheatTask(BlobTask("https://ghcr.io/v2/a/blobs/" + kDigest));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(none.status().message().find("no seed host"), std::string::npos);

  AnnounceSeed();
  v1::TaskInfo file = BlobTask("file:///etc/shadow");
  EXPECT_EQ(scheduler_->PreheatTask(file).status().code(), StatusCode::kInvalidArgument);
  v1::TaskInfo bad_digest = BlobTask("https://ghcr.io/v2/a/blobs/x");
  bad_digest.set_digest("sha256:xyz");
  EXPECT_EQ(scheduler_->PreheatTask(bad_digest).status().code(), StatusCode::kInvalidArgument);
  // A claimed id is ignored: the id is the spec's.
  v1::TaskInfo claimed = BlobTask("https://ghcr.io/v2/a/blobs/" + kDigest);
  claimed.set_task_id("some-other-task");
  ASSERT_TRUE(scheduler_->PreheatTask(claimed).ok());
  EXPECT_EQ(trigger_->triggered().back().second.task_id(), kDigest.substr(7));
  EXPECT_TRUE(trigger_->triggered()[0].second.url().rfind("https://", 0) == 0);
}

grpc::Status CallPreheat(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = v1::SchedulerAdmin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  v1::PreheatImageRequest req;
  req.set_image("127.0.0.1:1/nothing/here:1");  // nothing listens on port 1
  req.set_plain_http(true);
  v1::PreheatImageResponse res;
  return stub->PreheatImage(&ctx, req, &res);
}

// Without a token or TLS, only a caller on the scheduler's host may preheat.
TEST(PreheatAdmin, WithoutTokenOrTlsOnlyALoopbackCallerMayPreheat) {
  const std::string ip = DefaultIp();
  if (ip == "127.0.0.1") GTEST_SKIP() << "needs a non-loopback address";
  SchedulerConfig config;
  config.listen = "0.0.0.0:0";
  config.metrics = "";
  prometheus::Registry registry;
  auto server = SchedulerServer::Start(config, registry);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string port = std::to_string(server.value()->port());

  grpc::Status local = CallPreheat("127.0.0.1:" + port);
  EXPECT_EQ(local.error_code(), grpc::StatusCode::UNAVAILABLE) << local.error_message();
  EXPECT_NE(local.error_message().find("127.0.0.1:1"), std::string::npos) << "it tried";
  grpc::Status remote = CallPreheat(ip + ":" + port);
  EXPECT_EQ(remote.error_code(), grpc::StatusCode::PERMISSION_DENIED) << remote.error_message();
  EXPECT_NE(remote.error_message().find("token"), std::string::npos) << remote.error_message();
  server.value()->Shutdown();
}

}  // namespace
}  // namespace df::scheduler
