// End-to-end P2P: a real nginx origin, dfscheduler, a seed dfdaemon and several peers on
// loopback, all real processes (bench::LocalCluster).
#include <gtest/gtest.h>
#include <grpcpp/grpcpp.h>

#include <filesystem>
#include <future>
#include <thread>

#include "bench/local_cluster.h"
#include "common/digest.h"
#include "common/ids.h"
#include "common/piece.h"

namespace df {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
namespace dv1 = df::dfdaemon::v1;

bench::ClusterOptions Options(const bench::TempDir& dir, int peers) {
  bench::ClusterOptions o;
  o.bin_dir = bench::BuildDir() + "/src";
  o.work_dir = dir.path();
  o.peers = peers;
  return o;
}

// Finished pieces of `task_id` on a daemon, and whether it holds the whole task.
std::pair<uint32_t, bool> Stat(dv1::DfdaemonDownload::Stub* api, const std::string& task_id) {
  grpc::ClientContext ctx;
  dv1::StatTaskRequest req;
  req.set_task_id(task_id);
  dv1::StatTaskResponse resp;
  if (!api->StatTask(&ctx, req, &resp).ok()) return {0, false};
  return {resp.finished_pieces(), resp.done()};
}

TEST(P2P, EightPeersGetIdenticalCopiesAndTheOriginServesTheFileOnce) {
  bench::TempDir dir;
  bench::LocalCluster cluster(Options(dir, 8));
  std::filesystem::create_directories(cluster.OriginRoot());
  const uint64_t size = 512 * kMiB;
  std::string sha = bench::MakeFile(cluster.OriginRoot() + "/f.bin", size);
  ASSERT_TRUE(cluster.Start().ok());
  std::string url = cluster.OriginUrl("f.bin");
  std::vector<std::future<bench::PeerResult>> futures;
  for (int i = 0; i < 8; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return cluster.Download(i, url); }));
  }
  uint64_t from_peers = 0;
  for (auto& f : futures) {
    bench::PeerResult r = f.get();
    ASSERT_TRUE(r.ok) << r.name << ": " << r.error;
    EXPECT_EQ(Sha256File(r.output_path).value(), sha) << r.name;
    from_peers += r.bytes_from_peers;
  }
  const uint64_t piece = ChoosePieceLength(static_cast<int64_t>(size));
  EXPECT_LE(cluster.OriginBytesServed(), size + piece);
  EXPECT_EQ(from_peers, 8 * size) << "the seed fetches from the origin; peers only from peers";
}

TEST(P2P, ALateJoinerGetsPiecesFromPeersThatAreStillDownloading) {
  bench::TempDir dir;
  auto opts = Options(dir, 2);
  opts.origin_limit_rate = "3m";  // 4 origin GETs x 3 MB/s: the seed needs ~11 s for the file
  bench::LocalCluster cluster(opts);
  std::filesystem::create_directories(cluster.OriginRoot());
  const uint64_t size = 128 * kMiB;
  std::string sha = bench::MakeFile(cluster.OriginRoot() + "/late.bin", size);
  ASSERT_TRUE(cluster.Start().ok());
  std::string url = cluster.OriginUrl("late.bin");
  std::string task_id = TaskId(TaskIdInput{url, "", "", 0, {}});

  auto early0 = std::async(std::launch::async, [&] { return cluster.Download(0, url); });
  auto early1 = std::async(std::launch::async, [&] { return cluster.Download(1, url); });
  // Join once the early peers hold some pieces but nobody holds the whole file.
  for (int i = 0; i < 500 && Stat(cluster.Api(0), task_id).first < 4; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(cluster.AddPeer().ok());
  auto late = std::async(std::launch::async, [&] { return cluster.Download(2, url); });

  // The first pieces the late peer verifies arrive while the seed is still downloading.
  bool got_piece_while_seed_incomplete = false;
  for (int i = 0; i < 1000; ++i) {
    auto [late_pieces, late_done] = Stat(cluster.Api(2), task_id);
    if (late_pieces > 0) {
      got_piece_while_seed_incomplete = !Stat(cluster.Api(-1), task_id).second;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(got_piece_while_seed_incomplete);

  bench::PeerResult r = late.get();
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(Sha256File(r.output_path).value(), sha);
  EXPECT_EQ(r.bytes_from_origin, 0u);
  EXPECT_EQ(r.bytes_from_peers, size);
  ASSERT_TRUE(early0.get().ok);
  ASSERT_TRUE(early1.get().ok);
  EXPECT_LE(cluster.OriginBytesServed(), size + ChoosePieceLength(static_cast<int64_t>(size)));
}

TEST(P2P, APeerKilledMidDownloadDoesNotStopTheOthers) {
  bench::TempDir dir;
  auto opts = Options(dir, 3);
  opts.origin_limit_rate = "3m";
  bench::LocalCluster cluster(opts);
  std::filesystem::create_directories(cluster.OriginRoot());
  const uint64_t size = 96 * kMiB;
  std::string sha = bench::MakeFile(cluster.OriginRoot() + "/k.bin", size);
  ASSERT_TRUE(cluster.Start().ok());
  std::string url = cluster.OriginUrl("k.bin");
  std::string task_id = TaskId(TaskIdInput{url, "", "", 0, {}});
  std::vector<std::future<bench::PeerResult>> futures;
  for (int i = 0; i < 3; ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return cluster.Download(i, url); }));
  }
  for (int i = 0; i < 500 && Stat(cluster.Api(0), task_id).first < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  cluster.KillPeer(0);
  EXPECT_FALSE(futures[0].get().ok);
  for (int i = 1; i < 3; ++i) {
    bench::PeerResult r = futures[static_cast<size_t>(i)].get();
    ASSERT_TRUE(r.ok) << r.name << ": " << r.error;
    EXPECT_EQ(Sha256File(r.output_path).value(), sha);
  }
}

}  // namespace
}  // namespace df
