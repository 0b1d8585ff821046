#include "scheduler/scheduler_api.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace df::scheduler {
namespace {

using Json = nlohmann::json;

constexpr const char* kJsonContentType = "application/json";
constexpr const char* kHostsPath = "/api/v1/hosts";
constexpr const char* kProbesPath = "/api/v1/probes";
constexpr const char* kBandwidthPath = "/api/v1/bandwidth";

// Ids and names arrive from the network: never let a byte sequence that is not UTF-8 throw.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

const char* HostTypeName(df::scheduler::v1::HostType type) {
  return type == df::scheduler::v1::HOST_TYPE_SEED ? "seed" : "normal";
}

}  // namespace

std::string HostsJson(const Scheduler& scheduler, const NetworkTopology& topology) {
  auto hosts = scheduler.ListHosts();
  std::sort(hosts.begin(), hosts.end(),
            [](const auto& a, const auto& b) { return a.info.id() < b.info.id(); });
  Json out = Json::array();
  for (const auto& h : hosts) {
    const auto& learned = h.capacity.learned;
    out.push_back({
        {"id", h.info.id()},
        {"hostname", h.info.hostname()},
        {"ip", h.info.ip()},
        {"idc", h.info.idc()},
        {"inferred_group", h.inferred_group},
        {"location", h.info.location()},
        {"type", HostTypeName(h.info.type())},
        {"announced_upload_bytes_per_sec", h.info.upload_rate_limit_bytes_per_sec()},
        {"announced_download_bytes_per_sec", h.info.download_rate_limit_bytes_per_sec()},
        {"learned_upload_bytes_per_sec", learned.upload_peak},
        {"learned_download_bytes_per_sec", learned.download_peak},
        {"learned_upload_busy_bytes_per_sec", learned.upload_busy},
        {"learned_download_busy_bytes_per_sec", learned.download_busy},
        {"upload_bytes_per_sec", h.capacity.upload},
        {"download_bytes_per_sec", h.capacity.download},
        {"upload_allotted_bytes_per_sec", h.capacity.booked},
        {"probe_failures", topology.ProbeFailures(h.info.id())},
        {"probed_count", topology.ProbedCount(h.info.id())},
    });
  }
  return Dump(out);
}

std::string ProbesJson(const NetworkTopology& topology) {
  Json out = Json::array();
  for (const auto& e : topology.Edges()) {  // sorted by (src, dst)
    Json samples = Json::array();
    for (const auto& s : e.samples) {
      samples.push_back({{"rtt_ns", s.rtt_ns}, {"created_unix_ms", s.created_unix_ms}});
    }
    out.push_back({{"src", e.src_host_id},
                   {"dst", e.dst_host_id},
                   {"average_rtt_ns", e.average_rtt_ns},
                   {"samples", std::move(samples)},
                   {"created_unix_ms", e.created_unix_ms},
                   {"updated_unix_ms", e.updated_unix_ms}});
  }
  return Dump(out);
}

std::string BandwidthJson(const Scheduler& scheduler) {
  auto pairs = scheduler.PairRates();
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) {
    return std::tie(a.child_host, a.parent_host) < std::tie(b.child_host, b.parent_host);
  });
  Json out = Json::array();
  for (const auto& p : pairs) {
    out.push_back({{"child", p.child_host},
                   {"parent", p.parent_host},
                   {"bytes_per_sec", p.bytes_per_sec},
                   {"records", p.records}});
  }
  return Dump(out);
}

Status RegisterSchedulerApi(MetricsServer& server, const Scheduler& scheduler,
                            const NetworkTopology& topology) {
  using Body = MetricsServer::HttpBody;
  DF_RETURN_IF_ERROR(server.SetHandler(kHostsPath, [&scheduler, &topology] {
    return Body{kJsonContentType, HostsJson(scheduler, topology)};
  }));
  DF_RETURN_IF_ERROR(server.SetHandler(kProbesPath, [&topology] {
    return Body{kJsonContentType, ProbesJson(topology)};
  }));
  server.SetHealthCheck([&scheduler] { return scheduler.BackgroundHealth(); });
  return server.SetHandler(kBandwidthPath, [&scheduler] {
    return Body{kJsonContentType, BandwidthJson(scheduler)};
  });
}

void UnregisterSchedulerApi(MetricsServer& server) {
  server.SetHealthCheck(nullptr);
  for (const char* path : {kHostsPath, kProbesPath, kBandwidthPath}) {
    (void)server.SetHandler(path, nullptr);
  }
}

}  // namespace df::scheduler
