// dftrainer as a process: --train-once publishes, then refuses a version that is not better;
// the Train RPC against the real binary streams a dataset in chunks and a version appears;
// malformed streams get an error status and the server stays up.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>
#include <thread>

#include "bench/harness.h"
#include "learning/synthetic.h"
#include "trainer.grpc.pb.h"

namespace df::trainer {
namespace {

namespace fs = std::filesystem;
using bench::Process;
using bench::TempDir;

std::string Trainer() { return bench::BuildDir() + "/src/trainer/dftrainer"; }

learning::SyntheticOptions SmallWorld() {
  learning::SyntheticOptions o;
  o.idcs = 2;
  o.racks_per_idc = 3;
  o.hosts_per_rack = 10;
  o.parents_per_child = 4;
  return o;
}

TEST(DfTrainer, TrainOncePublishesVersionOneThenNothingWhenNotBetter) {
  TempDir dir;
  const std::string data = dir.path() + "/dataset", repo = dir.path() + "/repo";
  ASSERT_TRUE(learning::WriteSyntheticDir(SmallWorld(), data).ok());
  std::string out;
  int rc = bench::Run(
      {Trainer(), "--train-once", data, "--repo", repo, "--epochs", "5", "--threads", "1"}, &out,
      120'000);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("published version 1"), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(repo + "/bandwidth/1/model.pt"));
  EXPECT_TRUE(fs::exists(repo + "/bandwidth/1/metrics.json"));
  EXPECT_TRUE(fs::exists(repo + "/bandwidth/config.pbtxt"));

  rc =
      bench::Run({Trainer(), "--train-once", data, "--repo", repo, "--epochs", "0"}, &out, 120'000);
  EXPECT_EQ(rc, 3) << out;
  EXPECT_NE(out.find("nothing published"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(repo + "/bandwidth/2"));

  rc = bench::Run({Trainer(), "--train-once", dir.path() + "/missing", "--repo", repo}, &out);
  EXPECT_EQ(rc, 1) << out;
  rc = bench::Run({Trainer(), "--epochs", "lots"}, &out);
  EXPECT_EQ(rc, 2) << out;
  rc = bench::Run({Trainer(), "--nice", "25", "--repo", repo}, &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("nice"), std::string::npos) << out;
}

class TrainRpc : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = bench::FreePort();
    metrics_port_ = bench::FreePort();
    repo_ = dir_.path() + "/repo";
    proc_ = Process::Start({Trainer(), "--listen", "127.0.0.1:" + std::to_string(port_),
                            "--metrics", "127.0.0.1:" + std::to_string(metrics_port_), "--repo",
                            repo_, "--epochs", "4", "--threads", "1"},
                           dir_.path() + "/dftrainer.log");
    ASSERT_TRUE(bench::WaitForTcp(port_, 10'000));
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port_),
                                       grpc::InsecureChannelCredentials());
    stub_ = v1::Trainer::NewStub(channel);
  }

  // Streams `messages`; the call's status and response.
  grpc::Status Send(const std::vector<v1::TrainRequest>& messages, v1::TrainResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto writer = stub_->Train(&context, response);
    for (const auto& m : messages) {
      if (!writer->Write(m)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  static v1::TrainRequest Header(const std::string& id) {
    v1::TrainRequest r;
    r.mutable_header()->set_scheduler_id(id);
    return r;
  }
  static v1::TrainRequest File(v1::DatasetFileKind kind) {
    v1::TrainRequest r;
    r.mutable_file()->set_kind(kind);
    return r;
  }
  static void Chunks(const std::string& text, size_t size, std::vector<v1::TrainRequest>* out) {
    for (size_t i = 0; i < text.size(); i += size) {
      v1::TrainRequest r;
      r.set_chunk(text.substr(i, size));
      out->push_back(std::move(r));
    }
  }

  TempDir dir_;
  uint16_t port_ = 0, metrics_port_ = 0;
  std::string repo_;
  Process proc_;
  std::unique_ptr<v1::Trainer::Stub> stub_;
};

// The nice value (field 19 of /proc/PID/task/TID/stat) of each thread of `pid`.
std::vector<int> ThreadNiceValues(pid_t pid) {
  std::vector<int> out;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t end = stat.rfind(')');  // the thread name may hold spaces
    if (end == std::string::npos) continue;
    std::istringstream fields(stat.substr(end + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
      if (i == 19) out.push_back(std::stoi(field));
    }
  }
  return out;
}

// The training thread runs at nice 10 (the default); the threads that receive do not.
TEST_F(TrainRpc, TheTrainingThreadYieldsToServing) {
  std::vector<int> nice;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    nice = ThreadNiceValues(proc_.pid());
    if (std::count(nice.begin(), nice.end(), 10) == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (std::chrono::steady_clock::now() < end);
  EXPECT_EQ(std::count(nice.begin(), nice.end(), 10), 1);
  EXPECT_GT(std::count(nice.begin(), nice.end(), 0), 0);
}

TEST_F(TrainRpc, StreamedDatasetIsTrainedAndPublished) {
  const auto data = learning::GenerateSynthetic(SmallWorld());
  std::vector<v1::TrainRequest> messages = {Header("scheduler-1"),
                                            File(v1::DATASET_FILE_KIND_DOWNLOAD)};
  Chunks(data.download_csv, 16 << 10, &messages);
  messages.push_back(File(v1::DATASET_FILE_KIND_NETWORK_TOPOLOGY));
  Chunks(data.topology_csv, 777, &messages);
  v1::TrainResponse response;
  const auto start = std::chrono::steady_clock::now();
  grpc::Status status = Send(messages, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  // The call returned before training: it never waits on the model.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_TRUE(response.queued());
  EXPECT_EQ(response.download_rows(), data.transfers * SmallWorld().pieces_per_pair);
  EXPECT_GT(response.topology_rows(), 0u);
  EXPECT_EQ(response.bad_rows(), 0u);
  EXPECT_EQ(response.bytes(), data.download_csv.size() + data.topology_csv.size());

  const std::string model = repo_ + "/bandwidth/1/model.pt";
  for (int i = 0; i < 1200 && !fs::exists(model); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(fs::exists(model));
  EXPECT_TRUE(fs::exists(repo_ + "/bandwidth/1/metrics.json"));
  for (int i = 0;
       i < 50 && bench::ScrapeMetric(metrics_port_, "df_trainer_versions_published_total") < 1;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_trainer_versions_published_total"), 1);
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_trainer_datasets_received_total"), 1);
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_healthy"), 1);

  // The scheduler resends its dataset every interval: the same bytes are not trained again.
  const double runs = bench::ScrapeMetric(metrics_port_, "df_trainer_training_runs_total");
  EXPECT_GE(runs, 1);
  v1::TrainResponse again;
  ASSERT_TRUE(Send(messages, &again).ok());
  EXPECT_FALSE(again.queued());
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_trainer_datasets_unchanged_total"), 1);
  // From another scheduler, or changed, it is.
  messages[0] = Header("scheduler-2");
  v1::TrainResponse other;
  ASSERT_TRUE(Send(messages, &other).ok());
  EXPECT_TRUE(other.queued());
  messages[0] = Header("scheduler-1");
  messages.pop_back();  // one topology chunk fewer
  v1::TrainResponse changed;
  ASSERT_TRUE(Send(messages, &changed).ok());
  EXPECT_TRUE(changed.queued());
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_trainer_datasets_unchanged_total"), 1);
}

TEST_F(TrainRpc, MalformedStreamsGetAnErrorAndTheServerStaysUp) {
  v1::TrainResponse response;
  EXPECT_EQ(Send({}, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Send({File(v1::DATASET_FILE_KIND_DOWNLOAD)}, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Send({Header("")}, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<v1::TrainRequest> chunk_first = {Header("s")};
  Chunks("abc", 10, &chunk_first);
  EXPECT_EQ(Send(chunk_first, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<v1::TrainRequest> garbage = {Header("s"), File(v1::DATASET_FILE_KIND_DOWNLOAD)};
  Chunks("\xff\xfe garbage, \"not a header\n1,2,3\n", 5, &garbage);
  EXPECT_EQ(Send(garbage, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::vector<v1::TrainRequest> huge = {Header("s"), File(v1::DATASET_FILE_KIND_DOWNLOAD)};
  Chunks(std::string((1 << 20) + 1, 'x'), (1 << 20) + 1, &huge);
  EXPECT_EQ(Send(huge, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Send({Header("s"), File(v1::DATASET_FILE_KIND_UNSPECIFIED)}, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  // Bad rows are not an error: counted, and the stream succeeds.
  std::vector<v1::TrainRequest> bad_rows = {Header("s"), File(v1::DATASET_FILE_KIND_DOWNLOAD)};
  Chunks("child_host_id,parent_host_id,piece_length_bytes,cost_ns\nc,p,1,x\n\"open", 4, &bad_rows);
  ASSERT_TRUE(Send(bad_rows, &response).ok());
  EXPECT_EQ(response.bad_rows(), 2u);
  EXPECT_FALSE(response.queued());
  EXPECT_TRUE(proc_.running());
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_trainer_datasets_rejected_total"), 7);
  EXPECT_EQ(bench::ScrapeMetric(metrics_port_, "df_healthy"), 1);
}

}  // namespace
}  // namespace df::trainer
