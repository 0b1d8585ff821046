#include "scheduler/dataset_uploader.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "common/log.h"
#include "trainer.grpc.pb.h"

namespace df::scheduler {
namespace {

namespace tv1 = df::trainer::v1;

// The trainer refuses chunks above 1 MiB (proto/trainer.proto).
constexpr size_t kChunkBytes = 1 << 20;

struct DatasetFile {
  std::filesystem::path path;
  tv1::DatasetFileKind kind;
  uint64_t size = 0;  // when the round began
};

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

// download*.csv and networktopology*.csv of `dir`, oldest rotation first, the live files last
// (the trainer reads rows in the order they come).
Result<std::vector<DatasetFile>> ListDataset(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec) return NotFound("dataset dir " + dir + ": " + ec.message());
  std::vector<DatasetFile> files;
  for (const auto& entry : it) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".csv") != 0) continue;
    tv1::DatasetFileKind kind;
    if (StartsWith(name, "download")) {
      kind = tv1::DATASET_FILE_KIND_DOWNLOAD;
    } else if (StartsWith(name, "networktopology")) {
      kind = tv1::DATASET_FILE_KIND_NETWORK_TOPOLOGY;
    } else {
      continue;
    }
    const uint64_t size = entry.file_size(ec);
    if (ec || size == 0) continue;
    files.push_back({entry.path(), kind, size});
  }
  // "download-<ms>.csv" sorts before "download.csv" ('-' < '.'): rotated first, by time.
  std::sort(files.begin(), files.end(),
            [](const DatasetFile& a, const DatasetFile& b) { return a.path < b.path; });
  return files;
}

}  // namespace

DatasetUploader::DatasetUploader(Options options, DatasetWriter* writer, const ControlAuth* auth,
                                 prometheus::Registry& registry)
    : options_(std::move(options)),
      writer_(writer),
      auth_(auth),
      rounds_ok_(prometheus::BuildCounter()
                     .Name("df_scheduler_trainer_uploads_total")
                     .Help("Rounds that streamed the records dataset to the trainer, by result")
                     .Register(registry)
                     .Add({{"result", "ok"}})),
      rounds_failed_(prometheus::BuildCounter()
                         .Name("df_scheduler_trainer_uploads_total")
                         .Help("Rounds that streamed the records dataset to the trainer, by result")
                         .Register(registry)
                         .Add({{"result", "error"}})),
      bytes_sent_(prometheus::BuildCounter()
                      .Name("df_scheduler_trainer_upload_bytes_total")
                      .Help("Dataset bytes streamed to the trainer")
                      .Register(registry)
                      .Add({})) {}

DatasetUploader::~DatasetUploader() { Stop(); }

void DatasetUploader::Start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Run(); });
}

void DatasetUploader::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    if (current_call_) static_cast<grpc::ClientContext*>(current_call_)->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DatasetUploader::Run() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, options_.interval, [this] { return stop_; })) {
    lock.unlock();
    Result<Round> r = UploadOnce();
    lock.lock();
    if (r.ok()) {
      if (failing_) DF_LOG_INFO("dataset upload to trainer {} works again", options_.target);
      failing_ = false;
      DF_LOG_INFO(
          "dataset sent to trainer {}: {} files, {} bytes; accepted {} download rows, {} "
          "topology rows, {} bad; queued={}",
          options_.target, r.value().files, r.value().bytes, r.value().download_rows,
          r.value().topology_rows, r.value().bad_rows, r.value().queued);
    } else if (!failing_ && !stop_) {
      failing_ = true;
      DF_LOG_WARN("dataset upload to trainer {} failed (retrying every {} s): {}", options_.target,
                  options_.interval.count() / 1000, r.status().message());
    }
  }
}

Result<DatasetUploader::Round> DatasetUploader::UploadOnce() {
  auto fail = [this](Status s) {
    rounds_failed_.Increment();
    return s;
  };
  if (writer_) {
    // What is queued goes in this round; a failed write is the writer's to report (it logs and
    // counts it), and the files on disk are sent anyway.
    (void)writer_->Flush();
  }
  auto files = ListDataset(options_.dataset_dir);
  if (!files.ok()) return fail(files.status());
  Round round;
  if (files.value().empty()) return round;

  auto creds = auth_ ? auth_->ChannelCredentials() : grpc::InsecureChannelCredentials();
  auto channel = grpc::CreateChannel(options_.target, creds);
  auto stub = tv1::Trainer::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  if (auth_) auth_->Attach(&ctx);
  {
    std::lock_guard lock(mu_);
    if (stop_) return fail(Status(StatusCode::kCancelled, "stopping"));
    current_call_ = &ctx;
  }
  struct Clear {
    DatasetUploader* self;
    ~Clear() {
      std::lock_guard lock(self->mu_);
      self->current_call_ = nullptr;
    }
  } clear{this};

  tv1::TrainResponse response;
  auto writer = stub->Train(&ctx, &response);
  tv1::TrainRequest req;
  tv1::TrainHeader* header = req.mutable_header();
  header->set_scheduler_id(options_.scheduler_id);
  header->set_hostname(options_.hostname);
  header->set_ip(options_.ip);
  bool open = writer->Write(req);
  std::string chunk;
  for (const DatasetFile& f : files.value()) {
    if (!open) break;
    std::ifstream in(f.path, std::ios::binary);
    if (!in) continue;  // rotated away meanwhile
    req.Clear();
    req.mutable_file()->set_kind(f.kind);
    req.mutable_file()->set_name(f.path.filename().string());
    open = writer->Write(req);
    uint64_t left = f.size;  // as it was when the round began
    std::string carry;       // bytes after the last newline sent so far
    while (open && left > 0) {
      chunk.resize(static_cast<size_t>(std::min<uint64_t>(left, kChunkBytes)));
      in.read(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      const auto got = static_cast<size_t>(in.gcount());
      if (got == 0) break;  // truncated meanwhile
      chunk.resize(got);
      left -= got;
      // Only complete lines: what follows the last newline of the snapshot is a row being
      // appended, and goes with the next round.
      std::string data = carry + chunk;
      const size_t end = data.rfind('\n');
      if (end == std::string::npos) {
        carry = std::move(data);
        if (carry.size() > kChunkBytes) break;  // a "line" over 1 MiB is not a dataset row
        continue;
      }
      carry = data.substr(end + 1);
      for (size_t at = 0; open && at <= end; at += kChunkBytes) {  // at most 1 MiB a message
        req.Clear();
        req.set_chunk(data.substr(at, std::min(kChunkBytes, end + 1 - at)));
        open = writer->Write(req);
      }
      round.bytes += end + 1;
    }
    ++round.files;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) {
    return fail(Unavailable("Train: " + status.error_message() + " (gRPC code " +
                            std::to_string(static_cast<int>(status.error_code())) + ")"));
  }
  round.download_rows = response.download_rows();
  round.topology_rows = response.topology_rows();
  round.bad_rows = response.bad_rows();
  round.queued = response.queued();
  rounds_ok_.Increment();
  bytes_sent_.Increment(static_cast<double>(round.bytes));
  return round;
}

}  // namespace df::scheduler
