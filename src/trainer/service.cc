#include "trainer/service.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/crc32c.h"
#include "common/log.h"

namespace df::trainer {
namespace {

prometheus::Counter& Counter(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

TrainerMetrics::TrainerMetrics(prometheus::Registry& r)
    : datasets_received(
          Counter(r, "df_trainer_datasets_received_total", "Train calls that delivered a dataset")),
      datasets_rejected(Counter(r, "df_trainer_datasets_rejected_total",
                                "Train calls refused with an error status")),
      datasets_unchanged(Counter(r, "df_trainer_datasets_unchanged_total",
                                 "datasets identical to the sender's previous one (not trained "
                                 "again)")),
      dataset_bytes(Counter(r, "df_trainer_dataset_bytes_total", "CSV bytes received")),
      dataset_rows(Counter(r, "df_trainer_dataset_rows_total", "dataset rows accepted")),
      dataset_bad_rows(Counter(r, "df_trainer_dataset_bad_rows_total",
                               "dataset rows skipped as malformed or implausible")),
      training_runs(Counter(r, "df_trainer_training_runs_total", "training runs finished")),
      training_failures(Counter(r, "df_trainer_training_failures_total",
                                "training runs that failed (too little data, I/O)")),
      versions_published(
          Counter(r, "df_trainer_versions_published_total", "model versions published")),
      latest_version(prometheus::BuildGauge()
                         .Name("df_trainer_latest_version")
                         .Help("latest model version in the repository")
                         .Register(r)
                         .Add({})),
      mape_gnn(prometheus::BuildGauge()
                   .Name("df_trainer_last_mape")
                   .Help("held-out MAPE of the last training run, per model kind")
                   .Register(r)
                   .Add({{"model", "gnn"}})),
      mape_feature_mlp(prometheus::BuildGauge()
                           .Name("df_trainer_last_mape")
                           .Help("held-out MAPE of the last training run, per model kind")
                           .Register(r)
                           .Add({{"model", "feature_mlp"}})),
      mape_history(prometheus::BuildGauge()
                       .Name("df_trainer_last_mape")
                       .Help("held-out MAPE of the last training run, per model kind")
                       .Register(r)
                       .Add({{"model", "history"}})) {}

// ---------------------------------------------------------------------------------------------
// TrainingLoop

TrainingLoop::TrainingLoop(TrainOptions options, TrainerMetrics* metrics)
    : options_(std::move(options)), metrics_(*metrics) {}

TrainingLoop::~TrainingLoop() { Stop(); }

void TrainingLoop::Start() {
  thread_ = std::thread([this] { Run(); });
}

void TrainingLoop::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool TrainingLoop::Submit(const std::string& scheduler_id,
                          std::unique_ptr<learning::Dataset> dataset,
                          const std::string& fingerprint) {
  {
    std::lock_guard lock(mu_);
    if (!datasets_.contains(scheduler_id) && datasets_.size() >= kMaxSchedulers) return false;
    datasets_[scheduler_id] = std::move(dataset);
    fingerprints_[scheduler_id] = fingerprint;
    dirty_ = true;
  }
  wake_.notify_all();
  return true;
}

bool TrainingLoop::Unchanged(const std::string& scheduler_id,
                             const std::string& fingerprint) const {
  std::lock_guard lock(mu_);
  auto it = fingerprints_.find(scheduler_id);
  return !fingerprint.empty() && it != fingerprints_.end() && it->second == fingerprint;
}

uint64_t TrainingLoop::runs() const {
  std::lock_guard lock(mu_);
  return runs_;
}

void TrainingLoop::Run() {
  if (options_.nice > 0) {
    // Linux: a thread id as PRIO_PROCESS sets that thread's nice value only.
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    if (setpriority(PRIO_PROCESS, tid, options_.nice) != 0) {
      DF_LOG_WARN("training thread: cannot set nice {}: {}", options_.nice, std::strerror(errno));
    }
  }
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return stop_ || dirty_; });
    if (stop_) return;
    dirty_ = false;
    auto snapshot = datasets_;  // shared_ptrs: the datasets stay alive while we train
    lock.unlock();
    learning::Dataset merged(snapshot.begin()->second->limits());
    for (const auto& [id, dataset] : snapshot) merged.Merge(*dataset);
    auto report = TrainAndPublish(merged, options_);
    metrics_.training_runs.Increment();
    if (!report.ok()) {
      metrics_.training_failures.Increment();
      DF_LOG_WARN("training failed error={}", report.status().ToString());
    } else {
      metrics_.mape_gnn.Set(report->gnn.mape);
      metrics_.mape_feature_mlp.Set(report->feature_mlp.mape);
      metrics_.mape_history.Set(report->history.mape);
      if (report->published_version > 0) {
        metrics_.versions_published.Increment();
        metrics_.latest_version.Set(static_cast<double>(report->published_version));
      }
      DF_LOG_INFO(
          "training run done schedulers={} pairs={}+{} mape_gnn={:.4f} mape_feature_mlp={:.4f} "
          "mape_history={:.4f} published={} decision=\"{}\" seconds={:.1f}",
          snapshot.size(), report->train_pairs, report->validation_pairs, report->gnn.mape,
          report->feature_mlp.mape, report->history.mape, report->published_version,
          report->decision, report->seconds);
    }
    lock.lock();
    ++runs_;
  }
}

// ---------------------------------------------------------------------------------------------
// TrainerService

grpc::Status TrainerService::Reject(grpc::StatusCode code, const std::string& message) {
  metrics_.datasets_rejected.Increment();
  DF_LOG_WARN("train stream rejected error={}", message);
  return grpc::Status(code, message);
}

grpc::Status TrainerService::Train(grpc::ServerContext* context,
                                   grpc::ServerReader<v1::TrainRequest>* reader,
                                   v1::TrainResponse* response) {
  if (auth_) {
    if (grpc::Status denied = auth_->Check(*context); !denied.ok()) {
      return Reject(denied.error_code(), denied.error_message());
    }
  }
  v1::TrainRequest request;
  if (!reader->Read(&request)) return Reject(grpc::StatusCode::INVALID_ARGUMENT, "empty stream");
  if (request.request_case() != v1::TrainRequest::kHeader ||
      request.header().scheduler_id().empty() || request.header().scheduler_id().size() > 256) {
    return Reject(grpc::StatusCode::INVALID_ARGUMENT,
                  "a stream starts with a header naming the scheduler");
  }
  const std::string scheduler_id = request.header().scheduler_id();
  auto dataset = std::make_unique<learning::Dataset>(limits_.dataset);
  std::unique_ptr<learning::DatasetFileReader> file;
  uint64_t bytes = 0;
  uint32_t files = 0;
  uint32_t crc = 0;  // over every file kind and chunk: the dataset's fingerprint
  auto finish_file = [&]() -> Status {
    if (!file) return Status::Ok();
    Status s = file->Finish();
    file.reset();
    return s;
  };
  while (reader->Read(&request)) {
    switch (request.request_case()) {
      case v1::TrainRequest::kFile: {
        if (Status s = finish_file(); !s.ok()) {
          return Reject(grpc::StatusCode::INVALID_ARGUMENT, s.message());
        }
        if (++files > limits_.max_files) {
          return Reject(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many files in one dataset");
        }
        const auto kind = request.file().kind();
        crc = Crc32cExtend(crc, &kind, sizeof kind);
        if (kind != v1::DATASET_FILE_KIND_DOWNLOAD &&
            kind != v1::DATASET_FILE_KIND_NETWORK_TOPOLOGY) {
          return Reject(grpc::StatusCode::INVALID_ARGUMENT, "unknown dataset file kind");
        }
        file = std::make_unique<learning::DatasetFileReader>(
            kind == v1::DATASET_FILE_KIND_DOWNLOAD ? learning::FileKind::kDownload
                                                   : learning::FileKind::kNetworkTopology,
            dataset.get());
        break;
      }
      case v1::TrainRequest::kChunk: {
        if (!file) return Reject(grpc::StatusCode::INVALID_ARGUMENT, "a chunk before any file");
        const std::string& chunk = request.chunk();
        if (chunk.size() > limits_.max_chunk_bytes) {
          return Reject(grpc::StatusCode::RESOURCE_EXHAUSTED, "chunk over the size limit");
        }
        bytes += chunk.size();
        crc = Crc32cExtend(crc, chunk.data(), chunk.size());
        metrics_.dataset_bytes.Increment(static_cast<double>(chunk.size()));
        if (bytes > limits_.max_dataset_bytes) {
          return Reject(grpc::StatusCode::RESOURCE_EXHAUSTED, "dataset over the size limit");
        }
        if (Status s = file->Feed(chunk); !s.ok()) {
          return Reject(grpc::StatusCode::INVALID_ARGUMENT, s.message());
        }
        break;
      }
      default:
        return Reject(grpc::StatusCode::INVALID_ARGUMENT, "a second header or an empty message");
    }
  }
  if (Status s = finish_file(); !s.ok()) {
    return Reject(grpc::StatusCode::INVALID_ARGUMENT, s.message());
  }
  const learning::DatasetStats stats = dataset->stats();
  response->set_download_rows(stats.download_rows);
  response->set_topology_rows(stats.topology_rows);
  response->set_bad_rows(stats.bad_rows);
  response->set_dropped_rows(stats.dropped_rows);
  response->set_bytes(bytes);
  metrics_.datasets_received.Increment();
  metrics_.dataset_rows.Increment(static_cast<double>(stats.download_rows + stats.topology_rows));
  metrics_.dataset_bad_rows.Increment(static_cast<double>(stats.bad_rows));
  const std::string fingerprint = std::to_string(bytes) + "/" + std::to_string(crc);
  // The scheduler resends its whole dataset every interval: the same bytes again are no reason
  // to train again (a run costs CPU that the swarm on the same hosts may need).
  const bool unchanged = loop_.Unchanged(scheduler_id, fingerprint);
  const bool useful = !dataset->transfers().empty() && !unchanged;
  if (useful && !loop_.Submit(scheduler_id, std::move(dataset), fingerprint)) {
    return Reject(grpc::StatusCode::RESOURCE_EXHAUSTED, "too many schedulers");
  }
  if (unchanged) metrics_.datasets_unchanged.Increment();
  response->set_queued(useful);
  DF_LOG_INFO(
      "dataset received scheduler={} bytes={} download_rows={} topology_rows={} bad_rows={}{}",
      scheduler_id, bytes, stats.download_rows, stats.topology_rows, stats.bad_rows,
      unchanged ? " (unchanged since its last one: not trained again)" : "");
  return grpc::Status::OK;
}

}  // namespace df::trainer
