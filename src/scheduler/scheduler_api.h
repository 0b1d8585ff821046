// The scheduler's "inspect it" HTTP API, served on its metrics port (MetricsServer::SetHandler).
// Every endpoint answers GET with a JSON array of objects, sorted by id(s), built from in-memory
// snapshots (no I/O). Ids come from the network: strings are JSON-escaped, invalid UTF-8
// replaced by U+FFFD.
//
//   GET /api/v1/hosts      [{"id", "hostname", "ip", "idc", "location", "type",
//                            "announced_upload_bytes_per_sec", "announced_download_bytes_per_sec",
//                            "learned_upload_bytes_per_sec", "learned_download_bytes_per_sec",
//                            "learned_upload_busy_bytes_per_sec",
//                            "learned_download_busy_bytes_per_sec", "upload_bytes_per_sec",
//                            "download_bytes_per_sec",  (booked with)
//                            "upload_allotted_bytes_per_sec", "probe_failures", "probed_count"}]
//   GET /api/v1/probes     [{"src", "dst", "average_rtt_ns", "samples": [{"rtt_ns",
//                            "created_unix_ms"}], "created_unix_ms", "updated_unix_ms"}]
//   GET /api/v1/bandwidth  [{"child", "parent", "bytes_per_sec", "records"}]
// docs/measurement.md describes the fields.
#pragma once

#include <string>

#include "common/metrics.h"
#include "common/status.h"
#include "scheduler/network_topology.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {

// The bodies of the endpoints (thread-safe: they take snapshots).
std::string HostsJson(const Scheduler& scheduler, const NetworkTopology& topology);
std::string ProbesJson(const NetworkTopology& topology);
std::string BandwidthJson(const Scheduler& scheduler);

// Registers the endpoints on `server`, and its /healthz check (503 with the reason while the
// scheduler's background round is stalled, Scheduler::BackgroundHealth). `scheduler` and `topology`
// must stay alive until UnregisterSchedulerApi(server) returned (call it before shutting the
// scheduler down).
Status RegisterSchedulerApi(MetricsServer& server, const Scheduler& scheduler,
                            const NetworkTopology& topology);
void UnregisterSchedulerApi(MetricsServer& server);

}  // namespace df::scheduler
