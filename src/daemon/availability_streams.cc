#include "daemon/availability_streams.h"

#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/redact.h"
#include "common/thread_name.h"

namespace df {

namespace dv1 = df::dfdaemon::v1;

namespace {

// A stream refused before it starts: finishes with its status at once.
class Refusal final : public grpc::ServerWriteReactor<dv1::PieceAvailability> {
 public:
  explicit Refusal(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace

// One SyncPieces stream. Its state is guarded by mu_; gRPC calls (StartWrite, Finish) are made
// without it. At most one write is in flight; Finish is called once, never with a write in
// flight: an end decided meanwhile (cancel, Stop) waits in ending_ for OnWriteDone.
class AvailabilityStreams::Stream final : public grpc::ServerWriteReactor<dv1::PieceAvailability> {
 public:
  Stream(AvailabilityStreams* owner, const dv1::SyncPiecesRequest& req,
         std::shared_ptr<TaskStorage> storage)
      : owner_(owner),
        task_id_(req.task_id()),
        child_peer_id_(Printable(req.child_peer_id())),
        storage_(std::move(storage)) {}

  ~Stream() override {
    if (listener_ != 0) storage_->RemoveAvailabilityListener(listener_);
  }

  // Asks the storage to wake the pump for this stream. Once, before the stream is pumped.
  void Listen() {
    listener_ = storage_->AddAvailabilityListener(
        [owner = owner_, self = static_cast<const Stream*>(this)] { owner->Wake(self); });
  }

  // Pump thread only. Sends what the child has not seen, or ends the stream. `tick`: also look
  // for what no listener reports (the content file removed by hand).
  void Pump(bool tick) {
    std::unique_lock lock(mu_);
    if (finished_ || writing_) return;
    if (storage_->closed() || (tick && !owner_->store_->FindTask(task_id_))) {
      return FinishLocked(std::move(lock), {grpc::StatusCode::NOT_FOUND, "task deleted"});
    }
    if (first_) {  // the layout goes in every message; it is known once, then never changes
      const TaskMeta meta = storage_->meta();
      if (meta.content_length < 0) {  // a parent named before it knows the size (a seed asking)
        if (owner_->manager_->Failed(task_id_)) return FinishLocked(std::move(lock), Failed());
        return;
      }
      msg_.set_content_length(meta.content_length);
      msg_.set_piece_length(meta.piece_length);
      msg_.set_total_pieces(storage_->layout().total_pieces());
    }
    batch_.clear();
    receiving_.clear();
    storage_->WaitForAvailability(&cursor_, 0, &batch_, &receiving_);
    const bool done = storage_->done();
    if (first_ || !batch_.empty() || !receiving_.empty() || done) {
      msg_.clear_piece_numbers();
      msg_.clear_receiving_piece_numbers();
      for (uint32_t n : batch_) msg_.add_piece_numbers(n);
      if (!done) {
        for (uint32_t n : receiving_) msg_.add_receiving_piece_numbers(n);
      }
      msg_.set_done(done);
      first_ = false;
      sent_done_ = done;
      writing_ = true;
      lock.unlock();
      StartWrite(&msg_);
      return;
    }
    // Nothing more will come: let the child look for another parent now rather than wait.
    if (owner_->manager_->Failed(task_id_)) FinishLocked(std::move(lock), Failed());
  }

  // Ends the stream with `status` now, or when the write in flight completes.
  void End(const grpc::Status& status) {
    std::unique_lock lock(mu_);
    if (finished_) return;
    if (writing_) {
      if (!ending_) ending_ = status;
      return;
    }
    FinishLocked(std::move(lock), status);
  }

  void OnWriteDone(bool ok) override {
    std::unique_lock lock(mu_);
    writing_ = false;
    if (!ok) return FinishLocked(std::move(lock), ChildGone());
    if (sent_done_) return FinishLocked(std::move(lock), grpc::Status::OK);
    if (ending_) return FinishLocked(std::move(lock), *ending_);
    lock.unlock();
    owner_->Wake(this);  // what arrived while the write was in flight
  }

  void OnCancel() override { End(ChildGone()); }

  void OnDone() override {
    std::unique_lock lock(mu_);
    const grpc::Status status = status_;
    lock.unlock();
    if (status.ok()) {
      DF_LOG_DEBUG("availability stream to child peer {} ended task_id={} reason=task done here",
                   child_peer_id_, task_id_);
    } else {
      DF_LOG_INFO("availability stream to child peer {} ended task_id={} reason={}", child_peer_id_,
                  task_id_, status.error_message());
    }
    owner_->Retire(this);  // may destroy this
  }

 private:
  static grpc::Status ChildGone() { return {grpc::StatusCode::CANCELLED, "child went away"}; }
  static grpc::Status Failed() {
    return {grpc::StatusCode::UNAVAILABLE, "this parent's download of the task failed"};
  }

  // Finishes with `status`; `lock` holds mu_, no write is in flight.
  void FinishLocked(std::unique_lock<std::mutex> lock, const grpc::Status& status) {
    finished_ = true;
    status_ = status;
    lock.unlock();
    Finish(status);
  }

  AvailabilityStreams* const owner_;
  const std::string task_id_;
  const std::string child_peer_id_;  // printable, for the log
  const std::shared_ptr<TaskStorage> storage_;
  uint64_t listener_ = 0;

  std::mutex mu_;
  bool writing_ = false;                    // GUARDED_BY(mu_)
  bool finished_ = false;                   // GUARDED_BY(mu_): Finish called
  bool first_ = true;                       // GUARDED_BY(mu_)
  bool sent_done_ = false;                  // GUARDED_BY(mu_): the message in flight says done
  std::optional<grpc::Status> ending_;      // GUARDED_BY(mu_)
  grpc::Status status_;                     // GUARDED_BY(mu_): what Finish was called with
  TaskStorage::AvailabilityCursor cursor_;  // GUARDED_BY(mu_)
  std::vector<uint32_t> batch_;             // GUARDED_BY(mu_)
  std::vector<uint32_t> receiving_;         // GUARDED_BY(mu_)
  dv1::PieceAvailability msg_;  // GUARDED_BY(mu_) until StartWrite, then gRPC's until OnWriteDone
};

AvailabilityStreams::AvailabilityStreams(TaskManager* manager, PieceStore* store,
                                         size_t max_streams)
    : manager_(manager), store_(store), max_streams_(max_streams) {
  pump_ = NamedThread("df-avail-pump", [this] { Run(); });
}

AvailabilityStreams::~AvailabilityStreams() {
  Stop();
  std::unique_lock lock(mu_);
  // gRPC calls OnDone for every stream before its server's Shutdown returns; this waits only
  // when the owner destroys this first.
  done_cv_.wait(lock, [&] { return streams_.empty(); });
  stopping_ = true;
  quit_ = true;
  lock.unlock();
  cv_.notify_all();
  pump_.join();
}

grpc::ServerWriteReactor<dv1::PieceAvailability>* AvailabilityStreams::Refuse(
    const grpc::Status& status) {
  return new Refusal(status);
}

grpc::ServerWriteReactor<dv1::PieceAvailability>* AvailabilityStreams::Open(
    const dv1::SyncPiecesRequest& req) {
  auto storage = store_->FindTask(req.task_id());
  if (!storage)
    return new Refusal({grpc::StatusCode::NOT_FOUND, "task " + req.task_id() + " not here"});
  auto stream = std::make_shared<Stream>(this, req, std::move(storage));
  {
    std::lock_guard lock(mu_);
    if (stopping_) return new Refusal({grpc::StatusCode::UNAVAILABLE, "daemon shutting down"});
    if (streams_.size() >= max_streams_) {
      return new Refusal(
          {grpc::StatusCode::RESOURCE_EXHAUSTED,
           "too many availability streams open (" + std::to_string(max_streams_) + ")"});
    }
  }
  // Listening before the stream is due: no change between its first message and the listener
  // goes unseen.
  stream->Listen();
  Stream* raw = stream.get();
  {
    std::lock_guard lock(mu_);
    streams_.emplace(raw, std::move(stream));
    due_.insert(raw);
  }
  cv_.notify_one();
  return raw;
}

void AvailabilityStreams::Stop() {
  std::vector<std::shared_ptr<Stream>> open;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (const auto& [raw, stream] : streams_) open.push_back(stream);
  }
  for (const auto& stream : open) {
    stream->End({grpc::StatusCode::UNAVAILABLE, "daemon shutting down"});
  }
}

size_t AvailabilityStreams::open() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

void AvailabilityStreams::Wake(const Stream* stream) {
  {
    std::lock_guard lock(mu_);
    due_.insert(stream);
  }
  cv_.notify_one();
}

void AvailabilityStreams::Retire(const Stream* stream) {
  std::shared_ptr<Stream> last;  // released after the lock: ~Stream takes the storage's locks
  {
    std::lock_guard lock(mu_);
    auto it = streams_.find(stream);
    if (it == streams_.end()) return;
    last = std::move(it->second);
    streams_.erase(it);
    due_.erase(stream);
    if (streams_.empty()) done_cv_.notify_all();
  }
}

void AvailabilityStreams::Run() {
  std::vector<std::shared_ptr<Stream>> work;
  std::unique_lock lock(mu_);
  std::chrono::steady_clock::time_point next_tick =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kTickMs);
  while (!quit_) {
    cv_.wait_until(lock, next_tick, [&] { return !due_.empty() || quit_; });
    if (quit_) break;
    const bool tick = std::chrono::steady_clock::now() >= next_tick;
    if (tick) {
      for (const auto& [raw, stream] : streams_) work.push_back(stream);
      next_tick = std::chrono::steady_clock::now() + std::chrono::milliseconds(kTickMs);
    } else {
      for (const Stream* raw : due_) {
        if (auto it = streams_.find(raw); it != streams_.end()) work.push_back(it->second);
      }
    }
    due_.clear();
    lock.unlock();
    for (const auto& stream : work) stream->Pump(tick);
    work.clear();  // may destroy retired streams: without the lock
    lock.lock();
  }
}

}  // namespace df
