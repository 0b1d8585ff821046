#include "trainer/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "common/log.h"
#include "learning/features.h"
#include "learning/host_graph.h"
#include "trainer/model.h"
#include "trainer/repository.h"

namespace df::trainer {
namespace {

using learning::ErrorMetrics;

struct Split {
  learning::InputBatch train_inputs, validation_inputs;
  std::vector<double> train_labels, validation_labels;  // bytes/s
  std::vector<std::pair<learning::HostIndex, learning::HostIndex>> validation_pairs;
};

nlohmann::json ToJson(const ErrorMetrics& m) {
  return {{"mape", m.mape}, {"mae", m.mae}, {"rmse", m.rmse}, {"count", m.count}};
}

ErrorMetrics Evaluate(const torch::Tensor& predicted, const std::vector<double>& actual) {
  auto p = predicted.reshape({-1}).to(torch::kFloat64).contiguous();
  std::vector<double> pv(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  return learning::ComputeErrors(pv, actual);
}

torch::Tensor PredictInBatches(const BandwidthModel& model, const Inputs& inputs, int64_t batch) {
  std::vector<torch::Tensor> parts;
  const int64_t n = inputs[0].size(0);
  for (int64_t b = 0; b < n; b += batch)
    parts.push_back(model.Predict(Slice(inputs, b, std::min(n, b + batch))));
  return parts.empty() ? torch::zeros({0, 1}) : torch::cat(parts, 0);
}

// Outputs of an exported module (the latest version) on `inputs`; nullopt when it fails.
std::optional<torch::Tensor> RunModule(torch::jit::Module& module, const Inputs& inputs,
                                       int64_t batch) {
  try {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> parts;
    const int64_t n = inputs[0].size(0);
    for (int64_t b = 0; b < n; b += batch) {
      std::vector<torch::jit::IValue> args;
      for (const auto& t : Slice(inputs, b, std::min(n, b + batch))) args.emplace_back(t);
      parts.push_back(module.forward(args).toTensor().reshape({-1, 1}));
    }
    return torch::cat(parts, 0);
  } catch (const std::exception& e) {
    DF_LOG_WARN("latest model version does not run on these inputs error={}", e.what());
    return std::nullopt;
  }
}

void Train(BandwidthModel& model, const Inputs& inputs, const torch::Tensor& target,
           const TrainOptions& o) {
  torch::optim::Adam adam(model.Parameters(),
                          torch::optim::AdamOptions(o.learning_rate).weight_decay(o.weight_decay));
  const int64_t n = inputs[0].size(0);
  std::mt19937_64 rng(o.init_seed);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    auto perm = torch::from_blob(order.data(), {n}, torch::kInt64);
    for (int64_t b = 0; b < n; b += o.batch_size) {
      auto idx = perm.slice(0, b, std::min(n, b + o.batch_size));
      Inputs batch;
      for (size_t i = 0; i < inputs.size(); ++i) batch[i] = inputs[i].index_select(0, idx);
      adam.zero_grad();
      auto loss = torch::mse_loss(model.Forward(batch), target.index_select(0, idx));
      loss.backward();
      adam.step();
    }
  }
}

Split BuildSplit(const learning::Dataset& dataset, const learning::HostGraph& graph,
                 const TrainOptions& o) {
  Split s;
  learning::FeatureBuilder features(graph);
  for (const auto& sample : learning::PairSamples(dataset, graph)) {
    const auto& c = graph.host(sample.child).record.id;
    const auto& p = graph.host(sample.parent).record.id;
    if (learning::IsHeldOutPair(c, p, o.split_seed, o.holdout_fraction)) {
      features.Append(sample.child, sample.parent, &s.validation_inputs);
      s.validation_labels.push_back(sample.bandwidth_bytes_per_sec);
      s.validation_pairs.emplace_back(sample.child, sample.parent);
    } else {
      features.Append(sample.child, sample.parent, &s.train_inputs);
      s.train_labels.push_back(sample.bandwidth_bytes_per_sec);
    }
  }
  return s;
}

// Zeroes `columns` of every host-feature row (INPUT__0, INPUT__1, INPUT__4) of `batch`.
void BlankHostFeatures(const std::vector<int>& columns, learning::InputBatch* batch) {
  for (int input : {0, 1, 4}) {
    std::vector<float>& data = batch->data[input];
    for (size_t row = 0; row < data.size(); row += learning::kHostFeatures) {
      for (int c : columns) data[row + static_cast<size_t>(c)] = 0.0f;
    }
  }
}

}  // namespace

std::string TrainReport::MetricsJson(int64_t version) const {
  nlohmann::json j = {
      {"version", version},
      {"feature_version", learning::kFeatureVersion},
      {"created_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count()},
      {"hosts", hosts},
      {"train_pairs", train_pairs},
      {"validation_pairs", validation_pairs},
      {"warm_started", warm_started},
      {"gnn", ToJson(gnn)},
      {"feature_mlp", ToJson(feature_mlp)},
      {"history", ToJson(history)},
      {"previous_version", current_version},
      {"decision", decision},
      {"training_seconds", seconds},
  };
  if (current) j["previous"] = ToJson(*current);
  return j.dump(2) + "\n";
}

Result<TrainReport> TrainAndPublish(const learning::Dataset& dataset, const TrainOptions& o) {
  for (int c : o.blank_host_features) {
    if (c < 0 || c >= learning::kHostFeatures) {
      return InvalidArgument("host feature " + std::to_string(c) + " does not exist (0.." +
                             std::to_string(learning::kHostFeatures - 1) + ")");
    }
  }
  if (!o.blank_host_features.empty() && !o.repo.empty()) {
    return InvalidArgument(
        "blanked host features are an ablation: a published model would expect inputs the "
        "scheduler does not build");
  }
  const auto start = std::chrono::steady_clock::now();
  torch::set_num_threads(std::max(1, o.threads));
  TrainReport report;
  // The training graph never holds a validation pair's transfers.
  const auto graph =
      learning::HostGraph::Build(dataset, [&](const std::string& c, const std::string& p) {
        return learning::IsHeldOutPair(c, p, o.split_seed, o.holdout_fraction);
      });
  Split split = BuildSplit(dataset, graph, o);
  BlankHostFeatures(o.blank_host_features, &split.train_inputs);
  BlankHostFeatures(o.blank_host_features, &split.validation_inputs);
  report.hosts = graph.size();
  report.train_pairs = split.train_labels.size();
  report.validation_pairs = split.validation_labels.size();
  if (report.train_pairs + report.validation_pairs < o.min_pairs || report.validation_pairs == 0 ||
      report.train_pairs == 0) {
    return InvalidArgument(
        "too few observed pairs to train on: " + std::to_string(report.train_pairs) +
        " training, " + std::to_string(report.validation_pairs) + " held out");
  }
  const Inputs train = ToTensors(split.train_inputs);
  const Inputs validation = ToTensors(split.validation_inputs);
  auto log_labels =
      torch::log(torch::tensor(split.train_labels, torch::kFloat64)).to(torch::kFloat32);
  const double mean = log_labels.mean().item<double>();
  const double std = log_labels.std().item<double>();

  // The latest version: the warm start and the bar to beat.
  ModelRepository repo(o.repo, o.model_name);
  std::optional<torch::jit::Module> current_module;
  if (!o.repo.empty() && (report.current_version = repo.LatestVersion()) > 0) {
    const std::string path = repo.VersionDir(report.current_version) + "/model.pt";
    try {
      current_module = torch::jit::load(path);
      current_module->eval();
    } catch (const std::exception& e) {
      DF_LOG_WARN("latest model version unreadable, training from scratch path={} error={}", path,
                  e.what());
    }
    // A version built for another input contract is no bar (the scheduler's inputs would not
    // fit it, even where its forward runs on them) and no warm start: the new one replaces it.
    const auto same_contract = [](const torch::jit::Module& m) {
      try {
        return m.hasattr("feature_version") &&
               m.attr("feature_version").toInt() == learning::kFeatureVersion;
      } catch (const c10::Error&) {
        return false;  // an attribute of another type
      }
    };
    if (current_module && !same_contract(*current_module)) {
      DF_LOG_INFO("latest model version has another feature version, not compared version={}",
                  report.current_version);
      current_module.reset();
    }
  }

  BandwidthModel gnn(ModelKind::kGnn, o.init_seed);
  gnn.SetTargetScale(mean, std);
  if (current_module && o.warm_start) {
    Status s = gnn.LoadFrom(*current_module);
    report.warm_started = s.ok();
    if (!s.ok()) DF_LOG_INFO("no warm start from the latest version reason={}", s.message());
  }
  auto standardised = [&](const BandwidthModel& m) {
    return ((log_labels - m.target_mean()) / m.target_std()).reshape({-1, 1});
  };
  Train(gnn, train, standardised(gnn), o);
  BandwidthModel mlp(ModelKind::kFeatureMlp, o.init_seed);
  mlp.SetTargetScale(mean, std);
  Train(mlp, train, standardised(mlp), o);

  const int64_t eval_batch = 4096;
  report.gnn = Evaluate(PredictInBatches(gnn, validation, eval_batch), split.validation_labels);
  report.feature_mlp =
      Evaluate(PredictInBatches(mlp, validation, eval_batch), split.validation_labels);
  learning::HistoryBaseline history(graph);
  std::vector<double> history_predictions;
  for (const auto& [c, p] : split.validation_pairs)
    history_predictions.push_back(history.Predict(c, p));
  report.history = learning::ComputeErrors(history_predictions, split.validation_labels);
  if (current_module) {
    if (auto out = RunModule(*current_module, validation, eval_batch)) {
      report.current = Evaluate(*out, split.validation_labels);
    }
  }

  const bool better =
      !report.current || report.gnn.mape < report.current->mape * (1.0 - o.min_improvement);
  if (o.repo.empty()) {
    report.decision = "evaluated only (no repository)";
  } else if (!better) {
    report.decision = "not better: MAPE " + std::to_string(report.gnn.mape) + " vs version " +
                      std::to_string(report.current_version) + "'s " +
                      std::to_string(report.current->mape);
  } else {
    report.decision =
        report.current ? "better than version " + std::to_string(report.current_version)
        : report.current_version > 0
            ? "replaces version " + std::to_string(report.current_version) +
                  " (unreadable, of another feature version, or failing on these inputs)"
            : "first version";
    DF_RETURN_IF_ERROR(repo.WriteConfig(o.max_batch_size));
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    auto version = repo.Publish([&](const std::string& dir) -> Status {
      try {
        gnn.Export().save(dir + "/model.pt");
      } catch (const std::exception& e) {
        return IoError(std::string("save model.pt: ") + e.what());
      }
      std::ofstream out(dir + "/metrics.json", std::ios::binary | std::ios::trunc);
      out << report.MetricsJson(repo.LatestVersion() + 1);
      out.flush();
      return out ? Status::Ok() : IoError("write " + dir + "/metrics.json");
    });
    if (!version.ok()) return version.status();
    report.published_version = *version;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace df::trainer
