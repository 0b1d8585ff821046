#include "scheduler/ml_evaluator.h"

#include <algorithm>
#include <cmath>

#include "common/log.h"
#include "inference/kserve_client.h"
#include "learning/features.h"
#include "learning/host_graph.h"
#include "scheduler/dataset_writer.h"
#include "scheduler/host_groups.h"
#include "scheduler/network_topology.h"

namespace df::scheduler {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using SteadyTime = std::chrono::steady_clock::time_point;

// A prediction outside this range is not a bandwidth (1 B/s .. 100 GB/s): ignored.
constexpr double kMinPlausible = 1.0;
constexpr double kMaxPlausible = 1e11;

prometheus::Counter& Decisions(prometheus::Registry& r, const std::string& result) {
  return BuildCounter()
      .Name("df_scheduler_ml_decisions_total")
      .Help(
          "ml evaluator decisions, by what ranked the parents: model, cold (default: "
          "predictions queued) or unavailable (default: the inference service failed)")
      .Register(r)
      .Add({{"result", result}});
}

prometheus::Counter& InferRequests(prometheus::Registry& r, const std::string& result) {
  return BuildCounter()
      .Name("df_scheduler_ml_infer_requests_total")
      .Help("ModelInfer calls of the ml evaluator, by result")
      .Register(r)
      .Add({{"result", result}});
}

// The host as the record of a row at `unix_ms` (the live dataset keeps each host's latest).
df::learning::HostRecord ToRecord(const DatasetHost& h, int64_t unix_ms) {
  df::learning::HostRecord r = h;
  r.unix_ms = unix_ms;
  return r;
}

}  // namespace

// The live graph and the feature builder over it (the builder borrows the graph).
struct MlEvaluator::Graph {
  explicit Graph(df::learning::HostGraph g) : graph(std::move(g)), builder(graph) {}
  df::learning::HostGraph graph;
  df::learning::FeatureBuilder builder;
};

MlEvaluator::MlEvaluator(MlEvaluatorOptions options, prometheus::Registry* registry)
    : options_(std::move(options)),
      own_registry_(registry ? nullptr : std::make_unique<prometheus::Registry>()),
      registry_(registry ? *registry : *own_registry_),
      client_(std::make_unique<df::inference::KServeClient>(options_.inference)),
      decisions_model_(Decisions(registry_, "model")),
      decisions_cold_(Decisions(registry_, "cold")),
      decisions_unavailable_(Decisions(registry_, "unavailable")),
      predictions_(BuildCounter()
                       .Name("df_scheduler_ml_predictions_total")
                       .Help("(child host, parent host) pairs predicted by the inference service")
                       .Register(registry_)
                       .Add({})),
      infer_ok_(InferRequests(registry_, "ok")),
      infer_error_(InferRequests(registry_, "error")),
      infer_seconds_(
          BuildHistogram()
              .Name("df_scheduler_ml_infer_seconds")
              .Help("ModelInfer round trip of one batch, seconds")
              .Register(registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{250e-6, 500e-6, 1e-3, 2e-3, 5e-3,
                                                               10e-3, 20e-3, 50e-3})),
      model_available_(BuildGauge()
                           .Name("df_scheduler_ml_model_available")
                           .Help("1 while the last ModelInfer succeeded (or none was tried)")
                           .Register(registry_)
                           .Add({})),
      online_mape_(BuildGauge()
                       .Name("df_scheduler_ml_online_mape")
                       .Help("mean |predicted - realised| / realised over the last 1000 piece "
                             "transfers whose pair had a prediction (-1: none yet)")
                       .Register(registry_)
                       .Add({})),
      error_ratio_(BuildHistogram()
                       .Name("df_scheduler_ml_prediction_error_ratio")
                       .Help("|predicted - realised| / realised of each piece transfer whose "
                             "pair had a prediction")
                       .Register(registry_)
                       .Add({}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.2, 0.3, 0.5,
                                                                        0.75, 1, 2, 5, 10})),
      cached_pairs_(BuildGauge()
                        .Name("df_scheduler_ml_cached_pairs")
                        .Help("pair predictions held in the cache")
                        .Register(registry_)
                        .Add({})),
      queue_dropped_(BuildCounter()
                         .Name("df_scheduler_ml_queue_dropped_total")
                         .Help("pairs not queued for prediction because the queue was full")
                         .Register(registry_)
                         .Add({})),
      inferred_groups_gauge_(BuildGauge()
                                 .Name("df_scheduler_ml_inferred_groups")
                                 .Help("host groups inferred from the predicted pair bandwidths "
                                       "(0: no structure found, or infer_groups off)")
                                 .Register(registry_)
                                 .Add({})) {
  model_available_.Set(1);
  online_mape_.Set(-1);
  thread_ = std::thread([this] { Run(); });
  DF_LOG_INFO("ml evaluator: model {} at {} (deadline {} ms, predictions kept {} s)",
              options_.model, options_.inference, options_.deadline.count(),
              options_.prediction_ttl.count() / 1000);
}

MlEvaluator::~MlEvaluator() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

MlEvaluator::PairKey MlEvaluator::Key(const std::string& child, const std::string& parent) {
  PairKey key;
  key.reserve(child.size() + parent.size() + 1);
  key.append(child).push_back('\n');
  key.append(parent);
  return key;
}

std::pair<std::string, std::string> MlEvaluator::SplitKey(const PairKey& key) {
  const size_t cut = key.find('\n');
  return {key.substr(0, cut), key.substr(cut + 1)};
}

void MlEvaluator::NoteHost(const std::string& id, const std::string& idc,
                           const std::string& location, bool seed, uint64_t upload,
                           uint64_t download) const {
  if (id.empty()) return;
  auto [it, added] = hosts_.try_emplace(id);
  df::learning::HostRecord& r = it->second;
  // A host is usually a child before it is a parent: what a later sighting knows (its uplink
  // as a parent, a capacity learned since) updates the record; zeros and blanks know nothing.
  const df::learning::HostRecord before = r;
  r.id = id;
  if (!idc.empty()) r.idc = idc;
  if (!location.empty()) r.location = location;
  r.seed = r.seed || seed;
  if (upload > 0) r.learned_upload_bytes_per_sec = upload;
  if (download > 0) r.learned_download_bytes_per_sec = download;
  if (added || r.idc != before.idc || r.location != before.location || r.seed != before.seed ||
      r.learned_upload_bytes_per_sec != before.learned_upload_bytes_per_sec ||
      r.learned_download_bytes_per_sec != before.learned_download_bytes_per_sec) {
    hosts_changed_ = true;
  }
}

std::vector<ScoredParent> MlEvaluator::Evaluate(const ChildInfo& child,
                                                const std::vector<ParentInfo>& candidates,
                                                const TaskView& task) const {
  std::vector<ScoredParent> ranked = default_.Evaluate(child, candidates, task);
  if (ranked.empty()) return ranked;
  const SteadyTime now = std::chrono::steady_clock::now();
  std::vector<double> predicted(ranked.size(), 0.0);
  size_t hits = 0;
  bool available = true;
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    NoteHost(child.host_id, child.idc, child.location, false, 0, child.download_capacity);
    for (size_t i = 0; i < ranked.size(); ++i) {
      const ParentInfo& p = candidates[ranked[i].index];
      if (p.host_id.empty() || p.host_id == child.host_id) continue;
      NoteHost(p.host_id, p.idc, p.location, p.is_seed, p.upload_capacity, 0);
      PairKey key = Key(child.host_id, p.host_id);
      auto it = cache_.find(key);
      bool refresh = true;
      if (it != cache_.end()) {
        const auto age = now - it->second.at;
        if (age < options_.prediction_ttl) {
          predicted[i] = it->second.bytes_per_sec;
          ++hits;
        }
        refresh = age >= options_.prediction_ttl / 2;  // refreshed ahead of expiry
      }
      if (!refresh || queued_.contains(key)) continue;
      if (queue_.size() >= options_.max_queued_pairs) {
        if (available_) queue_dropped_.Increment();
        continue;
      }
      queue_.emplace_back(child.host_id, p.host_id);
      queued_.insert(std::move(key));
      queued = true;
    }
    available = available_;
  }
  if (queued) wake_.notify_one();
  if (hits == 0) {
    (available ? decisions_cold_ : decisions_unavailable_).Increment();
    return ranked;
  }
  decisions_model_.Increment();
  const double best = *std::max_element(predicted.begin(), predicted.end());
  double term_sum = 0;
  for (double p : predicted) term_sum += p / best;
  const double mean_term = term_sum / static_cast<double>(hits);  // unpredicted ones add 0
  for (size_t i = 0; i < ranked.size(); ++i) {
    const double term = predicted[i] > 0 ? predicted[i] / best : mean_term;
    ranked[i].score = kModelWeight * term + (1 - kModelWeight) * ranked[i].score;
    ranked[i].predicted_bytes_per_sec = predicted[i];
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const ScoredParent& a, const ScoredParent& b) { return a.score > b.score; });
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string list;
    for (const auto& r : ranked) {
      list += fmt::format("{}{}:{:.1f}MB/s:{:.2f}", list.empty() ? "" : ",",
                          candidates[r.index].host_id, r.predicted_bytes_per_sec / 1e6, r.score);
    }
    DF_LOG_DEBUG("ml ranking child_host={} candidates={}", child.host_id, list);
  }
  return ranked;
}

void MlEvaluator::ObserveTransfer(const DownloadRow& row) {
  if (row.cost_ns == 0 || row.piece_length_bytes == 0) return;
  const auto child = ToRecord(row.child, row.unix_ms);
  const auto parent = ToRecord(row.parent, row.unix_ms);
  {
    std::lock_guard lock(live_mu_);
    if (!live_.AddDownload(child, parent, row.piece_length_bytes, row.cost_ns, row.unix_ms) &&
        live_.stats().dropped_rows > 0) {
      // The row budget is spent (a long-lived scheduler): start a fresh window.
      live_ = df::learning::Dataset();
      live_.AddDownload(child, parent, row.piece_length_bytes, row.cost_ns, row.unix_ms);
    }
    live_dirty_ = true;
  }
  const double realised =
      static_cast<double>(row.piece_length_bytes) * 1e9 / static_cast<double>(row.cost_ns);
  std::lock_guard lock(mu_);
  hosts_[child.id] = child;
  hosts_[parent.id] = parent;
  auto it = cache_.find(Key(child.id, parent.id));
  // A prediction counts for the transfers made while it was the one in use (and a little after:
  // the piece started before the report came).
  if (it == cache_.end() ||
      std::chrono::steady_clock::now() - it->second.at > 2 * options_.prediction_ttl) {
    return;
  }
  const double ape = std::abs(it->second.bytes_per_sec - realised) / realised;
  error_ratio_.Observe(ape);
  mape_window_.push_back(ape);
  mape_sum_ += ape;
  if (mape_window_.size() > kMapeWindow) {
    mape_sum_ -= mape_window_.front();
    mape_window_.pop_front();
  }
  online_mape_.Set(mape_sum_ / static_cast<double>(mape_window_.size()));
}

void MlEvaluator::SetTopology(const NetworkTopology* topology) {
  std::lock_guard lock(live_mu_);
  topology_ = topology;
  live_dirty_ = true;
}

double MlEvaluator::CachedPrediction(const std::string& child_host,
                                     const std::string& parent_host) const {
  std::lock_guard lock(mu_);
  auto it = cache_.find(Key(child_host, parent_host));
  if (it == cache_.end() ||
      std::chrono::steady_clock::now() - it->second.at >= options_.prediction_ttl) {
    return 0;
  }
  return it->second.bytes_per_sec;
}

double MlEvaluator::OnlineMape() const {
  std::lock_guard lock(mu_);
  return mape_window_.empty() ? -1 : mape_sum_ / static_cast<double>(mape_window_.size());
}

void MlEvaluator::Run() {
  while (true) {
    std::vector<std::pair<std::string, std::string>> batch;
    {
      std::unique_lock lock(mu_);
      auto has_work = [&] { return stop_ || !queue_.empty(); };
      if (groups_dirty_) {
        wake_.wait_until(lock, groups_due_, has_work);
      } else {
        wake_.wait(lock, has_work);
      }
      if (stop_) return;
      if (queue_.empty()) {  // the grouping is due and nothing else is
        lock.unlock();
        InferGroups();
        continue;
      }
      // After a failure, nothing is sent before retry_after_; what queues meanwhile waits.
      if (wake_.wait_until(lock, retry_after_, [&] { return stop_; })) return;
      while (!queue_.empty() && batch.size() < options_.max_batch) {
        queued_.erase(Key(queue_.front().first, queue_.front().second));
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    MaybeRebuildGraph(std::chrono::steady_clock::now());
    const CallResult result = PredictBatch(batch);
    if (AfterBatch(result, std::move(batch))) InferGroups();
  }
}

std::chrono::milliseconds MlEvaluator::RetryAfter(CallResult result) const {
  if (result == CallResult::kLate) return std::min(options_.retry_interval, 5 * options_.deadline);
  return options_.retry_interval;
}

bool MlEvaluator::AfterBatch(CallResult result,
                             std::vector<std::pair<std::string, std::string>> batch) {
  const bool ok = result == CallResult::kOk;
  std::lock_guard lock(mu_);
  if (!ok) {
    retry_after_ = std::chrono::steady_clock::now() + RetryAfter(result);
    // The pairs wait for the service to come back (a model loaded, a restart), so their
    // predictions are in before the next decisions that need them.
    for (auto& pair : batch) {
      if (queue_.size() >= options_.max_queued_pairs) break;
      if (queued_.insert(Key(pair.first, pair.second)).second) {
        queue_.push_back(std::move(pair));
      }
    }
  }
  available_ = ok;
  model_available_.Set(ok ? 1 : 0);
  return groups_dirty_ && std::chrono::steady_clock::now() >= groups_due_;
}

void MlEvaluator::InferGroups() {
  std::vector<PairBandwidth> pairs;
  std::shared_ptr<const InferredGroups> current;
  {
    std::lock_guard lock(mu_);
    groups_dirty_ = false;
    groups_due_ = std::chrono::steady_clock::now() + options_.group_refresh;
    pairs.reserve(latest_.size());
    for (const auto& [key, bytes_per_sec] : latest_) {
      auto [child, parent] = SplitKey(key);
      pairs.push_back({std::move(child), std::move(parent), bytes_per_sec});
    }
    current = groups_;
  }
  std::string why;
  auto group_of = InferHostGroups(pairs, {}, &why);
  if (group_of.empty() && current && !current->group_of.empty()) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    if (!groups_missing_since_) {
      groups_missing_since_ = now;
      DF_LOG_INFO(
          "ml evaluator: no host groups in {} predicted pairs ({}); keeping version {} unless "
          "none are found for {} s",
          pairs.size(), why, current->version, options_.group_hold.count() / 1000);
    }
    if (now - *groups_missing_since_ < options_.group_hold) {
      groups_dirty_ = true;  // looked at again, even without new predictions
      return;
    }
  } else {
    std::lock_guard lock(mu_);
    groups_missing_since_.reset();
  }
  if (current ? current->group_of == group_of : group_of.empty()) return;
  auto next = std::make_shared<InferredGroups>();
  next->version = current ? current->version + 1 : 1;
  next->group_of = std::move(group_of);
  std::map<std::string, size_t> sizes;  // group -> hosts, ordered for the log line
  for (const auto& [host, group] : next->group_of) ++sizes[group];
  std::string list;
  for (const auto& [group, n] : sizes)
    list += fmt::format("{}{}:{}", list.empty() ? "" : ",", group, n);
  DF_LOG_INFO("ml evaluator: {} host groups inferred from {} predicted pairs (version {}): {}",
              sizes.size(), pairs.size(), next->version,
              list.empty() ? fmt::format("none ({})", why) : list);
  inferred_groups_gauge_.Set(static_cast<double>(sizes.size()));
  std::lock_guard lock(mu_);
  groups_missing_since_.reset();
  groups_ = std::move(next);
}

std::shared_ptr<const InferredGroups> MlEvaluator::inferred_groups() const {
  std::lock_guard lock(mu_);
  return groups_;
}

void MlEvaluator::MaybeRebuildGraph(SteadyTime now) {
  if (graph_ && now - graph_built_ < options_.graph_refresh) return;
  bool hosts_changed = false;
  {
    std::lock_guard lock(mu_);
    hosts_changed = hosts_changed_;
  }
  df::learning::Dataset dataset;
  const NetworkTopology* topology = nullptr;
  {
    std::lock_guard lock(live_mu_);
    if (graph_ && !live_dirty_ && !topology_ && !hosts_changed) return;
    dataset = live_;
    live_dirty_ = false;
    topology = topology_;
  }
  std::unordered_map<std::string, df::learning::HostRecord> hosts;
  {
    std::lock_guard lock(mu_);
    hosts = hosts_;
    hosts_changed_ = false;
  }
  auto record_of = [&](const std::string& id) {
    auto it = hosts.find(id);
    if (it != hosts.end()) return it->second;
    df::learning::HostRecord r;
    r.id = id;
    return r;
  };
  if (topology) {
    // Probes are edges of the graph; a probe is not a label (features.h).
    for (const ProbeEdge& e : topology->Edges()) {
      if (e.average_rtt_ns <= 0) continue;
      dataset.AddProbe(record_of(e.src_host_id), record_of(e.dst_host_id),
                       static_cast<uint64_t>(e.average_rtt_ns), e.samples.size(),
                       e.updated_unix_ms);
    }
  }
  auto graph = std::make_unique<Graph>(df::learning::HostGraph::Build(dataset));
  for (const auto& [id, record] : hosts) graph->graph.AddHost(record);
  graph_ = std::move(graph);
  graph_built_ = now;
}

MlEvaluator::CallResult MlEvaluator::PredictBatch(
    const std::vector<std::pair<std::string, std::string>>& pairs) {
  if (pairs.empty()) return CallResult::kOk;
  if (!graph_) MaybeRebuildGraph(std::chrono::steady_clock::now());
  const int64_t n = static_cast<int64_t>(pairs.size());
  df::learning::InputBatch inputs;
  inputs.Reserve(n);
  {
    std::lock_guard lock(mu_);  // hosts_ for hosts the graph has not seen yet
    auto index_of = [&](const std::string& id) {
      if (auto found = graph_->graph.Find(id)) return *found;
      auto it = hosts_.find(id);
      df::learning::HostRecord r;
      r.id = id;
      return graph_->graph.AddHost(it != hosts_.end() ? it->second : r);
    };
    for (const auto& [child, parent] : pairs) {
      const auto c = index_of(child);
      const auto p = index_of(parent);
      graph_->builder.Append(c, p, &inputs);
    }
  }
  std::vector<df::inference::Fp32Tensor> tensors(df::learning::kNumInputs);
  for (int i = 0; i < df::learning::kNumInputs; ++i) {
    tensors[i].name = std::string(df::learning::kInputNames[i]);
    tensors[i].shape = {n};
    for (int64_t d : df::learning::InputShape(i)) tensors[i].shape.push_back(d);
    tensors[i].data = std::move(inputs.data[i]);
    tensors[i].send_as_fp16 = df::learning::kInputDatatype == "FP16";
  }
  const auto start = std::chrono::steady_clock::now();
  std::string served_version;
  auto answer =
      client_->Infer(options_.model, tensors, std::chrono::system_clock::now() + options_.deadline,
                     "", &served_version);
  const auto done = std::chrono::steady_clock::now();
  infer_seconds_.Observe(std::chrono::duration<double>(done - start).count());
  const df::inference::Fp32Tensor* out = nullptr;
  if (answer.ok()) {
    for (const auto& t : answer.value()) {
      if (t.name == df::learning::kOutputName) out = &t;
    }
    if (!out && !answer.value().empty()) out = &answer.value().front();
  }
  if (!out || static_cast<int64_t>(out->data.size()) != n) {
    infer_error_.Increment();
    const CallResult result =
        !answer.ok() && answer.status().code() == df::StatusCode::kDeadlineExceeded
            ? CallResult::kLate
            : CallResult::kFailed;
    const bool was_available = [&] {
      std::lock_guard lock(mu_);
      return available_;
    }();
    if (was_available) {  // once per outage, not per batch
      DF_LOG_WARN(
          "ml evaluator: no predictions from {} (model {}): {}; scheduling with the "
          "default evaluator, retrying every {} ms",
          options_.inference, options_.model,
          answer.ok() ? std::string("answer without one value per pair")
                      : answer.status().ToString(),
          RetryAfter(result).count());
    }
    return result;
  }
  infer_ok_.Increment();
  std::lock_guard lock(mu_);
  if (!available_) DF_LOG_INFO("ml evaluator: predictions from {} again", options_.inference);
  if (served_version != served_version_) {
    // A new model: the pairs it has not predicted yet are asked again, so the groups follow
    // the model that ranks the parents rather than a mix of versions.
    size_t requeued = 0;
    if (options_.infer_groups && !served_version_.empty()) {
      for (const auto& [key, bytes_per_sec] : latest_) {
        if (queue_.size() >= options_.max_queued_pairs) break;
        if (!queued_.insert(key).second) continue;
        queue_.push_back(SplitKey(key));
        ++requeued;
      }
    }
    DF_LOG_INFO("ml evaluator: model {} version {} answers; {} known pairs predicted again",
                options_.model, served_version.empty() ? "?" : served_version, requeued);
    served_version_ = served_version;
  }
  for (int64_t i = 0; i < n; ++i) {
    const double v = out->data[i];
    if (!std::isfinite(v) || v < kMinPlausible || v > kMaxPlausible) continue;
    PairKey key = Key(pairs[i].first, pairs[i].second);
    if (options_.infer_groups) {
      if (latest_.size() >= options_.max_cached_pairs) latest_.clear();  // start over
      latest_[key] = v;
      groups_dirty_ = true;
    }
    cache_[std::move(key)] = Prediction{v, done};
    predictions_.Increment();
  }
  if (cache_.size() > options_.max_cached_pairs) {
    std::erase_if(cache_,
                  [&](const auto& kv) { return done - kv.second.at >= options_.prediction_ttl; });
    if (cache_.size() > options_.max_cached_pairs) cache_.clear();  // still full: start over
  }
  cached_pairs_.Set(static_cast<double>(cache_.size()));
  return CallResult::kOk;
}

}  // namespace df::scheduler
