// dftrainer's gRPC service and training loop.
//
// TrainerService (df.trainer.v1.Trainer, proto/trainer.proto) parses each streamed dataset as
// it arrives (bounded: chunk size, total bytes, files) into a learning::Dataset and hands it to
// the TrainingLoop; a call never waits on training.
//
// TrainingLoop keeps the newest dataset of each scheduler and one training thread. Submit
// replaces the scheduler's dataset and marks the loop dirty; the thread wakes, merges every
// scheduler's dataset and runs TrainAndPublish. Datasets arriving during a run are trained on
// in the next one (coalesced: a burst of submits costs one more run, not one each).
//
// Thread-safety: Submit, Stop and the accessors may be called from any thread. Metrics must
// outlive both.
#pragma once

#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/auth.h"
#include "learning/dataset.h"
#include "trainer.grpc.pb.h"
#include "trainer/trainer.h"

namespace df::trainer {

struct TrainerMetrics {
  explicit TrainerMetrics(prometheus::Registry& registry);
  prometheus::Counter& datasets_received;   // Train calls that delivered a dataset
  prometheus::Counter& datasets_rejected;   // Train calls refused with an error status
  prometheus::Counter& datasets_unchanged;  // datasets identical to the sender's last one
  prometheus::Counter& dataset_bytes;       // CSV bytes received
  prometheus::Counter& dataset_rows;        // rows accepted
  prometheus::Counter& dataset_bad_rows;    // rows skipped
  prometheus::Counter& training_runs;
  prometheus::Counter& training_failures;
  prometheus::Counter& versions_published;
  prometheus::Gauge& latest_version;  // latest version this trainer published (or found)
  prometheus::Gauge& mape_gnn;        // held-out MAPE of the last run, per model kind
  prometheus::Gauge& mape_feature_mlp;
  prometheus::Gauge& mape_history;
};

class TrainingLoop {
 public:
  TrainingLoop(TrainOptions options, TrainerMetrics* metrics);
  ~TrainingLoop();  // Stop()
  void Start();
  // Waits for a run in progress to end, then joins the thread; idempotent.
  void Stop();
  // Replaces the scheduler's dataset and wakes the thread. False (nothing kept) when the dataset
  // comes from a new scheduler and kMaxSchedulers datasets are already held.
  // `fingerprint` identifies the dataset's content: a dataset the scheduler already sent,
  // unchanged (its uploader resends every interval), is kept without a new run.
  static constexpr size_t kMaxSchedulers = 256;
  bool Submit(const std::string& scheduler_id, std::unique_ptr<learning::Dataset> dataset,
              const std::string& fingerprint = "");
  // True when `scheduler_id`'s current dataset has this non-empty fingerprint.
  bool Unchanged(const std::string& scheduler_id, const std::string& fingerprint) const;
  uint64_t runs() const;

 private:
  void Run();

  const TrainOptions options_;
  TrainerMetrics& metrics_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::map<std::string, std::shared_ptr<const learning::Dataset>> datasets_;  // GUARDED_BY(mu_)
  std::map<std::string, std::string> fingerprints_;                           // GUARDED_BY(mu_)
  bool dirty_ = false;                                                        // GUARDED_BY(mu_)
  bool stop_ = false;                                                         // GUARDED_BY(mu_)
  uint64_t runs_ = 0;                                                         // GUARDED_BY(mu_)
  std::thread thread_;
};

struct TrainServiceLimits {
  uint64_t max_chunk_bytes = 1 << 20;
  uint64_t max_dataset_bytes = 1ull << 30;
  uint32_t max_files = 64;
  learning::DatasetLimits dataset;
};

class TrainerService final : public v1::Trainer::Service {
 public:
  // `auth` null or without token/TLS: calls are not authenticated. Borrowed.
  TrainerService(TrainServiceLimits limits, TrainingLoop* loop, TrainerMetrics* metrics,
                 const ControlAuth* auth = nullptr)
      : limits_(limits), loop_(*loop), metrics_(*metrics), auth_(auth) {}
  grpc::Status Train(grpc::ServerContext* context, grpc::ServerReader<v1::TrainRequest>* reader,
                     v1::TrainResponse* response) override;

 private:
  grpc::Status Reject(grpc::StatusCode code, const std::string& message);

  const TrainServiceLimits limits_;
  TrainingLoop& loop_;
  TrainerMetrics& metrics_;
  const ControlAuth* auth_;
};

}  // namespace df::trainer
