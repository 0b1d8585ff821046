// The scheduler's entry point: the AnnouncePeer protocol over a model of hosts, tasks, peers and
// the parent DAG of each task (candidate parents, back to source, empty task). No gRPC server
// types here: the service (service.h) feeds it messages and gives it a PeerStream per peer.
//
// Announce semantics (docs/scheduler.md has the full story):
//   register   -> EmptyTask when the task is known to be empty;
//                 NeedBackToSource for a seed peer while no peer of the task has succeeded;
//                 otherwise candidate parents (NormalTaskResponse) when there are any, else
//                 the peer waits: parents are pushed as soon as candidates appear, or it goes
//                 back to source at once when no seed host exists, or after schedule_timeout
//                 (both within back_to_source_limit per task).
//   A new task with no seed peer triggers a seed host once (again only if its seed peer fails).
//   While a peer has fewer than candidate_parent_limit parents, new candidates are pushed to it
//   as a full NormalTaskResponse, at most once per push_interval.
//
// Code layout: the model (ResourceModel, resource_model.h) and the choice of parents
// (ParentSelector, parent_selector.h) are plain classes without locks; this class owns both and
// the protocol: scheduler.cc (public API, register decisions, responses), scheduler_messages.cc
// (messages after register), scheduler_background.cc (the background thread, GC, capacities,
// store hooks), scheduler_views.cc (read-only views).
//
// Threading: every public method is thread-safe. One mutex (mu_) guards the model, the selector
// and the decisions; each critical section is O(filter_parent_limit) plus O(peers of the task)
// for candidate collection, so one lock is simpler and fast enough at thousands of peers. Lock
// order: mu_ before the leaf locks of PeerStream, BandwidthRecords, StoreSync's and
// DatasetWriter's queues and NetworkTopology. No network or Store I/O happens under mu_: Store
// writes are queued to StoreSync, whose thread calls the Store without mu_ and takes mu_ only in
// its hooks (which copy and return); the SeedTrigger is only called without mu_. A background
// thread pushes parents, times out waiting peers and runs GC; Stop() or the destructor joins it.
//
// Time: every decision reads the injected df::Clock (default SteadyClock), so that tests can
// drive timeouts and TTLs with a ManualClock and RunBackgroundRound(). The background thread
// still wakes on real time (every 20 ms or when woken); the decision latency histogram measures
// real elapsed time (steady_clock).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "scheduler.pb.h"
#include "scheduler/bandwidth_records.h"
#include "scheduler/capacity_estimator.h"
#include "scheduler/config.h"
#include "scheduler/dataset_writer.h"
#include "scheduler/evaluator.h"
#include "scheduler/metrics.h"
#include "scheduler/parent_selector.h"
#include "scheduler/peer_stream.h"
#include "scheduler/resource.h"
#include "scheduler/resource_model.h"
#include "scheduler/seed_trigger.h"
#include "scheduler/store.h"
#include "scheduler/store_sync.h"

namespace df::scheduler {

// Identifies the peer behind one AnnouncePeer stream.
struct PeerKey {
  std::string task_id;
  std::string peer_id;
  std::string host_id;
};

class NetworkTopology;

class Scheduler {
 public:
  // `metrics` is borrowed and must outlive the Scheduler. `seed_trigger` may be null (seed hosts
  // are then never triggered; their dfdaemons may still register seed peers on their own).
  // `store` holds what schedulers share (null: an in-memory store of this process alone).
  // `clock` (null: SteadyClock::Instance()) is what every decision reads the time from
  // (timeouts, TTLs, push intervals, capacity buckets); borrowed, it must outlive the Scheduler.
  Scheduler(SchedulerConfig config, std::unique_ptr<Evaluator> evaluator,
            std::unique_ptr<SeedTrigger> seed_trigger, SchedulerMetrics* metrics,
            std::unique_ptr<Store> store = nullptr, const df::Clock* clock = nullptr);
  // Stops the background thread, then waits for in-flight seed triggers.
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Starts the background threads (pushes, schedule timeouts, GC; store sync). Call once.
  void Start();
  // Joins the background threads; idempotent.
  void Stop();

  Store& store() { return *store_; }
  // Runs one store round now (tests): writes what was learned, reads what others learned.
  bool SyncStore() { return sync_->SyncOnce(); }

  // Adds or refreshes a host. InvalidArgument when the id is empty; ResourceExhausted-like
  // Unavailable when max_hosts hosts are known. `caller_ip` is the address of an
  // unauthenticated caller ("" when the call carried the cluster's token): such a caller may not
  // move a known host to another address unless it calls from the host's current one, so that a
  // stranger cannot redirect a host's children to itself (PermissionDenied).
  Status AnnounceHost(const df::scheduler::v1::Host& host, const std::string& caller_ip = "");
  // Marks every peer of the host Left (no longer a candidate); unknown ids are ignored. An
  // unauthenticated caller (`caller_ip` non-empty) may only remove a host that announced that
  // address (PermissionDenied otherwise).
  Status LeaveHost(const std::string& host_id, const std::string& caller_ip = "");

  // Handles the first message of an AnnouncePeer stream, which must be a register: records the
  // host (a minimal record when it never announced), task and peer, and sends the first decision
  // (if any can be made now) to `stream`. Returns the key later messages of the stream belong
  // to; InvalidArgument when the message is not a register or lacks the host, task or peer id,
  // or its task spec is malformed; PermissionDenied when the task id is not the id of the task
  // spec (task_spec.h: ids are recomputed, never trusted); Unavailable over max_tasks.
  // Registering an existing peer id again replaces its stream and restarts its scheduling.
  Result<PeerKey> RegisterPeer(const df::scheduler::v1::AnnouncePeerRequest& request,
                               std::shared_ptr<PeerStream> stream);

  // Handles a later message of the stream registered as `key`. NotFound when the peer is gone
  // (garbage collected); InvalidArgument for a second register. Messages without a known type
  // are ignored (forward compatibility). Malformed
  // fields inside a message (unknown parent ids, ...) are ignored, never fatal.
  Status HandlePeerMessage(const PeerKey& key,
                           const df::scheduler::v1::AnnouncePeerRequest& request);

  // The stream of `key` closed. When `stream` is still the peer's stream and the peer did not
  // finish or fail, it becomes Left: no longer a candidate, its DAG edges removed.
  void StreamClosed(const PeerKey& key, const PeerStream* stream);

  // Preheat (an operator's request, docs/oci.md): makes sure a seed peer fetches the task
  // `info` describes before any peer asks for it. The id is recomputed from the spec (only
  // http(s) URLs); the task is created when unknown. When no seed peer holds or fetches it yet,
  // the task takes `info` (its URL and headers: fresh credentials) and a seed host is triggered.
  // InvalidArgument for a malformed spec; Unavailable over max_tasks, or when no seed host is
  // known or the task's seed_trigger_attempts are used up.
  enum class PreheatOutcome { kTriggered, kSeeded };
  Result<PreheatOutcome> PreheatTask(const df::scheduler::v1::TaskInfo& info);

  // Counts of one task; NotFound for an unknown task.
  Result<df::scheduler::v1::StatTaskResponse> StatTask(const std::string& task_id) const;

  // Runs one garbage collection pass now, at the clock's time (the background thread runs it
  // every gc_interval).
  void CollectGarbage();
  // Runs one round of the background thread's work now, on the caller's thread, at the clock's
  // time: a capacity refresh and GC when they are due, pushes to hungry peers, schedule
  // timeouts, then the seed triggers this queued. For tests with a ManualClock (Start() need not
  // be called); the background thread runs the same round at every wake-up.
  void RunBackgroundRound();

  // A copy of one peer's scheduling state, for tests and debugging; nullopt when unknown.
  struct PeerSnapshot {
    PeerState state = PeerState::kPending;
    std::vector<std::string> parents;  // sorted
    uint32_t finished_pieces = 0;
  };
  std::optional<PeerSnapshot> GetPeer(const std::string& task_id, const std::string& peer_id) const;
  size_t host_count() const;
  // "" while the background thread is alive (or not started); otherwise why not, for /healthz:
  // its last round ended more than config.background_stall_ms ago, on the real steady clock
  // whatever the injected one says (a lock held too long, a stuck call). Thread-safe, never
  // blocks (reads an atomic, not mu_).
  std::string BackgroundHealth() const;
  // What the scheduler learned of a host's links and what it books with, bytes/s; nullopt for an
  // unknown host.
  struct HostCapacity {
    CapacityEstimator::Learned learned;
    uint64_t upload = 0;    // booked with (0 = unknown)
    uint64_t download = 0;  // booked with (0 = unknown)
    uint64_t booked = 0;    // upload reserved for children, all tasks
  };
  std::optional<HostCapacity> GetHostCapacity(const std::string& host_id) const;
  // Evaluates the piece records that settled by `now` and refreshes every host's capacities
  // (the background thread does this every capacity bucket; tests call it with their clock).
  void RefreshCapacities(Clock::time_point now);
  const BandwidthRecords& records() const { return records_; }
  // The records dataset's writer; null when config.dataset_dir is empty.
  DatasetWriter* dataset() { return dataset_.get(); }

  // Latency probes (network_topology.h). The topology is borrowed (outlives the Scheduler) and
  // set before Start(); without one, evaluators see no RTTs. The Scheduler tells it of hosts it
  // removes (LeaveHost, GC) and reads its in-memory RTTs and failures for ParentInfo.
  void SetNetworkTopology(NetworkTopology* topology);
  // A uniform random sample of at most `sample_size` reachable hosts (announced, not left, with
  // an address and a piece port, seen within host_ttl) other than `src_host_id`
  // (full announced records), for NetworkTopology::AssignTargets. NotFound when src is not an
  // announced host; PermissionDenied when `caller_ip` (non-empty: unauthenticated caller) is not
  // the address src announced. O(hosts) under the mutex (a reservoir sample); no I/O.
  Result<std::vector<df::scheduler::v1::Host>> ProbeCandidates(const std::string& src_host_id,
                                                               const std::string& caller_ip,
                                                               size_t sample_size);
  // A snapshot of every host (announced record and capacities), for the HTTP API.
  struct HostView {
    df::scheduler::v1::Host info;
    HostCapacity capacity;
    std::string inferred_group;  // Host::inferred_group
  };
  std::vector<HostView> ListHosts() const;
  // Learned bandwidth of each (child host, parent host) pair, for the HTTP API.
  std::vector<CapacityEstimator::PairRate> PairRates() const;

 private:
  struct SeedJob {
    df::scheduler::v1::Host seed;
    df::scheduler::v1::TaskInfo task;
  };
  enum class ScheduleOutcome { kNoCandidates, kUnchanged, kSent };

  // Wakes the background thread: hungry peers may have new candidates (requires mu_).
  void WakeBackground();
  // Wall-clock milliseconds since the epoch, for records other processes read.
  static int64_t UnixMs();

  // What a peer may tell about its task (scheduler_messages.cc; require mu_).
  // Records the task's size when `from` may tell it (IsSizeAuthority) and it fits the task
  // spec (task_spec.h); a conflicting or malformed size is logged and ignored.
  void LearnTaskSize(Task& task, const Peer& from, int64_t content_length, uint64_t piece_length,
                     uint32_t total_pieces);
  // True once a peer of the task succeeded and an origin fetcher reported digests.
  static bool HasOriginCopy(const Task& task);
  // Keeps the origin digest a PieceFinished carries when `from` is a size authority.
  void RecordPieceDigest(Task& task, const Peer& from, const df::scheduler::v1::PieceFinished& m);
  // Answers a PieceDigestsRequest with what is known (at most kMaxDigestsPerResponse pieces).
  void SendPieceDigests(const Task& task, Peer& peer,
                        const df::scheduler::v1::PieceDigestsRequest& m);
  static constexpr uint32_t kMaxDigestsPerResponse = 4096;
  // True for peers whose size comes from the origin: seed peers and peers this scheduler sent
  // back to source.
  static bool IsSizeAuthority(const Peer& peer);
  // The piece length the task's spec implies for `content_length`; 0 when none is valid.
  static uint64_t ExpectedPieceLength(const Task& task, int64_t content_length);

  // Decisions (scheduler.cc; require mu_).
  void DecideOnRegister(Task& task, Peer& peer, Clock::time_point now);
  // Selects the child's parents, applies them to the DAG and sends them when they changed (or
  // always with `force_send`).
  ScheduleOutcome ScheduleParents(Task& task, Peer& child, Clock::time_point now, bool force_send);
  void SendBackToSource(Task& task, Peer& peer, const std::string& reason,
                        prometheus::Counter& counter);
  void SendEmptyTask(Task& task, Peer& peer);
  bool CanBackToSource(const Task& task, const Peer& peer) const;
  bool SeedUsableFor(const Task& task, Clock::time_point now) const;
  void MaybeTriggerSeed(Task& task, Clock::time_point now);

  // Messages after register (scheduler_messages.cc; require mu_).
  void OnPieceFinished(Task& task, Peer& peer, const df::scheduler::v1::PieceFinished& m);
  void OnPieceFailed(Task& task, Peer& peer, const df::scheduler::v1::PieceFailed& m);
  void OnPeerFinished(Task& task, Peer& peer, const df::scheduler::v1::PeerFinished& m);
  void OnPeerFailed(Task& task, Peer& peer);
  void OnBackToSourceStarted(Task& task, Peer& peer);
  void OnReschedule(Task& task, Peer& peer, const df::scheduler::v1::RescheduleRequest& m,
                    Clock::time_point now);

  // Background work (scheduler_background.cc).
  void Run();
  // One round at `now`; requires mu_ (held by `lock`), which it releases between decisions and
  // around seed triggers.
  void BackgroundRoundLocked(std::unique_lock<std::mutex>& lock, Clock::time_point now);
  // Requires mu_ (held by `lock`); releases it between decisions.
  void ServeHungryPeers(std::unique_lock<std::mutex>& lock, Clock::time_point now);
  void HandleWaiting(Task& task, Peer& peer, Clock::time_point now);  // requires mu_
  // The model's GC, then forgets what else is known of the removed hosts (requires mu_).
  void CollectGarbageLocked(Clock::time_point now);
  void UpdateGauges();  // requires mu_
  // Sets the host's capacities from its announcement and what was learned; true when one of them
  // moved by more than a tenth (requires mu_).
  bool RefreshHostCapacity(Host& host);
  void RefreshCapacitiesLocked(Clock::time_point now);  // requires mu_
  // Mesh: the peers that join a task's mesh_seed_children widest uplinks, and those outside it
  // that hold a seed as parent, are re-planned (gain or lose the seed). Every capacity refresh;
  // O(peers and their parents of the mesh tasks). Requires mu_.
  void RebalanceSeedChildrenLocked();
  // Applies a new version of the evaluator's inferred host groups (Host::inferred_group), which
  // stand in for the idc of hosts that announce none. Requires mu_.
  void ApplyInferredGroupsLocked();

  // Seed triggers are queued under mu_ and sent after it is released.
  std::vector<SeedJob> TakeSeedJobs();           // requires mu_
  void SendSeedJobs(std::vector<SeedJob> jobs);  // excludes mu_
  void OnSeedTriggerDone(const std::string& task_id, const Status& status);

  // Store hooks (sync thread, called without any lock; they take mu_ and return copies).
  std::vector<LearnedCapacity> ExportCapacities();
  std::vector<PairEstimate> ExportPairs();
  void ImportCapacities(const std::vector<LearnedCapacity>& theirs);

  const SchedulerConfig config_;
  const df::Clock& clock_;
  const std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<SeedTrigger> seed_trigger_;  // reset first in the destructor
  SchedulerMetrics& metrics_;
  BandwidthRecords records_;
  CapacityEstimator capacity_;  // GUARDED_BY(mu_)
  const std::unique_ptr<Store> store_;
  std::unique_ptr<StoreSync> sync_;         // uses store_ and takes mu_ in its hooks
  std::unique_ptr<DatasetWriter> dataset_;  // uses store_; null when off

  mutable std::mutex mu_;
  std::condition_variable wake_;    // signalled when hungry peers may have new candidates, or stop
  ResourceModel model_;             // GUARDED_BY(mu_)
  ParentSelector selector_;         // GUARDED_BY(mu_); reads model_
  std::vector<SeedJob> seed_jobs_;  // GUARDED_BY(mu_)
  std::mt19937_64 rng_;             // GUARDED_BY(mu_)
  bool work_pending_ = false;       // GUARDED_BY(mu_)
  bool stop_ = false;               // GUARDED_BY(mu_)
  Clock::time_point next_gc_;       // GUARDED_BY(mu_)
  Clock::time_point next_capacity_refresh_;  // GUARDED_BY(mu_)
  uint64_t applied_groups_version_ = 0;      // GUARDED_BY(mu_); InferredGroups::version
  Clock::time_point next_gauges_update_;     // GUARDED_BY(mu_)
  // Real (steady) time of the end of the background thread's last round, in ns since the
  // steady clock's epoch; 0 before Start(). Written by that thread, read by BackgroundHealth().
  std::atomic<int64_t> last_round_ns_{0};
  std::thread worker_;
  NetworkTopology* topology_ = nullptr;  // set before Start(); thread-safe on its own
};

}  // namespace df::scheduler
