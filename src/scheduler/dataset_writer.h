// DatasetWriter: the scheduler's records as a dataset of rotating CSV files, the trainer's raw
// material (docs/measurement.md, "Records dataset", lists every column).
//
//   <dir>/download.csv          one row per piece a child got from a parent (DownloadRow)
//   <dir>/networktopology.csv   one row per probed (src, dst) edge, a snapshot of the Store's
//                               probe graph every `topology_interval`
//   <dir>/download-<unix_ms>.csv, <dir>/networktopology-<unix_ms>.csv   rotated files
//
// Every file starts with a header line. The live file is appended to (a restarted scheduler
// continues it); when a row would take it past `max_file_size_bytes` it is renamed to
// <kind>-<unix_ms>.csv and a new one started; at most `max_files` rotated files per kind are
// kept (the oldest are deleted), so the dataset is bounded by about
// 2 * (max_files + 1) * max_file_size_bytes.
//
// The Scheduler only enqueues (Add: a leaf mutex and a push; safe under the Scheduler's mutex).
// Files are written, and the Store read, on the writer's own thread, every `flush_interval`
// or sooner when the queue is half full. The queue holds at most `max_queued_rows`: beyond that
// rows are dropped and counted (a slow disk never slows scheduling or grows memory).
//
// Errors are never fatal: a failed open, write or rename (disk full, unwritable dir) drops the
// rows of that attempt, is logged once per outage and counted in `errors`; the next batch tries
// again.
//
// Thread-safe: Add, Flush and WriteTopology may be called from any thread. `store` and the
// metrics must outlive the writer.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <prometheus/counter.h>

#include "common/fd.h"
#include "common/status.h"
#include "learning/csv.h"
#include "learning/dataset.h"
#include "scheduler/store.h"

namespace df::scheduler {

// What the dataset says of one host at the moment of a record (copied under the Scheduler's
// lock): the reader's own HostRecord (rates in bytes/s, 0 = unknown; unix_ms unused here).
using DatasetHost = df::learning::HostRecord;

// One piece a child downloaded from a parent: a row of download.csv.
struct DownloadRow {
  int64_t unix_ms = 0;  // when the scheduler received the report
  std::string task_id;
  DatasetHost child;
  DatasetHost parent;
  uint64_t piece_length_bytes = 0;
  uint64_t cost_ns = 0;  // > 0 (the scheduler drops implausible reports before)
};

using df::learning::CsvField;

// The header lines (without newline) and the CSV line (with newline) of one row.
std::string_view DownloadCsvHeader();
std::string_view NetworkTopologyCsvHeader();
std::string DownloadCsvLine(const DownloadRow& row);

class DatasetWriter {
 public:
  struct Options {
    std::string dir;  // created, with its parents, when missing
    uint64_t max_file_size_bytes = 64ull << 20;
    uint32_t max_files = 10;  // rotated files kept per kind
    std::chrono::milliseconds topology_interval{60'000};
    std::chrono::milliseconds flush_interval{1'000};
    size_t max_queued_rows = 16'384;
  };
  struct Metrics {
    prometheus::Counter& download_rows;  // rows written to download*.csv
    prometheus::Counter& topology_rows;  // rows written to networktopology*.csv
    prometheus::Counter& errors;         // failed opens, writes, renames, store reads
    prometheus::Counter& dropped;        // rows dropped because the queue was full
  };

  DatasetWriter(Options options, Store* store, Metrics metrics);
  ~DatasetWriter();  // Stop()
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // Starts the writer thread. Call once.
  void Start();
  // Writes what is queued, then joins the thread; idempotent.
  void Stop();

  // Queues a row; false (and counted in `dropped`) when the queue is full.
  bool Add(DownloadRow row);

  // Writes every row queued so far, on the caller's thread (tests). Ok when they were written;
  // the file error otherwise (the rows are dropped, as on the thread).
  Status Flush();
  // Writes one probe-graph snapshot now, on the caller's thread (tests; the thread does it every
  // topology_interval). The store's error, or the file error, when it fails.
  Status WriteTopology();

 private:
  // One CSV file kind: its live file, rotated as it grows. Touched only under round_mu_.
  class RotatingFile {
   public:
    RotatingFile(const Options& options, std::string kind, std::string_view header);
    struct Written {
      Status status;    // the first error; the rows after it are dropped
      size_t rows = 0;  // rows written before it
    };
    // Appends `lines` (each a whole row with its newline), rotating whenever the next row would
    // take the live file past max_file_size_bytes. Opens (creating the dir) when needed; after a
    // failed write the live file is cut back to its last whole row and reopened next time.
    Written Write(const std::vector<std::string>& lines);
    void Close() { fd_.Reset(); }

   private:
    Status Open();
    Status Rotate();
    void Prune();  // deletes rotated files beyond max_files, oldest first

    const Options& options_;
    const std::string kind_;  // "download", "networktopology"
    const std::string header_;
    UniqueFd fd_;
    uint64_t size_ = 0;  // bytes in the live file
    int64_t last_rotation_ms_ = 0;
  };

  void Run();
  // Queue length at which the thread is woken before its flush interval.
  size_t WakeAt() const { return std::max<size_t>(1, options_.max_queued_rows / 2); }
  void CountError(const Status& status);  // requires round_mu_
  void Recovered();                       // requires round_mu_

  const Options options_;
  Store& store_;
  const Metrics metrics_;

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<DownloadRow> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false;               // GUARDED_BY(mu_)

  std::mutex round_mu_;    // one batch at a time: the thread, Flush, WriteTopology
  RotatingFile download_;  // GUARDED_BY(round_mu_)
  RotatingFile topology_;  // GUARDED_BY(round_mu_)
  bool failing_ = false;   // GUARDED_BY(round_mu_): an error was logged, none since
  std::thread thread_;
};

}  // namespace df::scheduler
