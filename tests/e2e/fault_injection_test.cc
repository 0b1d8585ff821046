// Fault injection (issue 14): 8 peers and a seed download 512 MiB on loopback while, in turn, a
// parent is SIGKILLed mid-piece, the seed is SIGKILLed, the scheduler is SIGKILLed and restarted,
// and a parent serves corrupted bytes from the start (tests/e2e/lying_parent.h). Every peer ends
// with the origin's sha256 (the killed one after its daemon restarts and resumes), the origin
// serves at most F + (back_to_source_limit + 1) x F, and the liar is blocked.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/ids.h"
#include "dfdaemon.grpc.pb.h"
#include "lying_parent.h"

namespace df {
namespace {

using bench::Process;
using namespace std::chrono_literals;
namespace dv1 = df::dfdaemon::v1;

constexpr uint64_t kSize = 512 * kMiB;
constexpr uint64_t kPiece = 4 * kMiB;
constexpr int kPeers = 8;
constexpr int kBackToSourceLimit = 1;

class FaultInjectionTest : public ::testing::Test {
 protected:
  static std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }
  std::string Sock(const std::string& name) { return dir_.path() + "/" + name + ".sock"; }

  Process StartScheduler() {
    Process p = Process::Start(
        {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:" + std::to_string(scheduler_port_),
         "--metrics", "", "--schedule-timeout", "3s", "--back-to-source-limit",
         std::to_string(kBackToSourceLimit)},
        dir_.path() + "/dfscheduler.log");
    EXPECT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));
    return p;
  }

  // Every daemon uploads at most 40 MB/s, so that the swarm takes long enough for each fault
  // to land mid-download on two cores.
  Process StartDaemon(const std::string& name, bool seed) {
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), scheduler_port_, "300ms");
    argv.insert(argv.end(), {"--upload-rate", "320mbit", "--log-level", "info"});
    if (seed) argv.push_back("--seed");
    Process p = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForUnixSocket(Sock(name), 10000)) << name;
    return p;
  }

  uint32_t FinishedPieces(const std::string& name) {
    return bench::DaemonFinishedPieces(Sock(name), task_id_);
  }

  // Waits until `name` holds at least `pieces` pieces (or 120 s pass).
  bool WaitForPieces(const std::string& name, uint32_t pieces) {
    for (int i = 0; i < 1200; ++i) {
      if (FinishedPieces(name) >= pieces) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  int Dfget(const std::string& name, std::string* out) {
    return bench::Run({Bin("dfget/dfget"), "--no-progress", "--daemon-sock", Sock(name), url_, "-O",
                       dir_.path() + "/out/" + name, "--timeout", "300s", "--piece-length", "4MiB"},
                      out, 400000);
  }

  std::string Log(const std::string& name) {
    std::ifstream in(dir_.path() + "/" + name + ".log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  bench::TempDir dir_;
  uint16_t scheduler_port_ = 0;
  std::string url_, task_id_;
};

TEST_F(FaultInjectionTest, EveryPeerFinishesThroughKillsRestartsAndALiar) {
  const std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root);
  std::filesystem::create_directories(dir_.path() + "/out");
  const std::string sha = bench::MakeFile(root + "/f.bin", kSize);
  bench::NginxOrigin origin(root, "60m");  // a seed's 4 origin connections: up to 240 MB/s
  ASSERT_TRUE(origin.ok());
  url_ = origin.Url("f.bin");
  task_id_ = TaskId(TaskIdInput{url_, "", "", kPiece, {}});
  scheduler_port_ = bench::FreePort();

  Process scheduler = StartScheduler();
  Process seed = StartDaemon("seed", true);
  std::vector<Process> daemons;
  for (int i = 0; i < kPeers; ++i)
    daemons.push_back(StartDaemon("peer" + std::to_string(i), false));
  testing::LyingParent liar(dir_.path() + "/liar", root + "/f.bin", task_id_, url_, kSize, kPiece);
  ASSERT_TRUE(liar.ok());
  ASSERT_TRUE(liar.Join(scheduler_port_).ok());
  std::this_thread::sleep_for(700ms);  // every host announced

  std::vector<int> codes(kPeers, -1);
  std::vector<std::string> outputs(kPeers);
  std::vector<std::thread> clients;
  for (int i = 0; i < kPeers; ++i) {
    clients.emplace_back([&, i] { codes[i] = Dfget("peer" + std::to_string(i), &outputs[i]); });
  }

  // 1. A parent dies mid-piece: peer 3, once it holds a tenth of the file.
  ASSERT_TRUE(WaitForPieces("peer3", 13));
  daemons[3].Kill(SIGKILL);
  daemons[3].Wait();
  // 2. The seed dies once a peer holds a quarter.
  ASSERT_TRUE(WaitForPieces("peer0", 32));
  seed.Kill(SIGKILL);
  seed.Wait();
  // 3. The scheduler dies and comes back on the same port.
  ASSERT_TRUE(WaitForPieces("peer1", 48));
  scheduler.Kill(SIGKILL);
  scheduler.Wait();
  std::this_thread::sleep_for(1s);
  scheduler = StartScheduler();

  for (auto& c : clients) c.join();
  // Peer 3's daemon was killed under its client: it restarts, resumes and finishes.
  EXPECT_NE(codes[3], 0);
  daemons[3] = StartDaemon("peer3", false);
  codes[3] = Dfget("peer3", &outputs[3]);

  for (int i = 0; i < kPeers; ++i) {
    EXPECT_EQ(codes[i], 0) << "peer" << i << ": " << outputs[i];
    auto got = Sha256File(dir_.path() + "/out/peer" + std::to_string(i));
    EXPECT_TRUE(got.ok() && got.value() == sha) << "peer" << i << " has the wrong bytes";
  }
  std::this_thread::sleep_for(300ms);  // nginx logs cut connections after the fact
  uint64_t served = origin.BytesServed();
  EXPECT_LE(served, kSize + (kBackToSourceLimit + 1) * kSize)
      << "the origin served " << served / kMiB << " MiB";
  int blocked = 0;
  for (int i = 0; i < kPeers; ++i) {
    blocked += Log("peer" + std::to_string(i)).find("served a corrupt piece") != std::string::npos;
  }
  // Where the origin's bytes went: every daemon's origin and summary lines.
  for (const std::string name :
       {"seed", "peer0", "peer1", "peer2", "peer3", "peer4", "peer5", "peer6", "peer7"}) {
    std::istringstream log(Log(name));
    for (std::string line; std::getline(log, line);) {
      if (line.find("back to source") != std::string::npos ||
          line.find(" finished: ") != std::string::npos) {
        std::printf("%s: %s\n", name.c_str(), line.c_str());
      }
    }
  }
  EXPECT_LT(liar.pieces_uploaded(), static_cast<uint64_t>(liar.pieces()))
      << "the liar served the swarm";
  RecordProperty("origin_mib", static_cast<int>(served / kMiB));
  RecordProperty("liar_pieces_uploaded", static_cast<int>(liar.pieces_uploaded()));
  RecordProperty("peers_that_blocked_the_liar", blocked);
  std::printf(
      "origin served %.0f MiB (bound %.0f MiB); liar uploaded %lu pieces; %d peers "
      "blocked it\n",
      static_cast<double>(served) / kMiB,
      static_cast<double>(kSize + (kBackToSourceLimit + 1) * kSize) / kMiB,
      static_cast<unsigned long>(liar.pieces_uploaded()), blocked);
}

}  // namespace
}  // namespace df
