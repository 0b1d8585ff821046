// A misbehaving parent for end-to-end tests: a real PieceStore holding the task, served by the
// real PieceServer, with an availability service that claims every piece, announced to a real
// dfscheduler as a host whose peer finished the task.
//   - A liar (the default): the content is the origin's bytes with one byte in every 4 KiB
//     flipped and CRC32Cs that match the flipped bytes. Only the origin digests can catch it.
//   - A slow parent (lie = false, upload_rate_bytes_per_sec > 0): the origin's bytes, trickled
//     at that rate over connections that stay open. Only endgame gets a child past it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/status.h"
#include "daemon/piece_server.h"
#include "dfdaemon.grpc.pb.h"
#include "scheduler.grpc.pb.h"
#include "storage/piece_store.h"

namespace df::testing {

struct FakeParentOptions {
  bool lie = true;                         // flip bytes (with matching CRCs)
  uint64_t upload_rate_bytes_per_sec = 0;  // shared by all connections; 0 = unlimited
  std::string name = "liar";               // host name; the host id is NAME-127.0.0.1
  // False: availability streams carry the layout and no piece, and stay open until the child
  // cancels them (a parent whose own download stalled).
  bool announce_pieces = true;
};

class FakeParent final : public df::dfdaemon::v1::DfdaemonUpload::Service {
 public:
  // Builds its copy of `origin_file` (task `task_id` of `url`, computed with `piece_length`)
  // under `dir`.
  FakeParent(const std::string& dir, const std::string& origin_file, std::string task_id,
             std::string url, uint64_t size, uint64_t piece_length, FakeParentOptions options = {})
      : task_id_(std::move(task_id)),
        url_(std::move(url)),
        size_(size),
        piece_(piece_length),
        options_(std::move(options)) {
    store_ = PieceStore::Open(dir).value();
    TaskMeta meta;
    meta.task_id = task_id_;
    meta.url = url_;
    auto storage = store_->OpenTask(meta).value();
    ok_ = storage->SetContentLength(static_cast<int64_t>(size_), piece_).ok();
    std::ifstream in(origin_file, std::ios::binary);
    std::vector<char> buf(piece_);
    for (uint32_t i = 0; ok_ && i < pieces(); ++i) {
      uint64_t len = std::min<uint64_t>(piece_, size_ - i * piece_);
      in.read(buf.data(), static_cast<std::streamsize>(len));
      for (size_t b = 0; options_.lie && b < len; b += 4096) buf[b] ^= 0x5a;
      ok_ = ::pwrite(storage->content_fd(), buf.data(), len, static_cast<off_t>(i * piece_)) ==
                static_cast<ssize_t>(len) &&
            storage->CommitPiece(PieceNumber{i}, Crc32c(buf.data(), len)).ok();
    }
    PieceServerOptions popts;
    popts.ip = "127.0.0.1";
    popts.port = 0;
    popts.upload_rate_bytes_per_sec = options_.upload_rate_bytes_per_sec;
    PieceStore* store = store_.get();
    pieces_ = std::make_unique<PieceServer>(
        popts, [store](const std::string& id) { return store->FindTask(id); });
    ok_ = ok_ && pieces_->Start().ok();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &grpc_port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    ok_ = ok_ && server_ != nullptr;
  }

  ~FakeParent() override {
    if (peer_) {
      peer_->WritesDone();
      peer_ctx_.TryCancel();
      (void)peer_->Finish();
    }
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    if (pieces_) pieces_->Stop();
  }

  bool ok() const { return ok_; }
  uint32_t pieces() const { return static_cast<uint32_t>((size_ + piece_ - 1) / piece_); }
  uint64_t pieces_uploaded() const { return pieces_->pieces_uploaded(); }
  uint64_t pieces_requested() const { return pieces_->pieces_requested(); }
  uint16_t grpc_port() const { return static_cast<uint16_t>(grpc_port_); }
  uint16_t piece_port() const { return pieces_->port(); }
  std::string peer_id() const { return options_.name + "-peer"; }
  std::string host_id() const { return options_.name + "-127.0.0.1"; }
  // Waits until `n` availability streams were opened (`ended`: ended) or `timeout` passes.
  bool WaitStreams(int n, bool ended, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return (ended ? streams_ended_ : streams_) >= n; });
  }

  // Announces the host and a peer that finished the task to the scheduler at 127.0.0.1:port,
  // so that the scheduler offers it as a parent.
  Status Join(uint16_t scheduler_port) {
    stub_ = df::scheduler::v1::Scheduler::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(scheduler_port), grpc::InsecureChannelCredentials()));
    df::scheduler::v1::AnnounceHostRequest host;
    auto* h = host.mutable_host();
    h->set_id(host_id());
    h->set_hostname(options_.name);
    h->set_ip("127.0.0.1");
    h->set_grpc_port(grpc_port_);
    h->set_piece_port(pieces_->port());
    h->set_concurrent_upload_limit(16);
    h->set_upload_rate_limit_bytes_per_sec(1'000'000'000);
    grpc::ClientContext ctx;
    df::scheduler::v1::AnnounceHostResponse resp;
    grpc::Status s = stub_->AnnounceHost(&ctx, host, &resp);
    if (!s.ok()) return Unavailable("announce: " + s.error_message());
    peer_ = stub_->AnnouncePeer(&peer_ctx_);
    df::scheduler::v1::AnnouncePeerRequest r;
    r.set_host_id(host_id());
    r.set_peer_id(options_.name + "-peer");
    r.set_task_id(task_id_);
    auto* reg = r.mutable_register_();
    reg->set_host_id(host_id());
    reg->set_peer_id(options_.name + "-peer");
    reg->mutable_task()->set_task_id(task_id_);
    reg->mutable_task()->set_url(url_);
    // The task id must be the one this spec implies (the scheduler recomputes it): callers
    // compute it with this piece length.
    reg->mutable_task()->set_piece_length(piece_);
    for (uint32_t i = 0; i < pieces(); ++i) reg->add_finished_pieces(i);
    if (!peer_->Write(r)) return Unavailable("register");
    df::scheduler::v1::AnnouncePeerRequest done;
    done.set_host_id(host_id());
    done.set_peer_id(options_.name + "-peer");
    done.set_task_id(task_id_);
    done.mutable_peer_finished()->set_content_length(static_cast<int64_t>(size_));
    done.mutable_peer_finished()->set_total_pieces(pieces());
    if (!peer_->Write(done)) return Unavailable("finished");
    return Status::Ok();
  }

  grpc::Status SyncPieces(grpc::ServerContext* ctx, const df::dfdaemon::v1::SyncPiecesRequest*,
                          grpc::ServerWriter<df::dfdaemon::v1::PieceAvailability>* w) override {
    df::dfdaemon::v1::PieceAvailability a;
    a.set_content_length(static_cast<int64_t>(size_));
    a.set_piece_length(piece_);
    a.set_total_pieces(pieces());
    for (uint32_t i = 0; options_.announce_pieces && i < pieces(); ++i) a.add_piece_numbers(i);
    a.set_done(options_.announce_pieces);
    w->Write(a);
    Count(streams_);
    // Polls: the synchronous server has no wake-up for a cancelled call.
    while (!options_.announce_pieces && !ctx->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Count(streams_ended_);
    return grpc::Status::OK;
  }

 private:
  void Count(int& counter) {
    std::lock_guard<std::mutex> l(mu_);
    ++counter;
    cv_.notify_all();
  }

  const std::string task_id_, url_;
  const uint64_t size_, piece_;
  const FakeParentOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  int streams_ = 0;        // GUARDED_BY(mu_)
  int streams_ended_ = 0;  // GUARDED_BY(mu_)
  bool ok_ = false;
  std::unique_ptr<PieceStore> store_;
  std::unique_ptr<PieceServer> pieces_;
  int grpc_port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<df::scheduler::v1::Scheduler::Stub> stub_;
  grpc::ClientContext peer_ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<df::scheduler::v1::AnnouncePeerRequest,
                                           df::scheduler::v1::AnnouncePeerResponse>>
      peer_;
};

using LyingParent = FakeParent;

}  // namespace df::testing
