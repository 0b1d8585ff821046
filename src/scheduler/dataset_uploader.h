// DatasetUploader: streams the scheduler's records dataset to dftrainer (issue 17;
// docs/learning.md, "From the scheduler to the trainer").
//
// Every `interval` it flushes the DatasetWriter, then sends every dataset file of `dataset_dir`
// (download*.csv, networktopology*.csv: the live files and the rotated ones) over one
// client-streaming Trainer.Train call (proto/trainer.proto): a TrainHeader, then per file a
// DatasetFile and its bytes in chunks of at most 1 MiB. A file is sent as it was when the round
// began and only up to its last complete line, so a row the writer is appending is never cut
// (it goes with the next round). The trainer keeps the newest dataset of each scheduler, so
// each round sends the whole directory (bounded by the writer's rotation).
//
// Never on the scheduling path: its own thread, its own gRPC channel, a deadline per round. A
// trainer that is down, slow or refuses the dataset costs a log line (once per outage) and a
// counted failure; the next round tries again.
//
// Thread-safe. The DatasetWriter (may be null), the auth and the registry must outlive it.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/registry.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/auth.h"
#include "common/status.h"
#include "scheduler/dataset_writer.h"

namespace df::scheduler {

class DatasetUploader {
 public:
  struct Options {
    std::string target;       // dftrainer HOST:PORT
    std::string dataset_dir;  // where the DatasetWriter writes
    std::chrono::milliseconds interval{std::chrono::minutes(10)};
    std::chrono::milliseconds deadline{std::chrono::minutes(2)};  // of one round's call
    std::string scheduler_id;  // the trainer replaces this scheduler's previous dataset
    std::string hostname;
    std::string ip;
  };
  // What one round sent and what the trainer answered.
  struct Round {
    uint32_t files = 0;
    uint64_t bytes = 0;
    uint64_t download_rows = 0;  // accepted by the trainer
    uint64_t topology_rows = 0;
    uint64_t bad_rows = 0;
    bool queued = false;
  };

  DatasetUploader(Options options, DatasetWriter* writer, const ControlAuth* auth,
                  prometheus::Registry& registry);
  ~DatasetUploader();  // Stop()

  // Starts the thread: a round every interval (the first after one interval). Idempotent.
  void Start();
  // Wakes the thread and joins it; a round in flight is cancelled. Idempotent.
  void Stop();

  // One round now, on the caller's thread. Unavailable / DeadlineExceeded / the trainer's
  // status when the call fails; NotFound when the directory cannot be read. An empty directory
  // is not an error: nothing is sent.
  Result<Round> UploadOnce();

 private:
  void Run();

  const Options options_;
  DatasetWriter* const writer_;
  const ControlAuth* const auth_;
  prometheus::Counter& rounds_ok_;
  prometheus::Counter& rounds_failed_;
  prometheus::Counter& bytes_sent_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;             // GUARDED_BY(mu_)
  bool failing_ = false;          // GUARDED_BY(mu_): the last round failed (log once)
  void* current_call_ = nullptr;  // GUARDED_BY(mu_): grpc::ClientContext of a round, to cancel
  std::thread thread_;
};

}  // namespace df::scheduler
