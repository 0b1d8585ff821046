// DatasetUploader against the real dftrainer process: a round streams every dataset file and the
// trainer accepts all its rows; a row still being appended waits for the next round; a trainer
// that is down is a counted failure, not a crash; a scheduler configured with --trainer sends
// its dataset by itself.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "bench/harness.h"
#include "learning/synthetic.h"
#include "scheduler/config.h"
#include "scheduler/dataset_uploader.h"
#include "scheduler/server.h"

namespace df::scheduler {
namespace {

namespace fs = std::filesystem;

std::string Trainer() { return bench::BuildDir() + "/src/trainer/dftrainer"; }

learning::SyntheticOptions SmallWorld() {
  learning::SyntheticOptions o;
  o.idcs = 2;
  o.racks_per_idc = 2;
  o.hosts_per_rack = 6;
  o.parents_per_child = 3;
  return o;
}

// Data rows of a CSV file (lines after the header).
uint64_t Rows(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  uint64_t n = 0;
  while (std::getline(in, line)) ++n;
  return n > 0 ? n - 1 : 0;
}

double Counter(prometheus::Registry& registry, const std::string& name, const std::string& result) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "result" && l.value == result) return m.counter.value;
      }
    }
  }
  return -1;
}

class DatasetUploaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = dir_.path() + "/dataset";
    ASSERT_TRUE(learning::WriteSyntheticDir(SmallWorld(), data_).ok());
    port_ = bench::FreePort();
    trainer_ =
        bench::Process::Start({Trainer(), "--listen", "127.0.0.1:" + std::to_string(port_),
                               "--metrics", "127.0.0.1:" + std::to_string(bench::FreePort()),
                               "--repo", dir_.path() + "/repo", "--epochs", "1", "--threads", "1"},
                              dir_.path() + "/dftrainer.log");
    ASSERT_TRUE(bench::WaitForTcp(port_, 15'000)) << "dftrainer did not listen";
  }

  DatasetUploader::Options Options(uint16_t port) const {
    DatasetUploader::Options o;
    o.target = "127.0.0.1:" + std::to_string(port);
    o.dataset_dir = data_;
    o.scheduler_id = "test-scheduler";
    o.deadline = std::chrono::seconds(30);
    return o;
  }

  bench::TempDir dir_;
  std::string data_;
  uint16_t port_ = 0;
  bench::Process trainer_;
  prometheus::Registry registry_;
};

TEST_F(DatasetUploaderTest, ARoundSendsEveryFileAndTheTrainerAcceptsEveryRow) {
  // A rotated file as the DatasetWriter leaves them, besides the live one.
  fs::copy_file(data_ + "/download.csv", data_ + "/download-1700000000000.csv");
  fs::create_directory(data_ + "/not-a-dataset");
  std::ofstream(data_ + "/notes.txt") << "ignored\n";
  const uint64_t download_rows = 2 * Rows(data_ + "/download.csv");
  const uint64_t topology_rows = Rows(data_ + "/networktopology.csv");
  ASSERT_GT(download_rows, 0u);

  DatasetUploader uploader(Options(port_), nullptr, nullptr, registry_);
  auto round = uploader.UploadOnce();
  ASSERT_TRUE(round.ok()) << round.status().ToString();
  EXPECT_EQ(round.value().files, 3u);
  EXPECT_EQ(round.value().download_rows, download_rows);
  EXPECT_EQ(round.value().topology_rows, topology_rows);
  EXPECT_EQ(round.value().bad_rows, 0u);
  EXPECT_TRUE(round.value().queued);
  EXPECT_EQ(round.value().bytes, fs::file_size(data_ + "/download.csv") * 2 +
                                     fs::file_size(data_ + "/networktopology.csv"));
  EXPECT_EQ(Counter(registry_, "df_scheduler_trainer_uploads_total", "ok"), 1);
}

TEST_F(DatasetUploaderTest, ARowBeingAppendedWaitsForTheNextRound) {
  const uint64_t rows = Rows(data_ + "/download.csv");
  const uint64_t complete = fs::file_size(data_ + "/download.csv");
  // Half a row, as a writer in the middle of an append leaves it.
  std::ofstream(data_ + "/download.csv", std::ios::app) << "1700000000000,task-partial,";
  DatasetUploader uploader(Options(port_), nullptr, nullptr, registry_);
  auto round = uploader.UploadOnce();
  ASSERT_TRUE(round.ok()) << round.status().ToString();
  EXPECT_EQ(round.value().download_rows, rows);
  EXPECT_EQ(round.value().bad_rows, 0u) << "the half row was sent";
  EXPECT_EQ(round.value().bytes, complete + fs::file_size(data_ + "/networktopology.csv"));
}

TEST_F(DatasetUploaderTest, ATrainerThatIsDownIsACountedFailureAndTheNextRoundWorks) {
  DatasetUploader down(Options(bench::FreePort()), nullptr, nullptr, registry_);
  auto round = down.UploadOnce();
  EXPECT_FALSE(round.ok());
  EXPECT_EQ(Counter(registry_, "df_scheduler_trainer_uploads_total", "error"), 1);

  prometheus::Registry other;
  DatasetUploader missing_dir(
      [&] {
        auto o = Options(port_);
        o.dataset_dir = dir_.path() + "/missing";
        return o;
      }(),
      nullptr, nullptr, other);
  EXPECT_EQ(missing_dir.UploadOnce().status().code(), StatusCode::kNotFound);

  DatasetUploader up(Options(port_), nullptr, nullptr, other);
  EXPECT_TRUE(up.UploadOnce().ok());
}

TEST(DatasetUploaderAuthTest, ATrainerWithATokenTakesDatasetsOnlyFromSchedulersThatCarryIt) {
  bench::TempDir dir;
  const std::string data = dir.path() + "/dataset";
  ASSERT_TRUE(learning::WriteSyntheticDir(SmallWorld(), data).ok());
  std::ofstream(dir.path() + "/token") << "cluster-secret-0123456789abcdef\n";
  fs::permissions(dir.path() + "/token", fs::perms::owner_read | fs::perms::owner_write);
  const uint16_t port = bench::FreePort();
  bench::Process trainer = bench::Process::Start(
      {Trainer(), "--listen", "127.0.0.1:" + std::to_string(port), "--metrics",
       "127.0.0.1:" + std::to_string(bench::FreePort()), "--repo", dir.path() + "/repo", "--epochs",
       "1", "--threads", "1", "--auth-token-file", dir.path() + "/token"},
      dir.path() + "/dftrainer.log");
  ASSERT_TRUE(bench::WaitForTcp(port, 15'000)) << "dftrainer did not listen";
  DatasetUploader::Options o;
  o.target = "127.0.0.1:" + std::to_string(port);
  o.dataset_dir = data;
  o.scheduler_id = "test-scheduler";
  prometheus::Registry registry;

  DatasetUploader stranger(o, nullptr, nullptr, registry);
  EXPECT_FALSE(stranger.UploadOnce().ok()) << "a dataset without the token was taken";
  auto wrong = AuthToken::FromString("not-the-secret-0123456789abcdef");
  ASSERT_TRUE(wrong.ok());
  ControlAuth wrong_auth(std::move(wrong).value());
  DatasetUploader impostor(o, nullptr, &wrong_auth, registry);
  EXPECT_FALSE(impostor.UploadOnce().ok()) << "a dataset with a wrong token was taken";

  auto auth = ControlAuth::Load(dir.path() + "/token", TlsFiles{});
  ASSERT_TRUE(auth.ok()) << auth.status().ToString();
  DatasetUploader member(o, nullptr, &auth.value(), registry);
  auto round = member.UploadOnce();
  ASSERT_TRUE(round.ok()) << round.status().ToString();
  EXPECT_GT(round.value().download_rows, 0u);
}

TEST_F(DatasetUploaderTest, ASchedulerWithATrainerSendsItsDatasetByItself) {
  SchedulerConfig config;
  config.listen = "127.0.0.1:0";
  config.metrics = "";
  config.dataset_dir = data_;
  config.trainer = "127.0.0.1:" + std::to_string(port_);
  config.trainer_interval_ms = 1000;
  ASSERT_TRUE(ValidateConfig(config).ok());
  auto server = SchedulerServer::Start(config, registry_);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  ASSERT_NE(server.value()->dataset_uploader(), nullptr);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Counter(registry_, "df_scheduler_trainer_uploads_total", "ok") < 1 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GE(Counter(registry_, "df_scheduler_trainer_uploads_total", "ok"), 1);
  server.value()->Shutdown();

  SchedulerConfig no_dir = config;
  no_dir.dataset_dir.clear();
  EXPECT_FALSE(ValidateConfig(no_dir).ok());
}

}  // namespace
}  // namespace df::scheduler
