#include "daemon/daemon_metrics.h"

namespace df {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;

prometheus::Counter& Counter(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Gauge& Gauge(prometheus::Registry& r, const std::string& name,
                         const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Family<prometheus::Counter>& Downloaded(prometheus::Registry& r) {
  return BuildCounter()
      .Name("df_daemon_download_bytes_total")
      .Help("Piece bytes downloaded, by source (peer or origin)")
      .Register(r);
}

prometheus::Family<prometheus::Gauge>& Connections(prometheus::Registry& r) {
  return BuildGauge()
      .Name("df_daemon_piece_connections")
      .Help("Open piece-protocol connections: side=server from children, side=client to parents")
      .Register(r);
}

prometheus::Counter& Closed(prometheus::Registry& r, const std::string& reason) {
  return BuildCounter()
      .Name("df_daemon_piece_server_closed_connections_total")
      .Help("Piece server connections closed by the server, by reason")
      .Register(r)
      .Add({{"reason", reason}});
}

}  // namespace

DaemonMetrics::DaemonMetrics(prometheus::Registry& r)
    : tasks_started(Counter(r, "df_daemon_tasks_started_total",
                            "Downloads started (a client joining a running one starts none)")),
      tasks_succeeded(Counter(r, "df_daemon_tasks_succeeded_total",
                              "Downloads finished with every piece, counted when forgotten")),
      tasks_failed(BuildCounter()
                       .Name("df_daemon_tasks_failed_total")
                       .Help("Downloads failed or cancelled, by reason (a status code name)")
                       .Register(r)),
      running_tasks(Gauge(r, "df_daemon_running_tasks", "Downloads in progress")),
      downloaded_from_peers(Downloaded(r).Add({{"source", "peer"}})),
      downloaded_from_origin(Downloaded(r).Add({{"source", "origin"}})),
      piece_failures(BuildCounter()
                         .Name("df_daemon_piece_failures_total")
                         .Help("Piece fetches that failed, by source (peer or origin) and reason "
                               "(a status code name: DataLoss, DeadlineExceeded, Unavailable...)")
                         .Register(r)),
      back_to_source(BuildCounter()
                         .Name("df_daemon_back_to_source_total")
                         .Help("Downloads that went to the origin themselves, by reason "
                               "(no_scheduler, scheduler_unreachable, scheduler, no_parent)")
                         .Register(r)),
      endgame_duplicate_bytes(Counter(r, "df_daemon_endgame_duplicate_bytes_total",
                                      "Piece bytes received a second time by endgame")),
      uploaded_bytes(Counter(r, "df_daemon_upload_bytes_total", "Piece bytes served to children")),
      forwarded_pieces(Counter(r, "df_daemon_forwarded_pieces_total",
                               "Pieces served while still arriving here (cut-through)")),
      concurrent_uploads(Gauge(r, "df_daemon_concurrent_uploads", "Pieces being served now")),
      availability_streams(Gauge(r, "df_daemon_availability_streams",
                                 "SyncPieces streams open: children following this host's pieces")),
      server_connections(Connections(r).Add({{"side", "server"}})),
      client_connections(Connections(r).Add({{"side", "client"}})),
      closed_protocol_error(Closed(r, "protocol_error")),
      closed_request_timeout(Closed(r, "request_timeout")),
      closed_evicted(Closed(r, "evicted")),
      storage_bytes(Gauge(r, "df_daemon_storage_bytes",
                          "Content bytes of the tasks in storage (their sizes)")) {
  auto& tasks = BuildCounter()
                    .Name("df_daemon_evictions_total")
                    .Help("Tasks the storage GC deleted, by reason (ttl, disk_high_watermark)")
                    .Register(r);
  auto& bytes = BuildCounter()
                    .Name("df_daemon_evicted_bytes_total")
                    .Help("Content bytes of the tasks the storage GC deleted, by reason")
                    .Register(r);
  for (size_t i = 0; i < kEvictionReasons; ++i) {
    const char* reason = EvictionReasonName(static_cast<EvictionReason>(i));
    evictions[i] = &tasks.Add({{"reason", reason}});
    evicted_bytes[i] = &bytes.Add({{"reason", reason}});
  }
}

void AdvanceCounter(prometheus::Counter& counter, double total) {
  if (double delta = total - counter.Value(); delta > 0) counter.Increment(delta);
}

}  // namespace df
