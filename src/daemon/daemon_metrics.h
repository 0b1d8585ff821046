// The daemon's Prometheus series, registered once in the process's registry (MetricsServer) so
// that the paths that count only increment. Names follow Prometheus conventions: the one `df_`
// prefix of every binary, `_total` on counters, units in the name (`_bytes`, `_seconds`); the
// README's "Metrics" table lists them with their labels. Thread-safe (prometheus-cpp metrics are
// atomic, Family::Add locks). The registry must outlive this object.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <array>
#include <string>

#include "storage/piece_store.h"

namespace df {

struct DaemonMetrics {
  explicit DaemonMetrics(prometheus::Registry& registry);

  // Downloads (the task manager's counts, mirrored by the daemon's housekeeping).
  prometheus::Counter& tasks_started;
  prometheus::Counter& tasks_succeeded;
  prometheus::Family<prometheus::Counter>& tasks_failed;  // {reason}: a status code name
  prometheus::Gauge& running_tasks;
  prometheus::Counter& downloaded_from_peers;   // df_daemon_download_bytes_total{source="peer"}
  prometheus::Counter& downloaded_from_origin;  // {source="origin"}
  // Counted where they happen (PeerTask, through DaemonContext).
  prometheus::Family<prometheus::Counter>& piece_failures;  // {source, reason}
  prometheus::Family<prometheus::Counter>& back_to_source;  // {reason}: kBackToSource* below
  prometheus::Counter& endgame_duplicate_bytes;
  // Uploads (the piece server's counts, mirrored by housekeeping).
  prometheus::Counter& uploaded_bytes;
  prometheus::Counter& forwarded_pieces;
  prometheus::Gauge& concurrent_uploads;
  prometheus::Gauge& availability_streams;  // SyncPieces streams open (children following us)
  prometheus::Gauge& server_connections;    // df_daemon_piece_connections{side="server"}
  prometheus::Gauge& client_connections;    // {side="client"}: this host's connections to parents
  prometheus::Counter& closed_protocol_error;  // df_daemon_piece_server_closed_connections_total
  prometheus::Counter& closed_request_timeout;
  prometheus::Counter& closed_evicted;
  // Storage.
  prometheus::Gauge& storage_bytes;
  // Tasks the storage GC evicted and their bytes (the store's counts, mirrored by housekeeping),
  // indexed by EvictionReason: df_daemon_evictions_total{reason} and
  // df_daemon_evicted_bytes_total{reason}.
  std::array<prometheus::Counter*, kEvictionReasons> evictions{};
  std::array<prometheus::Counter*, kEvictionReasons> evicted_bytes{};
};

// The bounded values of df_daemon_back_to_source_total's `reason` label.
inline constexpr const char* kBackToSourceNoScheduler = "no_scheduler";
inline constexpr const char* kBackToSourceSchedulerUnreachable = "scheduler_unreachable";
inline constexpr const char* kBackToSourceScheduler = "scheduler";  // the scheduler said so
inline constexpr const char* kBackToSourceNoParent = "no_parent";   // none within the timeout

// Moves `counter` up to `total`, a count kept elsewhere that never decreases.
void AdvanceCounter(prometheus::Counter& counter, double total);

}  // namespace df
