// The scheduler's Prometheus metrics, registered in the process's registry (MetricsServer).
// Counters are resolved once here so that the hot path only increments. Thread-safe
// (prometheus-cpp metrics are atomic). The registry must outlive this object.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "scheduler.pb.h"

namespace df::scheduler {

struct SchedulerMetrics {
  explicit SchedulerMetrics(prometheus::Registry& registry);

  // One AnnouncePeer message received, by oneof case.
  void CountPeerMessage(df::scheduler::v1::AnnouncePeerRequest::RequestCase type);

  prometheus::Counter& host_announces;
  prometheus::Counter& registered_peers;
  prometheus::Histogram& schedule_latency_seconds;  // register received -> first decision sent
  prometheus::Counter& pushes;                      // NormalTaskResponses pushed after register
  prometheus::Counter& back_to_source_seed;         // a seed peer fetches from the origin
  prometheus::Counter& back_to_source_no_seed;      // no seed host: a normal peer fetches
  prometheus::Counter& back_to_source_timeout;      // no parent within schedule_timeout
  prometheus::Counter& back_to_source_reschedule;   // reschedule found no parent
  prometheus::Counter& empty_tasks;
  prometheus::Counter& seed_triggers_sent;
  prometheus::Counter& seed_triggers_failed;

  // Parent decisions (one evaluation of a child's candidates), by outcome, and the time each
  // took to compute (selection only, not sending).
  prometheus::Counter& decisions_sent;           // new parents sent to the child
  prometheus::Counter& decisions_unchanged;      // the same parents: nothing sent
  prometheus::Counter& decisions_no_candidates;  // no parent could be chosen
  prometheus::Histogram& decision_duration_seconds;

  prometheus::Gauge& hosts;
  prometheus::Gauge& tasks;
  prometheus::Gauge& peers;
  prometheus::Gauge& store_up;        // 1 while the shared store answers (store_sync.h)
  prometheus::Counter& store_errors;  // store calls that failed
  // The records dataset (dataset_writer.h).
  prometheus::Counter& dataset_download_rows;  // rows written to download*.csv
  prometheus::Counter& dataset_topology_rows;  // rows written to networktopology*.csv
  prometheus::Counter& dataset_errors;         // failed file writes or store reads
  prometheus::Counter& dataset_dropped;        // rows dropped: the writer's queue was full

 private:
  prometheus::Family<prometheus::Counter>& peer_messages_;
  prometheus::Counter& msg_register_;
  prometheus::Counter& msg_piece_finished_;
  prometheus::Counter& msg_piece_failed_;
  prometheus::Counter& msg_task_metadata_;
  prometheus::Counter& msg_peer_finished_;
  prometheus::Counter& msg_peer_failed_;
  prometheus::Counter& msg_back_to_source_started_;
  prometheus::Counter& msg_reschedule_;
  prometheus::Counter& msg_piece_digests_request_;
  prometheus::Counter& msg_unknown_;
};

}  // namespace df::scheduler
