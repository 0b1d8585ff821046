// StoreSync: moves what this scheduler learns into the shared Store, and what other schedulers
// learned out of it, on a thread of its own, so that no Store I/O (Redis) ever happens on a
// scheduling path or under the Scheduler's mutex.
//
// Outbound (queued by the Scheduler, written every `interval`): announced hosts, hosts that are
// gone, and bandwidth records (the dataset, bounded by `max_records` in the store). Each round
// it also asks the Scheduler for its learned capacities and pair estimates (export hooks) and
// writes them. Inbound (each round): the learned capacities in the store, handed to the import
// hook (the Scheduler adopts them for hosts it has not observed itself).
//
// With the store down, rounds fail, nothing blocks: the scheduler keeps scheduling from memory,
// the failure is logged once per outage and shown by df_scheduler_store_up (0) and
// df_scheduler_store_errors_total; queued writes are kept (records up to `max_pending_records`,
// oldest dropped first) and written when the store returns.
//
// Thread-safe: the queueing methods may be called from any thread (one leaf mutex); hooks are
// called on the sync thread without any lock of this class held.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

#include "scheduler.pb.h"
#include "scheduler/store.h"

namespace df::scheduler {

class StoreSync {
 public:
  struct Options {
    std::chrono::milliseconds interval{500};  // a write seen by another scheduler within ~1 s
    size_t max_pending_records = 100'000;     // kept while the store is down
    size_t max_records = 1'000'000;           // the dataset's bound in the store
  };
  struct Hooks {
    std::function<std::vector<LearnedCapacity>()> export_capacities;
    std::function<std::vector<PairEstimate>()> export_pairs;
    std::function<void(const std::vector<LearnedCapacity>&)> import_capacities;
  };

  // `store`, `up` and `errors` must outlive this object. `up` is set to 1 while the store
  // answers, 0 while it does not; `errors` counts failed store calls.
  StoreSync(Store* store, Hooks hooks, Options options, prometheus::Gauge& up,
            prometheus::Counter& errors);
  ~StoreSync();  // stops the thread (one last round is not attempted)
  StoreSync(const StoreSync&) = delete;
  StoreSync& operator=(const StoreSync&) = delete;

  void Start();
  void Stop();

  void PutHost(const df::scheduler::v1::Host& host);
  void DeleteHost(const std::string& host_id);
  void AddRecord(BandwidthRecord record);

  // Runs one round now on the caller's thread (tests); true when every store call succeeded.
  bool SyncOnce();
  bool store_up() const;

 private:
  struct Pending {
    std::unordered_map<std::string, df::scheduler::v1::Host> hosts;
    std::unordered_set<std::string> deleted;
    std::deque<BandwidthRecord> records;
  };
  void Run();
  bool Flush(Pending& pending);  // writes; what failed is put back
  void Requeue(Pending& pending);
  void SetUp(bool up, const Status& why);

  Store& store_;
  const Hooks hooks_;
  const Options options_;
  prometheus::Gauge& up_gauge_;
  prometheus::Counter& errors_;

  mutable std::mutex mu_;
  std::condition_variable wake_;
  Pending pending_;      // GUARDED_BY(mu_)
  bool up_ = true;       // GUARDED_BY(mu_)
  bool stop_ = false;    // GUARDED_BY(mu_)
  size_t dropped_ = 0;   // GUARDED_BY(mu_): records dropped while the store was down
  std::mutex round_mu_;  // one round at a time (the thread, SyncOnce)
  std::thread thread_;
};

}  // namespace df::scheduler
