// Dataset: the scheduler's records dataset (docs/measurement.md, "Records dataset") read back and
// aggregated for learning. libtorch-free: the trainer and the scheduler's `ml` evaluator share it.
//
//   download*.csv         one row per piece a child got from a parent
//   networktopology*.csv  probed (src, dst) RTT edges, snapshots
//
// Reading is header-driven: columns are found by name, so extra or reordered columns are fine;
// a file whose header lacks a required column is refused (InvalidArgument). A row that is not
// well-formed CSV, has fewer fields than the header, an empty host id, a number that does not
// parse, or an implausible value (cost 0, piece bytes 0, a host pair with itself) is *bad*: it
// is counted and skipped, never fatal. Everything is bounded (DatasetLimits): rows beyond
// max_rows and hosts beyond max_hosts are counted as dropped.
//
// Aggregation:
//   - a host's fields (ip, idc, location, type, rates) are those of its latest row (by time);
//   - a transfer (child, parent) keeps the sums of piece bytes and cost over its pieces, so its
//     bandwidth is total bytes / total transfer time (bytes/s) and a slow piece weighs with
//     its duration;
//   - a probe (src, dst) keeps the row with the latest updated_unix_ms.
//
// Thread-compatible.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "learning/csv.h"

namespace df::learning {

// What the dataset says of a host (its latest row). Rates in bytes/s, 0 = unknown.
struct HostRecord {
  std::string id;
  std::string ip;
  std::string idc;
  std::string location;
  bool seed = false;
  uint64_t announced_upload_bytes_per_sec = 0;
  uint64_t announced_download_bytes_per_sec = 0;
  uint64_t learned_upload_bytes_per_sec = 0;
  uint64_t learned_download_bytes_per_sec = 0;
  int64_t unix_ms = 0;  // time of the row these fields come from
};

// The pieces a child got from one parent.
struct TransferRecord {
  uint64_t bytes = 0;
  uint64_t cost_ns = 0;  // sum of the pieces' transfer times
  uint64_t pieces = 0;
  int64_t last_unix_ms = 0;
  double bandwidth_bytes_per_sec() const {
    return cost_ns == 0 ? 0.0 : static_cast<double>(bytes) * 1e9 / static_cast<double>(cost_ns);
  }
};

struct ProbeRecord {
  uint64_t average_rtt_ns = 0;
  uint64_t samples = 0;
  int64_t updated_unix_ms = 0;
};

struct DatasetLimits {
  uint64_t max_rows = 20'000'000;  // download + topology rows accepted
  uint64_t max_hosts = 200'000;
  CsvLimits csv;
};

// Counters of one read (summed over files).
struct DatasetStats {
  uint64_t download_rows = 0;  // rows accepted
  uint64_t topology_rows = 0;
  uint64_t bad_rows = 0;      // malformed or implausible, skipped
  uint64_t dropped_rows = 0;  // beyond a limit
};

// Ordered host pair (child, parent) for transfers, (src, dst) for probes.
using HostPair = std::pair<std::string, std::string>;

class Dataset {
 public:
  explicit Dataset(DatasetLimits limits = DatasetLimits()) : limits_(limits) {}

  const std::map<std::string, HostRecord>& hosts() const { return hosts_; }
  const std::map<HostPair, TransferRecord>& transfers() const { return transfers_; }
  const std::map<HostPair, ProbeRecord>& probes() const { return probes_; }
  const DatasetStats& stats() const { return stats_; }
  DatasetStats& mutable_stats() { return stats_; }

  // Adds one download row / topology row given as named values; false (counted bad) when the
  // row is implausible. Used by the readers and by the synthetic generator's tests.
  bool AddDownload(const HostRecord& child, const HostRecord& parent, uint64_t piece_bytes,
                   uint64_t cost_ns, int64_t unix_ms);
  bool AddProbe(const HostRecord& src, const HostRecord& dst, uint64_t average_rtt_ns,
                uint64_t samples, int64_t updated_unix_ms);

  // Merges `other` into this dataset (several schedulers' datasets): transfer sums add up, the
  // latest host row and probe win.
  void Merge(const Dataset& other);

  const DatasetLimits& limits() const { return limits_; }

 private:
  // The host's record, created when new; nullptr beyond max_hosts.
  HostRecord* UpdateHost(const HostRecord& h);
  bool RowBudget();  // false (counted dropped) once max_rows rows were accepted

  DatasetLimits limits_;
  std::map<std::string, HostRecord> hosts_;
  std::map<HostPair, TransferRecord> transfers_;
  std::map<HostPair, ProbeRecord> probes_;
  DatasetStats stats_;
};

enum class FileKind { kDownload, kNetworkTopology };

// Parses one CSV file of `kind` fed in chunks into `dataset`. The first record is the header.
// Feed/Finish return InvalidArgument when the header lacks a required column (download:
// child_host_id, parent_host_id, piece_length_bytes, cost_ns; topology: src_host_id,
// dst_host_id, average_rtt_ns); the rest of that file is then ignored.
class DatasetFileReader {
 public:
  DatasetFileReader(FileKind kind, Dataset* dataset);
  ~DatasetFileReader();
  Status Feed(std::string_view data);
  Status Finish();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads every download*.csv and networktopology*.csv of `dir` (other files are ignored), each
// at most `max_file_bytes`. NotFound when dir is missing; InvalidArgument when a file's header
// lacks a required column; IoError when a file cannot be read. Bad rows are only counted.
Result<std::unique_ptr<Dataset>> ReadDatasetDir(const std::string& dir,
                                                DatasetLimits limits = DatasetLimits(),
                                                uint64_t max_file_bytes = 2ull << 30);

// The column names the scheduler writes (src/scheduler/dataset_writer.cc), for writers of
// synthetic datasets.
std::string_view DownloadCsvHeader();
std::string_view NetworkTopologyCsvHeader();
// One download.csv line (with newline) and one networktopology.csv line, fields quoted as RFC
// 4180 requires.
std::string DownloadCsvLine(int64_t unix_ms, std::string_view task_id, const HostRecord& child,
                            const HostRecord& parent, uint64_t piece_bytes, uint64_t cost_ns);
std::string TopologyCsvLine(int64_t unix_ms, const HostRecord& src, const HostRecord& dst,
                            uint64_t average_rtt_ns, uint64_t samples, int64_t created_unix_ms,
                            int64_t updated_unix_ms);

}  // namespace df::learning
