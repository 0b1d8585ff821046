#include "learning/dataset.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>

namespace df::learning {
namespace {

constexpr std::string_view kDownloadHeader =
    "time_unix_ms,task_id,"
    "child_host_id,child_ip,child_idc,child_location,child_host_type,"
    "child_announced_upload_bytes_per_sec,child_announced_download_bytes_per_sec,"
    "child_learned_upload_bytes_per_sec,child_learned_download_bytes_per_sec,"
    "parent_host_id,parent_ip,parent_idc,parent_location,parent_host_type,"
    "parent_announced_upload_bytes_per_sec,parent_announced_download_bytes_per_sec,"
    "parent_learned_upload_bytes_per_sec,parent_learned_download_bytes_per_sec,"
    "piece_length_bytes,cost_ns,bandwidth_bytes_per_sec";

constexpr std::string_view kTopologyHeader =
    "time_unix_ms,"
    "src_host_id,src_ip,src_idc,src_location,"
    "dst_host_id,dst_ip,dst_idc,dst_location,"
    "average_rtt_ns,samples,created_unix_ms,updated_unix_ms";

// A piece faster than 1 TB/s or slower than an hour is a bogus report, not a measurement.
constexpr double kMaxPlausibleBytesPerSec = 1e12;
constexpr uint64_t kMaxPlausibleCostNs = 3600ull * 1'000'000'000ull;

template <typename T>
std::optional<T> ParseNumber(std::string_view s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

void PutHost(std::string& line, const HostRecord& h) {
  for (std::string_view f : {std::string_view(h.id), std::string_view(h.ip),
                             std::string_view(h.idc), std::string_view(h.location)}) {
    line += CsvField(f);
    line += ',';
  }
  line += h.seed ? "seed," : "normal,";
  line += std::to_string(h.announced_upload_bytes_per_sec) + ",";
  line += std::to_string(h.announced_download_bytes_per_sec) + ",";
  line += std::to_string(h.learned_upload_bytes_per_sec) + ",";
  line += std::to_string(h.learned_download_bytes_per_sec) + ",";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Dataset

bool Dataset::RowBudget() {
  if (stats_.download_rows + stats_.topology_rows >= limits_.max_rows) {
    ++stats_.dropped_rows;
    return false;
  }
  return true;
}

HostRecord* Dataset::UpdateHost(const HostRecord& h) {
  auto it = hosts_.find(h.id);
  if (it == hosts_.end()) {
    if (hosts_.size() >= limits_.max_hosts) return nullptr;
    it = hosts_.emplace(h.id, h).first;
  } else if (h.unix_ms >= it->second.unix_ms) {
    it->second = h;
  }
  return &it->second;
}

bool Dataset::AddDownload(const HostRecord& child, const HostRecord& parent, uint64_t piece_bytes,
                          uint64_t cost_ns, int64_t unix_ms) {
  if (child.id.empty() || parent.id.empty() || child.id == parent.id || piece_bytes == 0 ||
      cost_ns == 0 || cost_ns > kMaxPlausibleCostNs ||
      static_cast<double>(piece_bytes) * 1e9 / static_cast<double>(cost_ns) >
          kMaxPlausibleBytesPerSec) {
    ++stats_.bad_rows;
    return false;
  }
  if (!RowBudget()) return false;
  const size_t new_hosts =
      (hosts_.contains(child.id) ? 0 : 1) + (hosts_.contains(parent.id) ? 0 : 1);
  if (hosts_.size() + new_hosts > limits_.max_hosts) {
    ++stats_.dropped_rows;
    return false;
  }
  UpdateHost(child);
  UpdateHost(parent);
  TransferRecord& t = transfers_[{child.id, parent.id}];
  t.bytes += piece_bytes;
  t.cost_ns += cost_ns;
  ++t.pieces;
  t.last_unix_ms = std::max(t.last_unix_ms, unix_ms);
  ++stats_.download_rows;
  return true;
}

bool Dataset::AddProbe(const HostRecord& src, const HostRecord& dst, uint64_t average_rtt_ns,
                       uint64_t samples, int64_t updated_unix_ms) {
  if (src.id.empty() || dst.id.empty() || src.id == dst.id || average_rtt_ns == 0 ||
      average_rtt_ns > 60ull * 1'000'000'000ull) {
    ++stats_.bad_rows;
    return false;
  }
  if (!RowBudget()) return false;
  const size_t new_hosts = (hosts_.contains(src.id) ? 0 : 1) + (hosts_.contains(dst.id) ? 0 : 1);
  if (hosts_.size() + new_hosts > limits_.max_hosts) {
    ++stats_.dropped_rows;
    return false;
  }
  // A topology row says less of a host than a download row: it only names a host not seen yet.
  for (const HostRecord* h : {&src, &dst}) {
    if (!hosts_.contains(h->id)) {
      HostRecord r = *h;
      r.unix_ms = 0;
      UpdateHost(r);
    }
  }
  ProbeRecord& p = probes_[{src.id, dst.id}];
  if (updated_unix_ms >= p.updated_unix_ms) {
    p.average_rtt_ns = average_rtt_ns;
    p.samples = samples;
    p.updated_unix_ms = updated_unix_ms;
  }
  ++stats_.topology_rows;
  return true;
}

void Dataset::Merge(const Dataset& other) {
  for (const auto& [id, h] : other.hosts_) {
    if (hosts_.size() >= limits_.max_hosts && !hosts_.contains(id)) continue;
    UpdateHost(h);
  }
  for (const auto& [pair, t] : other.transfers_) {
    if (!hosts_.contains(pair.first) || !hosts_.contains(pair.second)) continue;
    TransferRecord& mine = transfers_[pair];
    mine.bytes += t.bytes;
    mine.cost_ns += t.cost_ns;
    mine.pieces += t.pieces;
    mine.last_unix_ms = std::max(mine.last_unix_ms, t.last_unix_ms);
  }
  for (const auto& [pair, p] : other.probes_) {
    if (!hosts_.contains(pair.first) || !hosts_.contains(pair.second)) continue;
    auto [it, inserted] = probes_.emplace(pair, p);
    if (!inserted && p.updated_unix_ms >= it->second.updated_unix_ms) it->second = p;
  }
  stats_.download_rows += other.stats_.download_rows;
  stats_.topology_rows += other.stats_.topology_rows;
  stats_.bad_rows += other.stats_.bad_rows;
  stats_.dropped_rows += other.stats_.dropped_rows;
}

// ---------------------------------------------------------------------------------------------
// DatasetFileReader

class DatasetFileReader::Impl {
 public:
  Impl(FileKind kind, Dataset* dataset)
      : kind_(kind),
        dataset_(*dataset),
        csv_([this](const std::vector<std::string>& f) { OnRecord(f); }, dataset->limits().csv) {}

  Status Feed(std::string_view data) {
    if (!status_.ok()) return status_;
    csv_.Feed(data);
    return status_;
  }
  Status Finish() {
    if (!status_.ok()) return status_;
    csv_.Finish();
    dataset_.mutable_stats().bad_rows += csv_.bad_records();
    if (status_.ok() && !have_header_) status_ = InvalidArgument("dataset file without a header");
    return status_;
  }

 private:
  void OnRecord(const std::vector<std::string>& fields) {
    if (!status_.ok()) return;
    if (!have_header_) return ParseHeader(fields);
    if (fields.size() < columns_.size()) {
      ++dataset_.mutable_stats().bad_rows;
      return;
    }
    if (kind_ == FileKind::kDownload) {
      OnDownload(fields);
    } else {
      OnTopology(fields);
    }
  }

  void ParseHeader(const std::vector<std::string>& fields) {
    have_header_ = true;
    for (size_t i = 0; i < fields.size(); ++i) columns_.emplace(fields[i], i);
    const std::vector<std::string_view> required =
        kind_ == FileKind::kDownload
            ? std::vector<std::string_view>{"child_host_id", "parent_host_id", "piece_length_bytes",
                                            "cost_ns"}
            : std::vector<std::string_view>{"src_host_id", "dst_host_id", "average_rtt_ns"};
    for (std::string_view name : required) {
      if (!columns_.contains(std::string(name))) {
        status_ = InvalidArgument("dataset header lacks column " + std::string(name));
        return;
      }
    }
  }

  // The field of `name`; "" when the file has no such column.
  std::string_view Field(const std::vector<std::string>& fields, const std::string& name) const {
    auto it = columns_.find(name);
    return it == columns_.end() ? std::string_view() : std::string_view(fields[it->second]);
  }
  // An optional number: 0 when the column is missing or empty; nullopt when it does not parse.
  template <typename T>
  std::optional<T> Number(const std::vector<std::string>& fields, const std::string& name) const {
    std::string_view s = Field(fields, name);
    if (s.empty()) return T{0};
    return ParseNumber<T>(s);
  }

  std::optional<HostRecord> Host(const std::vector<std::string>& fields, const std::string& p,
                                 bool with_rates, int64_t unix_ms) const {
    HostRecord h;
    h.id = Field(fields, p + "host_id");
    h.ip = Field(fields, p + "ip");
    h.idc = Field(fields, p + "idc");
    h.location = Field(fields, p + "location");
    h.seed = Field(fields, p + "host_type") == "seed";
    h.unix_ms = unix_ms;
    if (with_rates) {
      auto au = Number<uint64_t>(fields, p + "announced_upload_bytes_per_sec");
      auto ad = Number<uint64_t>(fields, p + "announced_download_bytes_per_sec");
      auto lu = Number<uint64_t>(fields, p + "learned_upload_bytes_per_sec");
      auto ld = Number<uint64_t>(fields, p + "learned_download_bytes_per_sec");
      if (!au || !ad || !lu || !ld) return std::nullopt;
      h.announced_upload_bytes_per_sec = *au;
      h.announced_download_bytes_per_sec = *ad;
      h.learned_upload_bytes_per_sec = *lu;
      h.learned_download_bytes_per_sec = *ld;
    }
    return h;
  }

  void OnDownload(const std::vector<std::string>& fields) {
    auto time = Number<int64_t>(fields, "time_unix_ms");
    auto bytes = ParseNumber<uint64_t>(Field(fields, "piece_length_bytes"));
    auto cost = ParseNumber<uint64_t>(Field(fields, "cost_ns"));
    std::optional<HostRecord> child, parent;
    if (time) child = Host(fields, "child_", true, *time);
    if (time) parent = Host(fields, "parent_", true, *time);
    if (!time || !bytes || !cost || !child || !parent) {
      ++dataset_.mutable_stats().bad_rows;
      return;
    }
    dataset_.AddDownload(*child, *parent, *bytes, *cost, *time);
  }

  void OnTopology(const std::vector<std::string>& fields) {
    auto time = Number<int64_t>(fields, "time_unix_ms");
    auto rtt = ParseNumber<uint64_t>(Field(fields, "average_rtt_ns"));
    auto samples = Number<uint64_t>(fields, "samples");
    auto updated = Number<int64_t>(fields, "updated_unix_ms");
    if (!time || !rtt || !samples || !updated) {
      ++dataset_.mutable_stats().bad_rows;
      return;
    }
    auto src = Host(fields, "src_", false, *time);
    auto dst = Host(fields, "dst_", false, *time);
    dataset_.AddProbe(*src, *dst, *rtt, *samples, *updated != 0 ? *updated : *time);
  }

  const FileKind kind_;
  Dataset& dataset_;
  CsvReader csv_;
  bool have_header_ = false;
  std::unordered_map<std::string, size_t> columns_;
  Status status_;
};

DatasetFileReader::DatasetFileReader(FileKind kind, Dataset* dataset)
    : impl_(std::make_unique<Impl>(kind, dataset)) {}
DatasetFileReader::~DatasetFileReader() = default;
Status DatasetFileReader::Feed(std::string_view data) { return impl_->Feed(data); }
Status DatasetFileReader::Finish() { return impl_->Finish(); }

Result<std::unique_ptr<Dataset>> ReadDatasetDir(const std::string& dir, DatasetLimits limits,
                                                uint64_t max_file_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return NotFound("dataset dir " + dir);
  std::vector<std::pair<FileKind, std::filesystem::path>> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file(ec) || !name.ends_with(".csv")) continue;
    if (name.starts_with("download")) files.emplace_back(FileKind::kDownload, entry.path());
    if (name.starts_with("networktopology")) {
      files.emplace_back(FileKind::kNetworkTopology, entry.path());
    }
  }
  if (ec) return IoError("list " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());
  auto dataset = std::make_unique<Dataset>(limits);
  std::vector<char> buffer(1 << 20);
  for (const auto& [kind, path] : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return ErrnoStatus("open " + path.string(), errno);
    DatasetFileReader reader(kind, dataset.get());
    uint64_t total = 0;
    while (in && total < max_file_bytes) {
      in.read(buffer.data(), static_cast<std::streamsize>(
                                 std::min<uint64_t>(buffer.size(), max_file_bytes - total)));
      const auto n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      total += n;
      if (Status s = reader.Feed({buffer.data(), n}); !s.ok()) {
        return Status(s.code(), path.string() + ": " + s.message());
      }
    }
    if (in.bad()) return IoError("read " + path.string());
    if (Status s = reader.Finish(); !s.ok()) {
      return Status(s.code(), path.string() + ": " + s.message());
    }
  }
  return dataset;
}

std::string_view DownloadCsvHeader() { return kDownloadHeader; }
std::string_view NetworkTopologyCsvHeader() { return kTopologyHeader; }

std::string DownloadCsvLine(int64_t unix_ms, std::string_view task_id, const HostRecord& child,
                            const HostRecord& parent, uint64_t piece_bytes, uint64_t cost_ns) {
  std::string line = std::to_string(unix_ms) + "," + CsvField(task_id) + ",";
  PutHost(line, child);
  PutHost(line, parent);
  const double bw = cost_ns == 0 ? 0.0 : static_cast<double>(piece_bytes) * 1e9 / cost_ns;
  line += std::to_string(piece_bytes) + "," + std::to_string(cost_ns) + "," +
          std::to_string(static_cast<uint64_t>(bw)) + "\n";
  return line;
}

std::string TopologyCsvLine(int64_t unix_ms, const HostRecord& src, const HostRecord& dst,
                            uint64_t average_rtt_ns, uint64_t samples, int64_t created_unix_ms,
                            int64_t updated_unix_ms) {
  std::string line = std::to_string(unix_ms);
  for (const HostRecord* h : {&src, &dst}) {
    for (std::string_view f : {std::string_view(h->id), std::string_view(h->ip),
                               std::string_view(h->idc), std::string_view(h->location)}) {
      line += ',';
      line += CsvField(f);
    }
  }
  line += "," + std::to_string(average_rtt_ns) + "," + std::to_string(samples) + "," +
          std::to_string(created_unix_ms) + "," + std::to_string(updated_unix_ms) + "\n";
  return line;
}

}  // namespace df::learning
