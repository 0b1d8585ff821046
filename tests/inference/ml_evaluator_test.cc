// The scheduler's ml evaluator against a real inference server (in-process, real gRPC on
// loopback) serving TorchScript models built here with the features.h signature: predictions
// arrive without blocking a decision, rank the parents, feed the capacity booking and the online
// MAPE; a dead, silent or wrong service means the default evaluator's decision.
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <thread>
#include <sstream>

#include <prometheus/text_serializer.h>

#include "bench/harness.h"
#include "inference/kserve_client.h"
#include "inference/server.h"
#include "learning/features.h"
#include "scheduler/dataset_writer.h"
#include "scheduler/ml_evaluator.h"
#include "test_repo.h"

namespace df::scheduler {
namespace {

using namespace std::chrono_literals;
using df::inference::testing::PublishVersion;
using df::inference::testing::WaitFor;
using df::inference::testing::WriteConfig;

// config.pbtxt of a model with the features.h signature (FP16 inputs: the scripts below compute
// on them as FP32).
std::string BandwidthConfig(const std::string& name) {
  std::ostringstream out;
  out << "name: \"" << name << "\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 256\ninput [\n";
  for (int i = 0; i < df::learning::kNumInputs; ++i) {
    out << (i ? ",\n" : "") << "  { name: \"" << df::learning::kInputNames[i]
        << "\" data_type: TYPE_" << df::learning::kInputDatatype << " dims: [ ";
    const auto shape = df::learning::InputShape(i);
    for (size_t d = 0; d < shape.size(); ++d) out << (d ? ", " : "") << shape[d];
    out << " ] }";
  }
  out << "\n]\noutput [ { name: \"OUTPUT__0\" data_type: TYPE_FP32 dims: [ 1 ] } ]\n";
  return out.str();
}

// A model that believes thin uplinks are fast: it predicts k / (the parent's learned upload),
// read back from host feature 15 (LogRate, features.h). The default evaluator prefers the wider
// uplink, so the order tells which of the two ranked the parents.
df::inference::ScriptSpec InverseUploadScript(float k) {
  df::inference::ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = k;
  spec.source =
      "def forward(self, x0: Tensor, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, "
      "x5: Tensor, x6: Tensor, x7: Tensor) -> Tensor:\n"
      "    x0 = x0.float()\n"
      "    log_up = x0[:, 1, 15] * 4.0 + 16.0\n"
      "    return (torch.exp(-log_up) * self.k).unsqueeze(1)\n";
  return spec;
}

// A model that answers `value` for every pair.
df::inference::ScriptSpec ConstantScript(float value) {
  df::inference::ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = value;
  spec.source =
      "def forward(self, x0: Tensor, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, "
      "x5: Tensor, x6: Tensor, x7: Tensor) -> Tensor:\n"
      "    x0 = x0.float()\n"
      "    return x0[:, 0, 0:1] * 0.0 + self.k\n";
  return spec;
}

// A model whose every answer is negative: not a bandwidth.
df::inference::ScriptSpec NegativeScript() { return ConstantScript(-5.0f); }

// A model that sees racks in the hosts' uplinks: 10 MB/s between two hosts whose learned upload
// (host feature 15) is the same, 1 MB/s otherwise.
df::inference::ScriptSpec SameUplinkScript() {
  df::inference::ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = 1e6f;
  spec.source =
      "def forward(self, x0: Tensor, x1: Tensor, x2: Tensor, x3: Tensor, x4: Tensor, "
      "x5: Tensor, x6: Tensor, x7: Tensor) -> Tensor:\n"
      "    x0 = x0.float()\n"
      "    near = ((x0[:, 0, 15] - x0[:, 1, 15]).abs() < 0.01).float()\n"
      "    return ((near * 9.0 + 1.0) * self.k).unsqueeze(1)\n";
  return spec;
}

ParentInfo Parent(const std::string& name, uint64_t upload) {
  ParentInfo p;
  p.peer_id = name + "-peer";
  p.host_id = name;
  p.state = PeerState::kSucceeded;
  p.finished_pieces = 100;
  p.upload_capacity = upload;
  return p;
}

ChildInfo Child() {
  ChildInfo c;
  c.peer_id = "child-peer";
  c.host_id = "child";
  c.download_capacity = 100e6;
  return c;
}

// A TCP port that accepts connections and never says a word: a hung inference service.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(fd_, 16), 0);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] {
      while (true) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // shut down
        std::lock_guard lock(mu_);
        accepted_.push_back(c);  // held open, never read
      }
    });
  }
  ~SilentListener() {
    shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    close(fd_);
    for (int c : accepted_) close(c);
  }
  uint16_t port() const { return port_; }
  size_t accepted() {
    std::lock_guard lock(mu_);
    return accepted_.size();
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> accepted_;
};

class MlEvaluatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_.path() + "/repo";
    std::filesystem::create_directories(repo_);
  }
  void TearDown() override {
    evaluator_.reset();
    if (server_) server_->Shutdown();
  }

  void StartServer(const df::inference::ScriptSpec& spec, const std::string& model = "bandwidth") {
    WriteConfig(repo_, model, BandwidthConfig(model));
    PublishVersion(repo_, model, 1, spec);
    df::inference::InferenceConfig config;
    config.repo = repo_;
    config.listen = "127.0.0.1:0";
    config.metrics = "";
    config.poll_interval_ms = 100;
    auto started = df::inference::InferenceServer::Start(config, server_registry_);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value();
    target_ = "127.0.0.1:" + std::to_string(server_->port());
  }

  void StartEvaluator(const std::string& target, std::chrono::milliseconds deadline = 2s,
                      std::chrono::milliseconds retry = 200ms) {
    MlEvaluatorOptions o;
    o.inference = target;
    o.deadline = deadline;
    o.retry_interval = retry;
    evaluator_ = std::make_unique<MlEvaluator>(o, &registry_);
  }

  bool Ready(const std::string& model) {
    df::inference::KServeClient client(target_);
    auto ready = client.ModelReady(model, std::chrono::system_clock::now() + 2s);
    return ready.ok() && ready.value();
  }

  std::vector<ScoredParent> Evaluate() {
    return evaluator_->Evaluate(Child(), candidates_, TaskView{100});
  }

  // Hosts a1-a3 (10 MB/s uplinks) and b1-b3 (40 MB/s): each is the child of a decision among
  // the others, so all 30 pairs are queued. Returns the six as parents.
  std::vector<ParentInfo> EvaluateTwoRacks() {
    std::vector<ParentInfo> all;
    for (const char* h : {"a1", "a2", "a3"}) all.push_back(Parent(h, 10'000'000));
    for (const char* h : {"b1", "b2", "b3"}) all.push_back(Parent(h, 40'000'000));
    for (const ParentInfo& h : all) {
      ChildInfo c;
      c.peer_id = h.peer_id;
      c.host_id = h.host_id;
      evaluator_->Evaluate(c, all, TaskView{100});
    }
    return all;
  }

  // The value of the series `name` with `labels` (e.g. result="model") in the registry's text.
  double Metric(const std::string& series) {
    std::string text = prometheus::TextSerializer().Serialize(registry_.Collect());
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
    }
    return -1;
  }

  df::bench::TempDir dir_;
  std::string repo_;
  std::string target_;
  prometheus::Registry server_registry_;
  prometheus::Registry registry_;
  std::unique_ptr<df::inference::InferenceServer> server_;
  std::unique_ptr<MlEvaluator> evaluator_;
  // "wide" has 10x the uplink of "thin": the default evaluator puts it first.
  std::vector<ParentInfo> candidates_ = {Parent("wide", 100'000'000), Parent("thin", 10'000'000)};
};

TEST_F(MlEvaluatorTest, RanksByPredictedBandwidthOnceThePredictionsArrive) {
  ASSERT_NO_FATAL_FAILURE(StartServer(InverseUploadScript(1e15f)));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  StartEvaluator(target_);

  // Nothing predicted yet: the default order, and the pairs are queued, not awaited.
  auto first = Evaluate();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(candidates_[first[0].index].host_id, "wide");
  EXPECT_EQ(first[0].predicted_bytes_per_sec, 0);
  EXPECT_EQ(Metric("df_scheduler_ml_decisions_total{result=\"cold\"}"), 1);

  ASSERT_TRUE(WaitFor([&] { return evaluator_->CachedPrediction("child", "thin") > 0; }));
  ASSERT_TRUE(WaitFor([&] { return evaluator_->CachedPrediction("child", "wide") > 0; }));
  // k / upload: 1e15 / 1e7 and 1e15 / 1e8 (float features: within a percent).
  EXPECT_NEAR(evaluator_->CachedPrediction("child", "thin"), 1e8, 1e6);
  EXPECT_NEAR(evaluator_->CachedPrediction("child", "wide"), 1e7, 1e5);

  auto second = Evaluate();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(candidates_[second[0].index].host_id, "thin");
  EXPECT_NEAR(second[0].predicted_bytes_per_sec, 1e8, 1e6);
  EXPECT_GT(second[0].score, second[1].score);
  EXPECT_EQ(Metric("df_scheduler_ml_decisions_total{result=\"model\"}"), 1);
  EXPECT_GE(Metric("df_scheduler_ml_predictions_total"), 2);
  EXPECT_GE(Metric("df_scheduler_ml_infer_requests_total{result=\"ok\"}"), 1);
  EXPECT_EQ(Metric("df_scheduler_ml_model_available"), 1);

  // The bad-parent filter still applies: a parent the child reported bad is dropped.
  ChildInfo child = Child();
  child.bad_parent_ids.insert("thin-peer");
  auto filtered = evaluator_->Evaluate(child, candidates_, TaskView{100});
  ASSERT_EQ(filtered.size(), 1u);
  EXPECT_EQ(candidates_[filtered[0].index].host_id, "wide");
}

TEST_F(MlEvaluatorTest, OnlineMapeComparesPredictionsWithRealisedTransfers) {
  ASSERT_NO_FATAL_FAILURE(StartServer(InverseUploadScript(1e15f)));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  StartEvaluator(target_);
  Evaluate();
  ASSERT_TRUE(WaitFor([&] { return evaluator_->CachedPrediction("child", "thin") > 0; }));
  EXPECT_EQ(evaluator_->OnlineMape(), -1);

  const double predicted = evaluator_->CachedPrediction("child", "thin");
  DownloadRow row;
  row.unix_ms = 1;
  row.task_id = "t";
  row.child.id = "child";
  row.parent.id = "thin";
  row.piece_length_bytes = 1 << 20;
  // Realised at twice the prediction: APE 0.5.
  row.cost_ns =
      static_cast<uint64_t>(static_cast<double>(row.piece_length_bytes) * 1e9 / (2 * predicted));
  evaluator_->ObserveTransfer(row);
  EXPECT_NEAR(evaluator_->OnlineMape(), 0.5, 0.01);
  EXPECT_NEAR(Metric("df_scheduler_ml_online_mape"), 0.5, 0.01);
  // A pair never predicted adds nothing.
  row.parent.id = "elsewhere";
  evaluator_->ObserveTransfer(row);
  EXPECT_NEAR(evaluator_->OnlineMape(), 0.5, 0.01);
  EXPECT_EQ(Metric("df_scheduler_ml_prediction_error_ratio_count"), 1);
}

TEST_F(MlEvaluatorTest, NoServiceMeansTheDefaultOrderAndRecoversWhenOneStarts) {
  // Nothing listens at the target yet.
  const uint16_t port = df::bench::FreePort();
  StartEvaluator("127.0.0.1:" + std::to_string(port), 2s, 200ms);
  auto first = Evaluate();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(candidates_[first[0].index].host_id, "wide");
  ASSERT_TRUE(WaitFor([&] { return Metric("df_scheduler_ml_model_available") == 0; }));
  Evaluate();
  EXPECT_GE(Metric("df_scheduler_ml_decisions_total{result=\"unavailable\"}"), 1);
  EXPECT_GE(Metric("df_scheduler_ml_infer_requests_total{result=\"error\"}"), 1);

  // The service comes up on that port: the next decisions' pairs get predictions.
  WriteConfig(repo_, "bandwidth", BandwidthConfig("bandwidth"));
  PublishVersion(repo_, "bandwidth", 1, InverseUploadScript(1e15f));
  df::inference::InferenceConfig config;
  config.repo = repo_;
  config.listen = "127.0.0.1:" + std::to_string(port);
  config.metrics = "";
  config.poll_interval_ms = 100;
  auto started = df::inference::InferenceServer::Start(config, server_registry_);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  server_ = std::move(started).value();
  ASSERT_TRUE(WaitFor([&] {
    Evaluate();
    return evaluator_->CachedPrediction("child", "thin") > 0;
  }));
  EXPECT_EQ(candidates_[Evaluate()[0].index].host_id, "thin");
  EXPECT_EQ(Metric("df_scheduler_ml_model_available"), 1);
}

TEST_F(MlEvaluatorTest, AHungServiceNeverHoldsADecision) {
  // The service accepts the connection and never answers: the predictor thread sits in a
  // ModelInfer for its whole deadline (2 s here). Decisions meanwhile must not wait for it.
  SilentListener silent;
  StartEvaluator("127.0.0.1:" + std::to_string(silent.port()), 2s, 5s);
  const auto start = std::chrono::steady_clock::now();
  std::chrono::nanoseconds slowest{0};
  for (int i = 0; i < 50; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto ranked = Evaluate();
    slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
    ASSERT_EQ(ranked.size(), 2u);
    EXPECT_EQ(candidates_[ranked[0].index].host_id, "wide");
    std::this_thread::sleep_for(10ms);
  }
  // 50 decisions in about half a second, while the one call waits 2 s: none waited for it.
  EXPECT_LT(slowest, 1s);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1900ms);
  EXPECT_EQ(Metric("df_scheduler_ml_decisions_total{result=\"cold\"}"), 50);
  // The call really was in flight (connected, unanswered) while they were made.
  EXPECT_GE(silent.accepted(), 1u);
  EXPECT_EQ(Metric("df_scheduler_ml_infer_requests_total{result=\"error\"}"), 0);
}

// A call that only missed its deadline (the service is there, busy) is retried after 5x the
// deadline; one that failed otherwise waits retry_interval.
TEST_F(MlEvaluatorTest, ALateCallIsRetriedSoonerThanAFailedOne) {
  SilentListener silent;
  StartEvaluator("127.0.0.1:" + std::to_string(silent.port()), 50ms, 10s);
  Evaluate();
  std::this_thread::sleep_for(1500ms);
  // Every 50 + 250 ms: about 5 calls in 1.5 s; with the 10 s pause there would be one.
  EXPECT_GE(Metric("df_scheduler_ml_infer_requests_total{result=\"error\"}"), 3);
  evaluator_.reset();

  int closed_port = 0;
  {
    SilentListener gone;  // a port that refuses connections once the listener is closed
    closed_port = gone.port();
  }
  prometheus::Registry fresh;
  MlEvaluatorOptions o;
  o.inference = "127.0.0.1:" + std::to_string(closed_port);
  o.deadline = 50ms;
  o.retry_interval = 10s;
  MlEvaluator refused(o, &fresh);
  refused.Evaluate(Child(), candidates_, TaskView{100});
  std::this_thread::sleep_for(1500ms);
  std::string text = prometheus::TextSerializer().Serialize(fresh.Collect());
  EXPECT_NE(text.find("df_scheduler_ml_infer_requests_total{result=\"error\"} 1\n"),
            std::string::npos)
      << text;
}

TEST_F(MlEvaluatorTest, AnswersThatAreNotBandwidthsAreNotUsed) {
  ASSERT_NO_FATAL_FAILURE(StartServer(NegativeScript()));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  StartEvaluator(target_);
  Evaluate();
  ASSERT_TRUE(
      WaitFor([&] { return Metric("df_scheduler_ml_infer_requests_total{result=\"ok\"}") >= 1; }));
  EXPECT_EQ(evaluator_->CachedPrediction("child", "thin"), 0);
  EXPECT_EQ(Metric("df_scheduler_ml_predictions_total"), 0);
  EXPECT_EQ(candidates_[Evaluate()[0].index].host_id, "wide");
}

TEST_F(MlEvaluatorTest, AnUnknownModelIsAFallbackNotAnError) {
  ASSERT_NO_FATAL_FAILURE(StartServer(InverseUploadScript(1e15f), "other"));
  MlEvaluatorOptions o;
  o.inference = target_;
  o.model = "bandwidth";  // the server has only "other"
  o.retry_interval = 200ms;
  evaluator_ = std::make_unique<MlEvaluator>(o, &registry_);
  Evaluate();
  ASSERT_TRUE(WaitFor([&] { return Metric("df_scheduler_ml_model_available") == 0; }));
  EXPECT_EQ(candidates_[Evaluate()[0].index].host_id, "wide");
  EXPECT_GE(Metric("df_scheduler_ml_decisions_total{result=\"unavailable\"}"), 1);
}

// Hosts a1-a3 and b1-b3 (two racks, as the model sees them): once the pairs are predicted the
// evaluator publishes two groups; "child", whose pairs are all slow, is in none.
TEST_F(MlEvaluatorTest, GroupsHostsByPredictedPairBandwidth) {
  ASSERT_NO_FATAL_FAILURE(StartServer(SameUplinkScript()));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  StartEvaluator(target_);
  EXPECT_EQ(evaluator_->inferred_groups(), nullptr);
  std::vector<ParentInfo> all;
  for (const char* h : {"a1", "a2", "a3"}) all.push_back(Parent(h, 10'000'000));
  for (const char* h : {"b1", "b2", "b3"}) all.push_back(Parent(h, 40'000'000));
  evaluator_->Evaluate(Child(), all, TaskView{100});  // every host is seen with its uplink
  for (const ParentInfo& h : all) {
    ChildInfo c;
    c.peer_id = h.peer_id;
    c.host_id = h.host_id;
    std::vector<ParentInfo> others;
    for (const ParentInfo& o : all) {
      if (o.host_id != h.host_id) others.push_back(o);
    }
    evaluator_->Evaluate(c, others, TaskView{100});
  }
  ASSERT_TRUE(WaitFor([&] {
    auto g = evaluator_->inferred_groups();
    return g && g->group_of.size() == 6;
  }));
  const auto groups = evaluator_->inferred_groups()->group_of;
  EXPECT_EQ(groups.at("a1"), "~a1");
  EXPECT_EQ(groups.at("a3"), "~a1");
  EXPECT_EQ(groups.at("b2"), "~b1");
  EXPECT_FALSE(groups.contains("child"));
  EXPECT_EQ(Metric("df_scheduler_ml_inferred_groups"), 2);
}

// The pairs are known under a model that sees no structure (no groups); when a new version
// that sees racks answers, every known pair is predicted again and the groups follow, though no
// decision asks for those pairs again.
TEST_F(MlEvaluatorTest, ANewModelVersionPredictsTheKnownPairsAgain) {
  ASSERT_NO_FATAL_FAILURE(StartServer(ConstantScript(5e6f)));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  StartEvaluator(target_);
  const std::vector<ParentInfo> all = EvaluateTwoRacks();
  ASSERT_TRUE(WaitFor([&] { return Metric("df_scheduler_ml_predictions_total") >= 30; }));
  std::this_thread::sleep_for(1500ms);  // past group_refresh: a grouping has run
  EXPECT_EQ(evaluator_->inferred_groups(), nullptr);

  PublishVersion(repo_, "bandwidth", 2, SameUplinkScript());
  int n = 0;
  auto racks_seen = [&] {
    auto g = evaluator_->inferred_groups();
    if (!g) return false;
    const auto& of = g->group_of;
    for (const char* h : {"a1", "a2", "a3", "b1", "b2", "b3"}) {
      if (!of.contains(h)) return false;
    }
    return of.at("a1") == of.at("a2") && of.at("a1") == of.at("a3") && of.at("b1") == of.at("b2") &&
           of.at("b1") == of.at("b3") && of.at("a1") != of.at("b1");
  };
  ASSERT_TRUE(WaitFor([&] {
    // One new pair of new hosts per round: the call that reaches version 2 brings the known
    // pairs back (the new pairs say nothing about racks a and b).
    ChildInfo c;
    c.peer_id = c.host_id = "x" + std::to_string(n);
    evaluator_->Evaluate(c, {Parent("z" + std::to_string(n++), 20'000'000)}, TaskView{100});
    return racks_seen();
  }));
}

// infer_groups off: the same predictions, no groups.
TEST_F(MlEvaluatorTest, NoGroupsWhenInferenceOfGroupsIsOff) {
  ASSERT_NO_FATAL_FAILURE(StartServer(SameUplinkScript()));
  ASSERT_TRUE(WaitFor([&] { return Ready("bandwidth"); }));
  MlEvaluatorOptions o;
  o.inference = target_;
  o.infer_groups = false;
  evaluator_ = std::make_unique<MlEvaluator>(o, &registry_);
  const std::vector<ParentInfo> all = EvaluateTwoRacks();
  ASSERT_TRUE(WaitFor([&] { return Metric("df_scheduler_ml_predictions_total") >= 30; }));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(evaluator_->inferred_groups(), nullptr);
}

}  // namespace
}  // namespace df::scheduler
