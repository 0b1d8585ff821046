// The scheduler's handle on one peer's AnnouncePeer stream: where its responses go.
//
// Implemented by the gRPC reactor (service.cc); tests may implement it to record responses.
#pragma once

#include "scheduler.pb.h"

namespace df::scheduler {

// Thread-safe. Send never blocks and never calls back into the Scheduler, so the Scheduler may
// call it while holding its own mutex (the stream's lock is a leaf).
class PeerStream {
 public:
  virtual ~PeerStream() = default;

  // Queues `response` for the peer, in order. Returns false (and drops it) when the stream is
  // closed or closing.
  virtual bool Send(const df::scheduler::v1::AnnouncePeerResponse& response) = 0;
};

}  // namespace df::scheduler
