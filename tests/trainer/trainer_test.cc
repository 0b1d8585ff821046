// df_trainer as a specification: the exported TorchScript computes what the C++ model computes,
// warm starts load, the repository layout and atomic publishing, and train-and-publish.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "bench/harness.h"
#include "learning/features.h"
#include "learning/synthetic.h"
#include "trainer/model.h"
#include "trainer/repository.h"
#include "trainer/trainer.h"

namespace df::trainer {
namespace {

namespace fs = std::filesystem;

learning::SyntheticOptions SmallWorld() {
  learning::SyntheticOptions o;
  o.idcs = 2;
  o.racks_per_idc = 3;
  o.hosts_per_rack = 10;
  o.parents_per_child = 4;
  return o;
}

std::unique_ptr<learning::Dataset> SmallDataset() {
  bench::TempDir dir;
  EXPECT_TRUE(learning::WriteSyntheticDir(SmallWorld(), dir.path()).ok());
  auto d = learning::ReadDatasetDir(dir.path());
  EXPECT_TRUE(d.ok());
  return std::move(d).value();
}

Inputs SomeInputs(const learning::Dataset& d, int n) {
  auto graph = learning::HostGraph::Build(d);
  learning::FeatureBuilder fb(graph);
  learning::InputBatch batch;
  for (const auto& s : learning::PairSamples(d, graph)) {
    if (batch.batch == n) break;
    fb.Append(s.child, s.parent, &batch);
  }
  return ToTensors(batch);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class ModelTest : public ::testing::TestWithParam<ModelKind> {};

TEST_P(ModelTest, SavedTorchScriptEqualsTheCppModel) {
  torch::set_num_threads(1);
  auto d = SmallDataset();
  Inputs in = SomeInputs(*d, 37);
  BandwidthModel model(GetParam(), 7);
  model.SetTargetScale(17.5, 1.3);
  bench::TempDir dir;
  const std::string path = dir.path() + "/model.pt";
  model.Export().save(path);
  torch::jit::Module loaded = torch::jit::load(path);
  std::vector<torch::jit::IValue> args(in.begin(), in.end());
  torch::Tensor got = loaded.forward(args).toTensor();
  torch::Tensor want = model.Predict(in);
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{37, 1}));
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-3)) << (got - want).abs().max();
  EXPECT_GT(want.min().item<float>(), 0.0f);
  // A different batch size goes through the same module (dynamic batch dimension).
  std::vector<torch::jit::IValue> one;
  for (const auto& t : Slice(in, 3, 4)) one.emplace_back(t);
  EXPECT_NEAR(loaded.forward(one).toTensor().item<float>(), want[3][0].item<float>(),
              1e-3 * want[3][0].item<float>());
  EXPECT_EQ(loaded.attr("feature_version").toInt(), learning::kFeatureVersion);
  // The inputs as they are served (FP16: ToTensors already rounded them) give the same answers.
  std::vector<torch::jit::IValue> halves;
  for (const auto& t : in) halves.emplace_back(t.to(torch::kHalf));
  EXPECT_TRUE(torch::allclose(loaded.forward(halves).toTensor(), want, 1e-4, 1e-3));

  // A warm start reproduces the saved model exactly; another kind is refused.
  BandwidthModel warm(GetParam(), 99);
  ASSERT_TRUE(warm.LoadFrom(loaded).ok());
  EXPECT_TRUE(torch::allclose(warm.Predict(in), want, 1e-5, 1e-3));
  BandwidthModel other(GetParam() == ModelKind::kGnn ? ModelKind::kFeatureMlp : ModelKind::kGnn, 1);
  EXPECT_FALSE(other.LoadFrom(loaded).ok());
}

INSTANTIATE_TEST_SUITE_P(Kinds, ModelTest,
                         ::testing::Values(ModelKind::kGnn, ModelKind::kFeatureMlp),
                         [](const auto& info) { return std::string(ModelKindName(info.param)); });

TEST(ModelRepository, ConfigDescribesTheContract) {
  bench::TempDir dir;
  ModelRepository repo(dir.path(), "bandwidth");
  ASSERT_TRUE(repo.WriteConfig(512).ok());
  const std::string text = Slurp(dir.path() + "/bandwidth/config.pbtxt");
  EXPECT_NE(text.find("name: \"bandwidth\""), std::string::npos);
  EXPECT_NE(text.find("platform: \"pytorch_libtorch\""), std::string::npos);
  EXPECT_NE(text.find("max_batch_size: 512"), std::string::npos);
  for (int i = 0; i < learning::kNumInputs; ++i) {
    EXPECT_NE(text.find("name: \"INPUT__" + std::to_string(i) + "\""), std::string::npos);
  }
  EXPECT_NE(text.find("dims: [ 2, 8, 4, 24 ]"), std::string::npos);
  EXPECT_NE(text.find("name: \"OUTPUT__0\""), std::string::npos);
  // Inputs travel as FP16 (learning/features.h), the output as FP32.
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = 0; (at = text.find(what, at)) != std::string::npos; ++at) ++n;
    return n;
  };
  EXPECT_EQ(count("TYPE_FP16"), static_cast<size_t>(learning::kNumInputs));
  EXPECT_EQ(count("TYPE_FP32"), 1u);
  EXPECT_NE(text.find("dims: [ 12 ]"), std::string::npos);
}

TEST(ModelRepository, AFailedPublishLeavesNothingAndVersionsCount) {
  bench::TempDir dir;
  ModelRepository repo(dir.path(), "m");
  EXPECT_EQ(repo.LatestVersion(), 0);
  auto failed = repo.Publish([](const std::string& d) {
    std::ofstream(d + "/model.pt") << "half";
    return IoError("disk full");
  });
  EXPECT_EQ(failed.status().code(), StatusCode::kIoError);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(repo.model_dir())) ++entries;
  EXPECT_EQ(entries, 0u);
  auto write = [](const std::string& d) {
    std::ofstream(d + "/model.pt") << "m";
    return Status::Ok();
  };
  EXPECT_EQ(repo.Publish(write).value(), 1);
  EXPECT_EQ(repo.Publish(write).value(), 2);
  fs::create_directory(repo.model_dir() + "/.staging-999999999-1");  // a dead trainer's
  EXPECT_EQ(repo.LatestVersion(), 2);
  EXPECT_EQ(repo.Publish(write).value(), 3);
  EXPECT_FALSE(fs::exists(repo.model_dir() + "/.staging-999999999-1"));
}

// A poller that lists the model directory while versions are published never sees a version
// without all of its files, and concurrent publishers never share a number.
TEST(ModelRepository, PublishIsAtomicAndConcurrentPublishersGetDistinctVersions) {
  bench::TempDir dir;
  ModelRepository repo(dir.path(), "m");
  std::atomic<bool> done{false};
  std::atomic<int> incomplete{0}, seen{0};
  std::thread poller([&] {
    while (!done) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(repo.model_dir(), ec)) {
        const std::string name = e.path().filename().string();
        if (name.empty() || name[0] == '.') continue;
        ++seen;
        const std::string big = e.path().string() + "/model.pt";
        if (!fs::exists(e.path() / "metrics.json") || fs::file_size(big, ec) != (1u << 20)) {
          ++incomplete;
        }
      }
    }
  });
  std::vector<std::thread> publishers;
  std::mutex mu;
  std::set<int64_t> versions;
  for (int t = 0; t < 3; ++t) {
    publishers.emplace_back([&] {
      for (int i = 0; i < 4; ++i) {
        auto v = repo.Publish([](const std::string& d) {
          std::ofstream(d + "/model.pt") << std::string(1 << 20, 'x');
          std::ofstream(d + "/metrics.json") << "{}";
          return Status::Ok();
        });
        ASSERT_TRUE(v.ok()) << v.status().ToString();
        std::lock_guard lock(mu);
        versions.insert(*v);
      }
    });
  }
  for (auto& t : publishers) t.join();
  done = true;
  poller.join();
  EXPECT_EQ(versions.size(), 12u);
  EXPECT_EQ(*versions.rbegin(), 12);
  EXPECT_EQ(incomplete.load(), 0);
  EXPECT_GT(seen.load(), 0);
}

TEST(TrainAndPublish, PublishesAFirstVersionThenOnlyABetterOne) {
  auto d = SmallDataset();
  bench::TempDir dir;
  TrainOptions o;
  o.repo = dir.path();
  o.epochs = 8;
  auto first = TrainAndPublish(*d, o);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->published_version, 1);
  EXPECT_GT(first->validation_pairs, 10u);
  EXPECT_GT(first->gnn.mape, 0.0);
  EXPECT_GT(first->history.mape, 0.0);
  const auto metrics = nlohmann::json::parse(Slurp(dir.path() + "/bandwidth/1/metrics.json"));
  EXPECT_EQ(metrics["version"], 1);
  EXPECT_DOUBLE_EQ(metrics["gnn"]["mape"].get<double>(), first->gnn.mape);
  EXPECT_TRUE(metrics.contains("feature_mlp"));
  EXPECT_TRUE(metrics.contains("history"));
  EXPECT_TRUE(fs::exists(dir.path() + "/bandwidth/config.pbtxt"));

  // No training at all: the warm-started model is the published one, not better.
  o.epochs = 0;
  auto second = TrainAndPublish(*d, o);
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(second->warm_started);
  ASSERT_TRUE(second->current.has_value());
  EXPECT_NEAR(second->current->mape, first->gnn.mape, 1e-4);
  EXPECT_EQ(second->published_version, 0);
  EXPECT_FALSE(fs::exists(dir.path() + "/bandwidth/2"));
}

// A latest version built for another input contract (here feature version 2, FP32 inputs) is
// neither a warm start nor a bar: the new version replaces it.
TEST(TrainAndPublish, AVersionOfAnotherFeatureVersionIsReplaced) {
  auto d = SmallDataset();
  bench::TempDir dir;
  ModelRepository repo(dir.path(), "bandwidth");
  ASSERT_TRUE(repo.WriteConfig(64).ok());
  torch::jit::Module old = BandwidthModel(ModelKind::kGnn, 3).Export();
  old.setattr("feature_version", static_cast<int64_t>(learning::kFeatureVersion - 1));
  ASSERT_TRUE(repo.Publish([&](const std::string& version_dir) {
                    old.save(version_dir + "/model.pt");
                    return Status::Ok();
                  })
                  .ok());
  TrainOptions o;
  o.repo = dir.path();
  o.epochs = 0;  // even an untrained model replaces it
  auto report = TrainAndPublish(*d, o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->current_version, 1);
  EXPECT_FALSE(report->current.has_value());
  EXPECT_FALSE(report->warm_started);
  EXPECT_EQ(report->published_version, 2);
  EXPECT_NE(report->decision.find("replaces version 1"), std::string::npos) << report->decision;
}

TEST(TrainAndPublish, TooLittleDataIsAnErrorNotACrash) {
  learning::Dataset d;
  learning::HostRecord a, b;
  a.id = "a";
  b.id = "b";
  ASSERT_TRUE(d.AddDownload(a, b, 1000, 1000, 1));
  TrainOptions o;
  EXPECT_EQ(TrainAndPublish(d, o).status().code(), StatusCode::kInvalidArgument);
}

TEST(TrainAndPublish, BlankedHostFeaturesChangeOnlyTheNeuralModels) {
  auto d = SmallDataset();
  TrainOptions o;
  o.epochs = 3;
  auto plain = TrainAndPublish(*d, o);
  auto again = TrainAndPublish(*d, o);
  ASSERT_TRUE(plain.ok() && again.ok());
  ASSERT_EQ(plain->feature_mlp.mape, again->feature_mlp.mape);  // training is deterministic

  o.blank_host_features = {15, 16};  // the learned capacities
  auto blanked = TrainAndPublish(*d, o);
  ASSERT_TRUE(blanked.ok()) << blanked.status().ToString();
  EXPECT_NE(blanked->feature_mlp.mape, plain->feature_mlp.mape);
  EXPECT_NE(blanked->gnn.mape, plain->gnn.mape);
  EXPECT_EQ(blanked->history.mape, plain->history.mape);
  EXPECT_EQ(blanked->validation_pairs, plain->validation_pairs);

  o.blank_host_features = {24};
  EXPECT_EQ(TrainAndPublish(*d, o).status().code(), StatusCode::kInvalidArgument);
  o.blank_host_features = {-1};
  EXPECT_EQ(TrainAndPublish(*d, o).status().code(), StatusCode::kInvalidArgument);

  // Never published: the scheduler builds every feature.
  bench::TempDir dir;
  o.repo = dir.path();
  o.blank_host_features = {15};
  EXPECT_EQ(TrainAndPublish(*d, o).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir.path() + "/bandwidth/1"));
}

}  // namespace
}  // namespace df::trainer
