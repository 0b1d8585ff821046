// SchedulerSession: one peer's AnnouncePeer stream to the scheduler of its task.
//
// It owns the stream and its reader thread, nothing about the download: the PeerTask builds the
// registration (what it holds), and hears every response and the end of the stream through two
// callbacks. After a loss the PeerTask decides when to Open() again (backoff); Open() goes to
// the task's scheduler as SchedulerClient picks it then, so a task moves to the next scheduler
// while its own is down.
//
// Threads: Open() and Close() from one thread (the PeerTask's controller); Send() from any
// thread; the callbacks run on the reader thread. Send() never takes a lock the callbacks may
// hold while waiting on it, so a callback may Send().
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/scheduler_client.h"
#include "scheduler.grpc.pb.h"

namespace df {

class SchedulerSession {
 public:
  using OnResponse = std::function<void(const df::scheduler::v1::AnnouncePeerResponse&)>;
  // The stream ended while open (the scheduler closed it, crashed or is unreachable); not called
  // for an end that Close() asked for.
  using OnEnd = std::function<void()>;

  // `client` outlives the session. Every request sent carries the three ids.
  SchedulerSession(SchedulerClient* client, std::string task_id, std::string host_id,
                   std::string peer_id, OnResponse on_response, OnEnd on_end);
  ~SchedulerSession();  // Close()
  SchedulerSession(const SchedulerSession&) = delete;
  SchedulerSession& operator=(const SchedulerSession&) = delete;

  // Opens a stream to the task's scheduler and sends `registration` on it (the ids are set
  // here); the reader starts. A previous stream must have ended (its reader is joined first).
  // False when the scheduler cannot be reached: that scheduler is marked failed.
  bool Open(df::scheduler::v1::AnnouncePeerRequest registration);
  // Sends on the current stream; dropped when there is none (lost, not yet open, closed).
  void Send(df::scheduler::v1::AnnouncePeerRequest& req);
  // True between a successful Open() and the end of its stream.
  bool open() const;
  // The scheduler of the current (or last) stream; empty before the first Open().
  std::string address() const;
  // Counts the current scheduler as failed (the task moves while it is): after a lost stream.
  void MarkSchedulerFailed();
  // Half-closes the stream, waits up to `grace` for the scheduler to close its side, then
  // cancels it and joins the reader. Idempotent.
  void Close(std::chrono::milliseconds grace = std::chrono::seconds(2));

 private:
  using Stream = grpc::ClientReaderWriter<df::scheduler::v1::AnnouncePeerRequest,
                                          df::scheduler::v1::AnnouncePeerResponse>;
  void Read(Stream* stream);
  // Releases the last stream (its reader has returned): Finish, then the stream, then its
  // context.
  void FinishStream();
  void Stamp(df::scheduler::v1::AnnouncePeerRequest& req) const;

  SchedulerClient* const client_;
  const std::string task_id_;
  const std::string host_id_;
  const std::string peer_id_;
  const OnResponse on_response_;
  const OnEnd on_end_;

  // One writer at a time; the stream is replaced (Open) only under it as well, so a Send that
  // holds it has a stable stream. A Write may block (flow control): nothing else waits on it.
  std::mutex write_mu_;
  std::unique_ptr<Stream> stream_;  // GUARDED_BY(write_mu_ and mu_ to replace)

  // The state; never held while a callback runs or a Write blocks.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<grpc::ClientContext> context_;   // GUARDED_BY(mu_)
  SchedulerClient::Endpoint* endpoint_ = nullptr;  // GUARDED_BY(mu_)
  bool open_ = false;     // GUARDED_BY(mu_): Open() succeeded and its stream has not ended
  bool reading_ = false;  // GUARDED_BY(mu_): the reader has not returned
  bool closing_ = false;  // GUARDED_BY(mu_): Close() asked for the end
  std::thread reader_;    // Open()/Close() only
};

}  // namespace df
