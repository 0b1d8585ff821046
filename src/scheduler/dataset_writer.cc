#include "scheduler/dataset_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <unordered_map>
#include <utility>

#include "common/log.h"
#include "learning/dataset.h"

namespace df::scheduler {
namespace {

using Clock = std::chrono::steady_clock;

// The column lists live with their reader (src/learning/dataset.h), so that what the scheduler
// writes and what the trainer reads cannot drift apart.
const std::string_view kDownloadHeader = df::learning::DownloadCsvHeader();
const std::string_view kTopologyHeader = df::learning::NetworkTopologyCsvHeader();

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Appends ",<field>"; EndLine drops the first comma and ends the line.
void Put(std::string& line, std::string_view field) {
  line += ',';
  line += CsvField(field);
}
void EndLine(std::string& line) {
  line.erase(0, 1);
  line += '\n';
}
void Put(std::string& line, uint64_t n) { Put(line, std::to_string(n)); }
void Put(std::string& line, int64_t n) { Put(line, std::to_string(n)); }

// The ip, idc and location of a stored host; empty fields for a host the store no longer has.
void PutEndpoint(std::string& line, const std::string& id, const v1::Host* h) {
  Put(line, id);
  Put(line, h ? h->ip() : "");
  Put(line, h ? h->idc() : "");
  Put(line, h ? h->location() : "");
}

std::string TopologyLine(int64_t now_ms, const ProbeEdge& e,
                         const std::unordered_map<std::string, v1::Host>& hosts) {
  auto find = [&](const std::string& id) -> const v1::Host* {
    auto it = hosts.find(id);
    return it == hosts.end() ? nullptr : &it->second;
  };
  std::string line;
  Put(line, now_ms);
  PutEndpoint(line, e.src_host_id, find(e.src_host_id));
  PutEndpoint(line, e.dst_host_id, find(e.dst_host_id));
  Put(line, e.average_rtt_ns);
  Put(line, static_cast<uint64_t>(e.samples.size()));
  Put(line, e.created_unix_ms);
  Put(line, e.updated_unix_ms);
  EndLine(line);
  return line;
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write " + path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// The <unix_ms> of "<kind>-<unix_ms>.csv"; -1 for any other name.
int64_t RotatedStamp(std::string_view name, std::string_view kind) {
  if (name.size() <= kind.size() + 5 || name.substr(0, kind.size()) != kind ||
      name[kind.size()] != '-' || name.substr(name.size() - 4) != ".csv") {
    return -1;
  }
  std::string_view digits = name.substr(kind.size() + 1, name.size() - kind.size() - 5);
  int64_t stamp = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), stamp);
  if (ec != std::errc() || end != digits.data() + digits.size()) return -1;
  return stamp;
}

}  // namespace

std::string_view DownloadCsvHeader() { return kDownloadHeader; }
std::string_view NetworkTopologyCsvHeader() { return kTopologyHeader; }

std::string DownloadCsvLine(const DownloadRow& row) {
  return df::learning::DownloadCsvLine(row.unix_ms, row.task_id, row.child, row.parent,
                                       row.piece_length_bytes, row.cost_ns);
}

// ---------------------------------------------------------------------------------------------
// RotatingFile

DatasetWriter::RotatingFile::RotatingFile(const Options& options, std::string kind,
                                          std::string_view header)
    : options_(options), kind_(std::move(kind)), header_(std::string(header) + "\n") {}

Status DatasetWriter::RotatingFile::Open() {
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  if (ec) return IoError("create " + options_.dir + ": " + ec.message());
  const std::string path = options_.dir + "/" + kind_ + ".csv";
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!fd) return ErrnoStatus("open " + path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoStatus("stat " + path, errno);
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) {
    if (Status s = WriteAll(fd.get(), header_, path); !s.ok()) {
      (void)::ftruncate(fd.get(), 0);
      return s;
    }
    size_ = header_.size();
  }
  fd_ = std::move(fd);
  return Status::Ok();
}

Status DatasetWriter::RotatingFile::Rotate() {
  fd_.Reset();
  // Names must be unique and ordered even when two rotations fall in one millisecond.
  const int64_t stamp = std::max(UnixMs(), last_rotation_ms_ + 1);
  const std::string from = options_.dir + "/" + kind_ + ".csv";
  const std::string to = options_.dir + "/" + kind_ + "-" + std::to_string(stamp) + ".csv";
  if (::rename(from.c_str(), to.c_str()) != 0) return ErrnoStatus("rename " + from, errno);
  last_rotation_ms_ = stamp;
  Prune();
  return Status::Ok();
}

void DatasetWriter::RotatingFile::Prune() {
  std::vector<std::pair<int64_t, std::filesystem::path>> rotated;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.dir, ec)) {
    int64_t stamp = RotatedStamp(entry.path().filename().string(), kind_);
    if (stamp >= 0) rotated.emplace_back(stamp, entry.path());
  }
  if (rotated.size() <= options_.max_files) return;
  std::sort(rotated.begin(), rotated.end());
  for (size_t i = 0; i + options_.max_files < rotated.size(); ++i) {
    std::filesystem::remove(rotated[i].second, ec);
  }
}

DatasetWriter::RotatingFile::Written DatasetWriter::RotatingFile::Write(
    const std::vector<std::string>& lines) {
  Written result;
  std::string batch;
  size_t batch_rows = 0;
  auto flush = [&]() -> Status {
    if (batch.empty()) return Status::Ok();
    const std::string path = options_.dir + "/" + kind_ + ".csv";
    if (Status s = WriteAll(fd_.get(), batch, path); !s.ok()) {
      // Cut a partly written row off, so that the file stays a valid CSV.
      (void)::ftruncate(fd_.get(), static_cast<off_t>(size_));
      fd_.Reset();
      return s;
    }
    size_ += batch.size();
    result.rows += batch_rows;
    batch.clear();
    batch_rows = 0;
    return Status::Ok();
  };
  for (const auto& line : lines) {
    if (!fd_) {
      if (Status s = Open(); !s.ok()) {
        result.status = s;
        return result;
      }
    }
    const uint64_t after = size_ + batch.size() + line.size();
    if (after > options_.max_file_size_bytes && size_ + batch.size() > header_.size()) {
      if (Status s = flush(); !s.ok()) {
        result.status = s;
        return result;
      }
      if (Status s = Rotate(); !s.ok()) {
        result.status = s;
        return result;
      }
      if (Status s = Open(); !s.ok()) {
        result.status = s;
        return result;
      }
    }
    batch += line;
    ++batch_rows;
  }
  result.status = flush();
  return result;
}

// ---------------------------------------------------------------------------------------------
// DatasetWriter

DatasetWriter::DatasetWriter(Options options, Store* store, Metrics metrics)
    : options_(std::move(options)),
      store_(*store),
      metrics_(metrics),
      download_(options_, "download", kDownloadHeader),
      topology_(options_, "networktopology", kTopologyHeader) {}

DatasetWriter::~DatasetWriter() { Stop(); }

void DatasetWriter::Start() {
  // Created now, not at the first row: the trainer uploader lists it from the start.
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  if (ec) DF_LOG_WARN("dataset dir {}: {} (retried at each write)", options_.dir, ec.message());
  thread_ = std::thread([this] { Run(); });
}

void DatasetWriter::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  (void)Flush();  // rows queued after the thread's last round, or with no thread at all
  std::lock_guard round(round_mu_);
  download_.Close();
  topology_.Close();
}

bool DatasetWriter::Add(DownloadRow row) {
  std::lock_guard lock(mu_);
  if (queue_.size() >= options_.max_queued_rows) {
    metrics_.dropped.Increment();
    return false;
  }
  queue_.push_back(std::move(row));
  if (queue_.size() == WakeAt()) wake_.notify_one();
  return true;
}

void DatasetWriter::Run() {
  auto next_topology = Clock::now() + options_.topology_interval;
  std::unique_lock lock(mu_);
  while (true) {
    const auto deadline = std::min(Clock::now() + options_.flush_interval, next_topology);
    wake_.wait_until(lock, deadline, [this] { return stop_ || queue_.size() >= WakeAt(); });
    const bool stopping = stop_;
    lock.unlock();
    (void)Flush();
    if (!stopping && Clock::now() >= next_topology) {
      (void)WriteTopology();
      next_topology = Clock::now() + options_.topology_interval;
    }
    lock.lock();
    if (stopping) break;
  }
}

Status DatasetWriter::Flush() {
  std::lock_guard round(round_mu_);
  std::vector<DownloadRow> rows;
  {
    std::lock_guard lock(mu_);
    rows.swap(queue_);
  }
  if (rows.empty()) return Status::Ok();
  std::vector<std::string> lines;
  lines.reserve(rows.size());
  for (const auto& row : rows) lines.push_back(DownloadCsvLine(row));
  auto written = download_.Write(lines);
  metrics_.download_rows.Increment(static_cast<double>(written.rows));
  if (!written.status.ok()) {
    CountError(written.status);
    return written.status;
  }
  Recovered();
  return Status::Ok();
}

Status DatasetWriter::WriteTopology() {
  std::lock_guard round(round_mu_);
  const int64_t now_ms = UnixMs();
  auto probes = store_.ListProbes();
  if (!probes.ok()) {
    CountError(probes.status());
    return probes.status();
  }
  auto hosts = store_.ListHosts();
  if (!hosts.ok()) {
    CountError(hosts.status());
    return hosts.status();
  }
  std::unordered_map<std::string, v1::Host> by_id;
  for (auto& h : hosts.value()) by_id.emplace(h.info.id(), std::move(h.info));
  std::vector<std::string> lines;
  lines.reserve(probes->size());
  for (const auto& edge : probes.value()) lines.push_back(TopologyLine(now_ms, edge, by_id));
  auto written = topology_.Write(lines);
  metrics_.topology_rows.Increment(static_cast<double>(written.rows));
  if (!written.status.ok()) {
    CountError(written.status);
    return written.status;
  }
  Recovered();
  return Status::Ok();
}

void DatasetWriter::CountError(const Status& status) {
  metrics_.errors.Increment();
  if (failing_) return;
  failing_ = true;
  DF_LOG_WARN("dataset write failed, rows dropped until it works again dir={} error={}",
              options_.dir, status.ToString());
}

void DatasetWriter::Recovered() {
  if (!failing_) return;
  failing_ = false;
  DF_LOG_INFO("dataset writes work again dir={}", options_.dir);
}

}  // namespace df::scheduler
