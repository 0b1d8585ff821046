// An in-process scheduler for engine unit tests: a real gRPC server on loopback whose
// AnnouncePeer streams the test controls. On each registration it offers the parents the test
// set (with the task's layout); it answers digest requests with "no digest to be had" (pieces are
// accepted on CRC32C, see PeerTask::VerifyPieceLocked) and otherwise stays silent, so reschedule
// requests get no new parent. DropStreams() ends every open stream, as a scheduler crash does;
// Push() sends a response of the test's own (re-planning) on every open stream.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "scheduler.grpc.pb.h"

namespace df::testing {

class FakeScheduler final : public df::scheduler::v1::Scheduler::Service {
 public:
  FakeScheduler() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeScheduler() override {
    DropStreams();
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Offered to every peer that registers from now on, with the task's layout.
  void SetParents(std::vector<df::scheduler::v1::CandidateParent> parents, int64_t content_length,
                  uint64_t piece_length) {
    std::lock_guard<std::mutex> l(mu_);
    parents_ = std::move(parents);
    content_length_ = content_length;
    piece_length_ = piece_length;
  }
  // Ends every open AnnouncePeer stream (the peers see their stream close).
  void DropStreams() {
    std::lock_guard<std::mutex> l(mu_);
    ++generation_;
    cv_.notify_all();
  }
  // Sends `resp` on every open stream that registered; the number of streams it went to.
  int Push(const df::scheduler::v1::AnnouncePeerResponse& resp) {
    std::lock_guard<std::mutex> l(mu_);
    std::lock_guard<std::mutex> wl(write_mu_);
    int sent = 0;
    for (Stream* stream : registered_) sent += stream->Write(resp) ? 1 : 0;
    return sent;
  }
  // Waits until `n` registrations arrived or `timeout` passes.
  bool WaitRegistrations(int n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return registrations_ >= n; });
  }
  int registrations() {
    std::lock_guard<std::mutex> l(mu_);
    return registrations_;
  }

  grpc::Status AnnouncePeer(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<df::scheduler::v1::AnnouncePeerResponse,
                               df::scheduler::v1::AnnouncePeerRequest>* stream) override {
    uint64_t generation;
    {
      std::lock_guard<std::mutex> l(mu_);
      generation = generation_;
    }
    // Reads on a thread of its own so that DropStreams() can end the call while a read blocks.
    std::thread reader([&] { Read(stream); });
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return generation_ != generation || reader_done_.count(stream) > 0; });
    }
    ctx->TryCancel();  // unblocks the reader when the stream is dropped
    reader.join();
    std::lock_guard<std::mutex> l(mu_);
    reader_done_.erase(stream);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "dropped");
  }

 private:
  using Stream = grpc::ServerReaderWriter<df::scheduler::v1::AnnouncePeerResponse,
                                          df::scheduler::v1::AnnouncePeerRequest>;

  void Read(Stream* stream) {
    df::scheduler::v1::AnnouncePeerRequest req;
    while (stream->Read(&req)) {
      df::scheduler::v1::AnnouncePeerResponse resp;
      if (req.has_register_()) {
        std::lock_guard<std::mutex> l(mu_);
        ++registrations_;
        registered_.insert(stream);
        cv_.notify_all();
        auto* normal = resp.mutable_normal_task();
        for (const auto& p : parents_) *normal->add_candidate_parents() = p;
        normal->mutable_task()->set_content_length(content_length_);
        normal->mutable_task()->set_piece_length(piece_length_);
      } else if (req.has_piece_digests_request()) {
        resp.mutable_piece_digests()->set_first_piece(req.piece_digests_request().first_piece());
        resp.mutable_piece_digests()->set_expected(false);
      } else {
        continue;
      }
      std::lock_guard<std::mutex> wl(write_mu_);
      stream->Write(resp);
    }
    std::lock_guard<std::mutex> l(mu_);
    registered_.erase(stream);
    reader_done_.insert(stream);
    cv_.notify_all();
  }

  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<df::scheduler::v1::CandidateParent> parents_;  // GUARDED_BY(mu_)
  int64_t content_length_ = -1;                              // GUARDED_BY(mu_)
  uint64_t piece_length_ = 0;                                // GUARDED_BY(mu_)
  uint64_t generation_ = 0;                                  // GUARDED_BY(mu_)
  int registrations_ = 0;                                    // GUARDED_BY(mu_)
  std::set<Stream*> reader_done_;                            // GUARDED_BY(mu_)
  std::set<Stream*> registered_;  // GUARDED_BY(mu_) open streams that registered
};

}  // namespace df::testing
