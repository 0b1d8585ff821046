// SyncPieces served on gRPC's callback API: an availability stream holds no thread.
//
// A child keeps one SyncPieces stream open per parent for as long as it downloads, and anyone who
// can reach the upload port can open more. On the synchronous server every open stream held a
// thread blocked in WaitForAvailability, so a flood of streams grew the daemon to thousands of
// threads or, under a thread cap, refused real children. Here a stream is a small reactor:
//   - the task's storage calls a listener when availability changes (a piece committed, a
//     receive's first bytes, the size learned, the task deleted), which marks the stream due;
//   - one pump thread sends each due stream what it has not seen, one message in flight per
//     stream (what arrives meanwhile goes in the next message);
//   - every kTickMs the pump also looks at every stream for what no listener reports: the task
//     failed here, its content file was removed by hand.
// The stream ends as before: OK once the task is done here and the child was told so,
// CANCELLED when the child goes away, NOT_FOUND when the task is deleted, UNAVAILABLE when this
// parent's download of it failed or the daemon shuts down.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "daemon/task_manager.h"
#include "dfdaemon.grpc.pb.h"
#include "storage/piece_store.h"

namespace df {

class AvailabilityStreams {
 public:
  // Open streams beyond this many are refused with RESOURCE_EXHAUSTED. A stream costs a few KiB
  // (no thread): the cap only bounds memory under a flood.
  static constexpr size_t kDefaultMaxStreams = 16384;
  // How often every stream is checked for what no listener reports.
  static constexpr int kTickMs = 500;

  // `manager` and `store` outlive this object. Starts the pump thread.
  AvailabilityStreams(TaskManager* manager, PieceStore* store,
                      size_t max_streams = kDefaultMaxStreams);
  // Stop(), then waits until gRPC is done with every stream (the server must be shut down, or
  // shutting down, so that no new stream opens).
  ~AvailabilityStreams();
  AvailabilityStreams(const AvailabilityStreams&) = delete;
  AvailabilityStreams& operator=(const AvailabilityStreams&) = delete;

  // The reactor of a new stream for `req`, whose caller and task id were already checked. gRPC
  // owns the reactor until its OnDone.
  grpc::ServerWriteReactor<df::dfdaemon::v1::PieceAvailability>* Open(
      const df::dfdaemon::v1::SyncPiecesRequest& req);

  // A reactor that finishes with `status` at once (a stream refused before it starts).
  static grpc::ServerWriteReactor<df::dfdaemon::v1::PieceAvailability>* Refuse(
      const grpc::Status& status);

  // Ends every open stream with UNAVAILABLE and refuses new ones. Returns at once; idempotent.
  void Stop();

  // Streams gRPC has not finished with yet.
  size_t open() const;

 private:
  class Stream;
  // Marks `stream` due and wakes the pump. Never dereferences `stream`.
  void Wake(const Stream* stream);
  // Called from a stream's OnDone: the pump drops it.
  void Retire(const Stream* stream);
  void Run();

  TaskManager* const manager_;
  PieceStore* const store_;
  const size_t max_streams_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // the pump waits on it
  std::condition_variable done_cv_;  // the destructor waits on it for streams_ to empty
  bool stopping_ = false;            // GUARDED_BY(mu_): Stop() was called
  bool quit_ = false;                // GUARDED_BY(mu_): the pump returns
  std::unordered_map<const Stream*, std::shared_ptr<Stream>> streams_;  // GUARDED_BY(mu_)
  std::unordered_set<const Stream*> due_;                               // GUARDED_BY(mu_)
  std::thread pump_;
};

}  // namespace df
