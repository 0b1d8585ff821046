// Several schedulers (issue 15): daemons given "--scheduler a,b" announce to both, every task
// goes to one of them by rendezvous hashing, and when that one is SIGKILLed mid-download (with
// their Redis, restarted a second later) its peers move to the other and every copy finishes
// with the origin's sha256.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/piece.h"
#include "common/ids.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"

namespace df {
namespace {

using bench::Process;
using namespace std::chrono_literals;
namespace dv1 = df::dfdaemon::v1;
namespace sv1 = df::scheduler::v1;

constexpr uint64_t kSize = 192 * kMiB;
constexpr int kPeers = 3;

class MultiSchedulerTest : public ::testing::Test {
 protected:
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }
  std::string Sock(const std::string& name) { return dir_.path() + "/" + name + ".sock"; }
  std::string Address(uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

  Process StartScheduler(uint16_t port, const std::string& store) {
    Process p = Process::Start({Bin("scheduler/dfscheduler"), "--listen", Address(port),
                                "--metrics", "", "--store", store},
                               dir_.path() + "/dfscheduler-" + std::to_string(port) + ".log");
    EXPECT_TRUE(bench::WaitForTcp(port, 10000));
    return p;
  }

  Process StartDaemon(const std::string& name, bool seed) {
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), ports_[0], "300ms");
    for (size_t i = 0; i < argv.size(); ++i) {
      if (argv[i] == "--scheduler") argv[i + 1] = Address(ports_[0]) + "," + Address(ports_[1]);
    }
    // 20 MB/s uplinks: the download lasts long enough for the kill to land in its middle.
    argv.insert(argv.end(), {"--upload-rate", "160mbit"});
    if (seed) argv.push_back("--seed");
    Process p = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForUnixSocket(Sock(name), 10000)) << name;
    return p;
  }

  // True when the scheduler on `port` knows the task.
  bool Knows(uint16_t port) {
    auto stub = sv1::Scheduler::NewStub(
        grpc::CreateChannel(Address(port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 2s);
    sv1::StatTaskRequest req;
    req.set_task_id(task_id_);
    sv1::StatTaskResponse resp;
    return stub->StatTask(&ctx, req, &resp).ok();
  }

  uint32_t FinishedPieces(const std::string& name) {
    return bench::DaemonFinishedPieces(Sock(name), task_id_);
  }

  int Dfget(const std::string& name, std::string* out) {
    return bench::Run({Bin("dfget/dfget"), "--no-progress", "--daemon-sock", Sock(name), url_, "-O",
                       dir_.path() + "/out/" + name, "--timeout", "200s"},
                      out, 300000);
  }

  bench::TempDir dir_;
  uint16_t ports_[2] = {0, 0};
  std::string url_, task_id_;
};

TEST_F(MultiSchedulerTest, WhenTheTasksSchedulerAndRedisDieThePeersFinishThroughTheOther) {
  const std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  std::filesystem::create_directories(dir_.path() + "/out");
  const std::string sha = bench::MakeFile(root + "/f.bin", kSize);
  bench::NginxOrigin origin(root, "40m");
  ASSERT_TRUE(origin.ok());
  url_ = origin.Url("f.bin");
  task_id_ = TaskId(TaskIdInput{url_, "", "", 0, {}});
  bench::RedisServer redis;
  ASSERT_TRUE(redis.ok());

  ports_[0] = bench::FreePort();
  ports_[1] = bench::FreePort();
  Process schedulers[2] = {StartScheduler(ports_[0], redis.Url()),
                           StartScheduler(ports_[1], redis.Url())};
  Process seed = StartDaemon("seed", true);
  std::vector<Process> daemons;
  for (int i = 0; i < kPeers; ++i)
    daemons.push_back(StartDaemon("peer" + std::to_string(i), false));
  std::this_thread::sleep_for(700ms);  // every host announced to both (no event to wait on)

  std::vector<int> codes(kPeers, -1);
  std::vector<std::string> outputs(kPeers);
  std::vector<std::thread> clients;
  for (int i = 0; i < kPeers; ++i) {
    clients.emplace_back([&, i] { codes[i] = Dfget("peer" + std::to_string(i), &outputs[i]); });
  }
  // The task lives on exactly one scheduler.
  bool on[2] = {false, false};
  for (int i = 0; i < 100 && !on[0] && !on[1]; ++i) {
    on[0] = Knows(ports_[0]);
    on[1] = Knows(ports_[1]);
    if (!on[0] && !on[1]) std::this_thread::sleep_for(50ms);
  }
  ASSERT_NE(on[0], on[1]) << "the task must be on one scheduler, not " << on[0] + on[1];
  const int owner = on[0] ? 0 : 1;
  const int other = 1 - owner;

  // Kill the owner once the swarm is well under way.
  for (int i = 0; i < 600 && FinishedPieces("peer0") < 8; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_GE(FinishedPieces("peer0"), 8u);
  ASSERT_LT(FinishedPieces("peer0"), kSize / (4 * kMiB)) << "the download ended too soon";
  // Redis dies too, and comes back empty while the peers finish: the surviving scheduler
  // schedules from memory meanwhile.
  redis.process().Kill(SIGKILL);
  redis.process().Wait(5000);
  schedulers[owner].Kill(SIGKILL);
  schedulers[owner].Wait();
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(redis.Start());

  for (auto& c : clients) c.join();
  for (int i = 0; i < kPeers; ++i) {
    const std::string name = "peer" + std::to_string(i);
    EXPECT_EQ(codes[i], 0) << name << ": " << outputs[i];
    EXPECT_EQ(Sha256File(dir_.path() + "/out/" + name).value(), sha) << name;
  }
  EXPECT_TRUE(Knows(ports_[other])) << "the peers registered again with the other scheduler";
}

}  // namespace
}  // namespace df
