// Accuracy of the bandwidth GNN against its two baselines, on held-out host pairs (pairs never
// seen in training), side by side: the synthetic generator (1,000+ hosts with hidden racks) with
// and without IDC names, and any records dataset directory given with --dataset (rig runs).
//
//   learning_bench [--epochs 30] [--threads 1] [--dataset DIR]... [--no-synthetic]
//                  [--synthetic named|hidden|both] [--hosts-per-rack 32] [--seed 1]
//                  [--learning-rate 0.003] [--batch-size 256] [--blank-host-feature N]...
//
// Prints one line per dataset: MAPE (and MAE, RMSE) of the GNN, the feature MLP and the
// per-pair history baseline, and GNN MAPE / the better baseline's MAPE (target <= 0.7).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "learning/dataset.h"
#include "learning/synthetic.h"
#include "trainer/trainer.h"

namespace {

int Report(const std::string& name, const df::learning::Dataset& dataset,
           const df::trainer::TrainOptions& options) {
  auto report = df::trainer::TrainAndPublish(dataset, options);
  if (!report.ok()) {
    std::printf("%-28s error: %s\n", name.c_str(), report.status().ToString().c_str());
    return 1;
  }
  const double better = std::min(report->feature_mlp.mape, report->history.mape);
  std::printf("%-28s %6lu %7lu %6lu | %8.4f %8.4f %8.4f | %6.3f | %5.0fs\n", name.c_str(),
              static_cast<unsigned long>(report->hosts),
              static_cast<unsigned long>(report->train_pairs),
              static_cast<unsigned long>(report->validation_pairs), report->gnn.mape,
              report->feature_mlp.mape, report->history.mape,
              better > 0 ? report->gnn.mape / better : 0.0, report->seconds);
  std::printf(
      "%-28s   MAE MB/s   gnn %.2f  feature_mlp %.2f  history %.2f;  RMSE MB/s  gnn %.2f  "
      "feature_mlp %.2f  history %.2f\n",
      "", report->gnn.mae / 1e6, report->feature_mlp.mae / 1e6, report->history.mae / 1e6,
      report->gnn.rmse / 1e6, report->feature_mlp.rmse / 1e6, report->history.rmse / 1e6);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"learning_bench: GNN vs baselines on held-out host pairs"};
  df::trainer::TrainOptions options;
  std::vector<std::string> dirs;
  bool no_synthetic = false;
  std::string variants = "both";
  df::learning::SyntheticOptions synthetic;
  app.add_option("--epochs", options.epochs, "training epochs (every model)");
  app.add_option("--threads", options.threads, "torch threads");
  app.add_option("--dataset", dirs, "records dataset directory (repeatable)");
  app.add_flag("--no-synthetic", no_synthetic, "skip the synthetic datasets");
  app.add_option("--synthetic", variants, "synthetic variants: named, hidden or both");
  app.add_option("--learning-rate", options.learning_rate, "Adam learning rate (every model)");
  app.add_option("--batch-size", options.batch_size, "training batch size (every model)");
  app.add_option("--weight-decay", options.weight_decay, "Adam weight decay (every model)");
  app.add_option("--blank-host-feature", options.blank_host_features,
                 "ablation: zero this host-feature column (0-23, learning/features.h) in every "
                 "input of both neural models, e.g. 15 and 16 for the learned capacities "
                 "(repeatable)");
  app.add_option("--hosts-per-rack", synthetic.hosts_per_rack, "synthetic: hosts per rack");
  app.add_option("--seed", synthetic.seed, "synthetic: generator seed");
  std::string write_dir;
  app.add_option("--write-synthetic", write_dir,
                 "write the synthetic dataset (idc named) as dataset files into this directory "
                 "and exit (for dftrainer --train-once)");
  CLI11_PARSE(app, argc, argv);
  if (!write_dir.empty()) {
    df::Status s = df::learning::WriteSyntheticDir(synthetic, write_dir);
    if (!s.ok()) {
      std::fprintf(stderr, "learning_bench: %s\n", s.ToString().c_str());
      return 1;
    }
    return 0;
  }
  options.repo.clear();  // evaluate only

  std::printf("%-28s %6s %7s %6s | %8s %8s %8s | %6s |\n", "dataset", "hosts", "train", "held",
              "gnn", "feat_mlp", "history", "ratio");
  std::printf("%-28s %6s %7s %6s | %26s | %6s |\n", "", "", "pairs", "pairs",
              "MAPE on held-out pairs", "gnn/best");
  int failures = 0;
  if (!no_synthetic) {
    for (bool hide : {false, true}) {
      if (variants != "both" && (variants == "hidden") != hide) continue;
      df::learning::SyntheticOptions o = synthetic;
      o.hide_idc = hide;
      const auto data = df::learning::GenerateSynthetic(o);
      df::learning::Dataset dataset;
      df::learning::DatasetFileReader download(df::learning::FileKind::kDownload, &dataset);
      df::learning::DatasetFileReader topology(df::learning::FileKind::kNetworkTopology, &dataset);
      if (!download.Feed(data.download_csv).ok() || !download.Finish().ok() ||
          !topology.Feed(data.topology_csv).ok() || !topology.Finish().ok()) {
        std::printf("synthetic dataset did not parse\n");
        return 1;
      }
      failures +=
          Report(hide ? "synthetic (idc hidden)" : "synthetic (idc named)", dataset, options);
    }
  }
  for (const auto& dir : dirs) {
    auto dataset = df::learning::ReadDatasetDir(dir);
    if (!dataset.ok()) {
      std::printf("%-28s error: %s\n", dir.c_str(), dataset.status().ToString().c_str());
      ++failures;
      continue;
    }
    failures += Report(dir, **dataset, options);
  }
  return failures == 0 ? 0 : 1;
}
