// The "ml" evaluator: parents ranked by the bandwidth a graph neural network predicts between
// the child's host and each candidate's host (docs/learning.md, "The ml evaluator").
//
// The model is served by dfinference, or by a Triton server with the same repository, over
// the KServe v2 gRPC protocol (src/inference/kserve_client.h). Its inputs are built with the
// feature contract the trainer used (src/learning/features.h) from what this scheduler saw
// live: the piece records of its peers, the probe graph, and the hosts' announced and learned
// rates.
//
// Scheduling never waits on the model. Evaluate runs under the Scheduler's mutex and does no
// I/O: it reads predictions from a cache (per (child host, parent host) pair, `prediction_ttl`)
// and queues the pairs it missed. A predictor thread takes the queue in batches, builds their
// inputs, and sends one ModelInfer per batch under `deadline`; the answers fill the cache for
// the next decisions of any task on the same hosts.
//
// Score of a good candidate (the default evaluator's bad-parent filter runs first):
//   kModelWeight * predicted / best predicted among the candidates
// + (1 - kModelWeight) * default score          (free upload, pieces, success rate, ...)
// A candidate without a prediction yet gets the mean model term of those that have one. A
// decision where no candidate has a prediction is the default evaluator's, counted as a
// fallback: "cold" (queued, the answer is on its way) or "unavailable" (the service failed or
// has no model; the predictor keeps the pairs and retries every `retry_interval`, so they are
// predicted as soon as a model is served, before the next decisions ask). A call that only
// missed its deadline (the service is there but busy: a loaded machine, a model loading) is
// retried after 5x the deadline instead, at most `retry_interval`: no decision waits for it,
// and a 2 s pause per slow call left a busy service's pairs unpredicted for tens of seconds.
//
// Learning from the outcome: every piece record whose pair had a prediction adds the absolute
// percentage error |predicted - realised| / realised to the online MAPE (metrics below).
//
// Metrics (prefix df_scheduler_ml_):
//   decisions_total{result="model|cold|unavailable"}  decisions by what ranked them
//   predictions_total                                  pairs predicted by the service
//   infer_requests_total{result="ok|error"}, infer_seconds (histogram)
//   model_available        1 while the last ModelInfer succeeded
//   online_mape            mean APE of the last kMapeWindow realised transfers that had one
//   prediction_error_ratio (histogram of those APEs)
//   cached_pairs, queue_dropped_total
//   inferred_groups                                    host groups inferred (0: none)
//
// Host groups (host_groups.h): the latest prediction of every pair, whatever its age, is kept
// (up to max_cached_pairs); after new predictions, at most every `group_refresh`, the hosts are
// grouped by them (racks that nobody announced: fast pairs inside, slow across) and a new
// InferredGroups version is published when the grouping changed. A grouping that finds no
// structure withdraws the published groups only after it has found none for `group_hold` (a
// noisy prediction or a new model must not flip the scheduler's view every second; another
// grouping replaces them at once). When a new model version answers, every known pair is
// predicted again (up to max_queued_pairs), so the groups follow the model that ranks the
// parents. The Scheduler lets a group
// stand in for the idc of hosts that announce none (`infer_groups`, default true).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "learning/dataset.h"
#include "scheduler/default_evaluator.h"

namespace df::inference {
class KServeClient;
}

namespace df::scheduler {

class NetworkTopology;

struct MlEvaluatorOptions {
  std::string inference;  // HOST:PORT of dfinference or Triton (plaintext gRPC)
  std::string model = "bandwidth";
  std::chrono::milliseconds deadline{20};            // per ModelInfer
  std::chrono::milliseconds prediction_ttl{30'000};  // a cached prediction is used this long
  std::chrono::milliseconds retry_interval{2'000};   // after a failed call, no call before this
  std::chrono::milliseconds graph_refresh{1'000};    // the live graph is rebuilt at most this often
  size_t max_batch = 64;                             // pairs per ModelInfer
  size_t max_queued_pairs = 4'096;                   // pairs waiting for a prediction
  size_t max_cached_pairs = 200'000;
  bool infer_groups = true;                        // group hosts by their predicted pairs
  std::chrono::milliseconds group_refresh{1'000};  // at most one grouping this often
  std::chrono::milliseconds group_hold{30'000};    // groups outlive "no structure" this long
};

class MlEvaluator : public Evaluator {
 public:
  static constexpr std::string_view kName = "ml";
  static constexpr double kModelWeight = 0.6;
  static constexpr size_t kMapeWindow = 1'000;

  // `registry` receives the metrics above; null: a private registry (tests). Starts the
  // predictor thread. Never fails: an unreachable service only means fallbacks.
  MlEvaluator(MlEvaluatorOptions options, prometheus::Registry* registry);
  ~MlEvaluator() override;  // stops and joins the predictor thread
  MlEvaluator(const MlEvaluator&) = delete;
  MlEvaluator& operator=(const MlEvaluator&) = delete;

  std::string_view name() const override { return kName; }
  std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                     const std::vector<ParentInfo>& candidates,
                                     const TaskView& task) const override;
  void ObserveTransfer(const DownloadRow& row) override;
  void SetTopology(const NetworkTopology* topology) override;
  std::shared_ptr<const InferredGroups> inferred_groups() const override;

  // The cached prediction for (child host, parent host), bytes/s; 0 when none is fresh.
  double CachedPrediction(const std::string& child_host, const std::string& parent_host) const;
  // Mean APE over the window; -1 when no realised transfer had a prediction yet.
  double OnlineMape() const;

 private:
  struct Prediction {
    double bytes_per_sec = 0;
    std::chrono::steady_clock::time_point at;
  };
  using PairKey = std::string;  // child host id + '\n' + parent host id
  static PairKey Key(const std::string& child, const std::string& parent);
  static std::pair<std::string, std::string> SplitKey(const PairKey& key);  // (child, parent)

  void Run();
  // Rebuilds the live graph when something changed and graph_refresh has passed.
  void MaybeRebuildGraph(std::chrono::steady_clock::time_point now);
  enum class CallResult { kOk, kLate, kFailed };  // kLate: DeadlineExceeded
  // Predicts `pairs` in one ModelInfer.
  CallResult PredictBatch(const std::vector<std::pair<std::string, std::string>>& pairs);
  // Records a batch's outcome (a failed one is queued again); true when the grouping is due.
  bool AfterBatch(CallResult result, std::vector<std::pair<std::string, std::string>> batch);
  // The pause after a failed call: short when it was only late.
  std::chrono::milliseconds RetryAfter(CallResult result) const;
  // Groups the hosts by the latest prediction of every pair; publishes a new version when the
  // grouping changed. Predictor thread.
  void InferGroups();
  // Remembers what Evaluate learnt of a host (no overwrite of a richer record).
  void NoteHost(const std::string& id, const std::string& idc, const std::string& location,
                bool seed, uint64_t upload, uint64_t download) const;

  const MlEvaluatorOptions options_;
  std::unique_ptr<prometheus::Registry> own_registry_;
  prometheus::Registry& registry_;  // the caller's, or own_registry_
  DefaultEvaluator default_;
  std::unique_ptr<df::inference::KServeClient> client_;

  // Metrics.
  prometheus::Counter& decisions_model_;
  prometheus::Counter& decisions_cold_;
  prometheus::Counter& decisions_unavailable_;
  prometheus::Counter& predictions_;
  prometheus::Counter& infer_ok_;
  prometheus::Counter& infer_error_;
  prometheus::Histogram& infer_seconds_;
  prometheus::Gauge& model_available_;
  prometheus::Gauge& online_mape_;
  prometheus::Histogram& error_ratio_;
  prometheus::Gauge& cached_pairs_;
  prometheus::Counter& queue_dropped_;
  prometheus::Gauge& inferred_groups_gauge_;

  // Cache, queue and the host table: touched by Evaluate (under the Scheduler's mutex) and the
  // predictor thread. Leaf lock.
  mutable std::mutex mu_;
  mutable std::condition_variable wake_;
  mutable std::unordered_map<PairKey, Prediction> cache_;
  mutable std::deque<std::pair<std::string, std::string>> queue_;
  mutable std::unordered_set<PairKey> queued_;
  mutable std::unordered_map<std::string, df::learning::HostRecord> hosts_;
  mutable bool hosts_changed_ = false;  // hosts_ changed since the graph was built
  std::deque<double> mape_window_;
  double mape_sum_ = 0;
  bool available_ = true;  // the last call succeeded (or none was made yet)
  // The latest prediction of every pair, whatever its age (for the grouping), and the grouping.
  std::unordered_map<PairKey, double> latest_;
  bool groups_dirty_ = false;                           // latest_ changed since the last grouping
  std::chrono::steady_clock::time_point groups_due_{};  // no grouping before this
  std::shared_ptr<const InferredGroups> groups_;
  std::string served_version_;  // the model version that answered last ("" before any)
  // Since when the groupings have found no structure while groups_ has some; unset otherwise.
  std::optional<std::chrono::steady_clock::time_point> groups_missing_since_;
  bool stop_ = false;

  // The live dataset (piece records); leaf lock of its own, copied by the predictor thread.
  mutable std::mutex live_mu_;
  df::learning::Dataset live_;
  bool live_dirty_ = false;
  const NetworkTopology* topology_ = nullptr;  // GUARDED_BY(live_mu_)

  // Predictor thread only.
  struct Graph;
  std::unique_ptr<Graph> graph_;
  std::chrono::steady_clock::time_point graph_built_{};
  std::chrono::steady_clock::time_point retry_after_{};
  std::thread thread_;
};

}  // namespace df::scheduler
