#include "scheduler/metrics.h"

namespace df::scheduler {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

prometheus::Counter& Counter(prometheus::Registry& r, const std::string& name,
                             const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Counter& BackToSource(prometheus::Registry& r, const std::string& reason) {
  return BuildCounter()
      .Name("df_scheduler_back_to_source_total")
      .Help("NeedBackToSource decisions, by reason")
      .Register(r)
      .Add({{"reason", reason}});
}

prometheus::Counter& Decisions(prometheus::Registry& r, const std::string& outcome) {
  return BuildCounter()
      .Name("df_scheduler_decisions_total")
      .Help("Parent decisions computed, by outcome (sent, unchanged, no_candidates)")
      .Register(r)
      .Add({{"outcome", outcome}});
}

prometheus::Counter& SeedTriggers(prometheus::Registry& r, const std::string& result) {
  return BuildCounter()
      .Name("df_scheduler_seed_triggers_total")
      .Help("TriggerDownloadTask calls to seed hosts, by result")
      .Register(r)
      .Add({{"result", result}});
}

prometheus::Counter& DatasetRows(prometheus::Registry& r, const std::string& file) {
  return BuildCounter()
      .Name("df_scheduler_dataset_rows_total")
      .Help("Rows written to the records dataset, by file")
      .Register(r)
      .Add({{"file", file}});
}

prometheus::Gauge& Gauge(prometheus::Registry& r, const std::string& name,
                         const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

SchedulerMetrics::SchedulerMetrics(prometheus::Registry& r)
    : host_announces(Counter(r, "df_scheduler_host_announces_total", "AnnounceHost calls")),
      registered_peers(
          Counter(r, "df_scheduler_registered_peers_total", "Peers registered over AnnouncePeer")),
      schedule_latency_seconds(
          BuildHistogram()
              .Name("df_scheduler_schedule_latency_seconds")
              .Help("Time from a register message to the scheduler's first decision")
              .Register(r)
              .Add({}, prometheus::Histogram::BucketBoundaries{25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
                                                               1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
                                                               100e-3, 1})),
      pushes(Counter(r, "df_scheduler_parent_pushes_total",
                     "NormalTaskResponses pushed to peers after their register")),
      back_to_source_seed(BackToSource(r, "seed")),
      back_to_source_no_seed(BackToSource(r, "no_seed")),
      back_to_source_timeout(BackToSource(r, "timeout")),
      back_to_source_reschedule(BackToSource(r, "reschedule")),
      empty_tasks(Counter(r, "df_scheduler_empty_tasks_total", "EmptyTaskResponses sent")),
      seed_triggers_sent(SeedTriggers(r, "sent")),
      seed_triggers_failed(SeedTriggers(r, "failed")),
      decisions_sent(Decisions(r, "sent")),
      decisions_unchanged(Decisions(r, "unchanged")),
      decisions_no_candidates(Decisions(r, "no_candidates")),
      decision_duration_seconds(
          BuildHistogram()
              .Name("df_scheduler_decision_duration_seconds")
              .Help("Time to compute one parent decision (filter, evaluate, choose)")
              .Register(r)
              .Add({}, prometheus::Histogram::BucketBoundaries{5e-6, 10e-6, 25e-6, 50e-6, 100e-6,
                                                               250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3,
                                                               10e-3, 25e-3, 100e-3})),
      hosts(Gauge(r, "df_scheduler_hosts", "Hosts known to the scheduler")),
      tasks(Gauge(r, "df_scheduler_tasks", "Tasks known to the scheduler")),
      peers(Gauge(r, "df_scheduler_peers", "Peers known to the scheduler")),
      store_up(Gauge(r, "df_scheduler_store_up",
                     "1 while the shared store answers; 0 while this scheduler works from its "
                     "memory alone")),
      store_errors(Counter(r, "df_scheduler_store_errors_total",
                           "Store calls that failed (their work is retried next round)")),
      dataset_download_rows(DatasetRows(r, "download")),
      dataset_topology_rows(DatasetRows(r, "networktopology")),
      dataset_errors(Counter(r, "df_scheduler_dataset_errors_total",
                             "Records dataset writes (or store reads) that failed; their rows are "
                             "dropped")),
      dataset_dropped(Counter(r, "df_scheduler_dataset_dropped_rows_total",
                              "Records dataset rows dropped because the writer fell behind")),
      peer_messages_(BuildCounter()
                         .Name("df_scheduler_peer_announces_total")
                         .Help("AnnouncePeer messages received, by type")
                         .Register(r)),
      msg_register_(peer_messages_.Add({{"type", "register"}})),
      msg_piece_finished_(peer_messages_.Add({{"type", "piece_finished"}})),
      msg_piece_failed_(peer_messages_.Add({{"type", "piece_failed"}})),
      msg_task_metadata_(peer_messages_.Add({{"type", "task_metadata"}})),
      msg_peer_finished_(peer_messages_.Add({{"type", "peer_finished"}})),
      msg_peer_failed_(peer_messages_.Add({{"type", "peer_failed"}})),
      msg_back_to_source_started_(peer_messages_.Add({{"type", "back_to_source_started"}})),
      msg_reschedule_(peer_messages_.Add({{"type", "reschedule"}})),
      msg_piece_digests_request_(peer_messages_.Add({{"type", "piece_digests_request"}})),
      msg_unknown_(peer_messages_.Add({{"type", "unknown"}})) {}

void SchedulerMetrics::CountPeerMessage(df::scheduler::v1::AnnouncePeerRequest::RequestCase type) {
  using R = df::scheduler::v1::AnnouncePeerRequest;
  switch (type) {
    case R::kRegister:
      msg_register_.Increment();
      return;
    case R::kPieceFinished:
      msg_piece_finished_.Increment();
      return;
    case R::kPieceFailed:
      msg_piece_failed_.Increment();
      return;
    case R::kTaskMetadata:
      msg_task_metadata_.Increment();
      return;
    case R::kPeerFinished:
      msg_peer_finished_.Increment();
      return;
    case R::kPeerFailed:
      msg_peer_failed_.Increment();
      return;
    case R::kBackToSourceStarted:
      msg_back_to_source_started_.Increment();
      return;
    case R::kReschedule:
      msg_reschedule_.Increment();
      return;
    case R::kPieceDigestsRequest:
      msg_piece_digests_request_.Increment();
      return;
    case R::REQUEST_NOT_SET:
      break;
  }
  msg_unknown_.Increment();
}

}  // namespace df::scheduler
