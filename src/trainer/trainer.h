// Training, evaluation and publishing of the bandwidth model (docs/learning.md, "Model and
// training (dftrainer)").
//
// TrainAndPublish(dataset, options):
//   1. samples = every observed (child, parent) pair with its bandwidth; a deterministic split by
//      unordered pair (IsHeldOutPair, options.holdout_fraction) holds out validation pairs, whose
//      transfers are removed from the training graph: the models never see them, as a
//      scheduler's prediction for a pair it never measured;
//   2. inputs for every pair are built on the training graph (learning/features.h);
//   3. the GNN starts from the repository's latest version when it loads and has the same kind
//      and shapes (incremental training), else from scratch; the feature-MLP baseline starts from
//      scratch with the same budget (epochs, batch size, learning rate, Adam on the standardised
//      log bandwidth, MSE); the history baseline is fitted on the training graph;
//   4. all three, and the latest published version, are evaluated on the held-out pairs (MAPE,
//      MAE, RMSE of bandwidth in bytes/s);
//   5. the GNN is published as the next version when there is none yet or its MAPE is below the
//      latest version's MAPE on the same held-out pairs by more than options.min_improvement
//      (relative). metrics.json beside model.pt holds every figure.
//
// Runs on the caller's thread; sets torch's intra-op threads to options.threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "learning/dataset.h"
#include "learning/evaluation.h"

namespace df::trainer {

struct TrainOptions {
  std::string repo;  // model repository root; "" = evaluate, never publish
  std::string model_name = "bandwidth";
  int epochs = 30;
  int batch_size = 256;
  double learning_rate = 3e-3;
  double weight_decay = 0;  // Adam L2 penalty (every model)
  double holdout_fraction = 0.2;
  uint64_t split_seed = 1;
  uint64_t init_seed = 1;
  int threads = 1;
  // dftrainer's training thread runs at this nice value (0-19; 0 = unchanged): receiving
  // datasets and whatever shares the machine (dfinference, daemons) go first. Train() itself
  // (--train-once) ignores it.
  int nice = 10;
  double min_improvement = 0.0;  // relative MAPE gain a new version must show
  int max_batch_size = 1024;     // config.pbtxt
  bool warm_start = true;
  uint32_t min_pairs = 20;  // fewer observed pairs: nothing to learn from (InvalidArgument)
  // Ablation (learning_bench only, refused with a repository): these host-feature columns
  // (learning/features.h, 0..kHostFeatures-1) are zeroed for every host in every input, for
  // training and evaluation alike, so that a model cannot use them. The history baseline reads
  // the graph, not these features, and is unchanged.
  std::vector<int> blank_host_features;
};

struct TrainReport {
  uint64_t hosts = 0;
  uint64_t train_pairs = 0;
  uint64_t validation_pairs = 0;
  learning::ErrorMetrics gnn;
  learning::ErrorMetrics feature_mlp;
  learning::ErrorMetrics history;
  int64_t current_version = 0;                    // latest version before this run (0 = none)
  std::optional<learning::ErrorMetrics> current;  // its errors on the held-out pairs
  bool warm_started = false;
  int64_t published_version = 0;  // 0 = nothing published
  std::string decision;           // why it was (not) published, one line
  double seconds = 0;
  std::string MetricsJson(int64_t version) const;
};

Result<TrainReport> TrainAndPublish(const learning::Dataset& dataset, const TrainOptions& options);

}  // namespace df::trainer
