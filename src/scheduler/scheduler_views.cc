// Read-mostly views of the Scheduler's model for latency probes and the HTTP API: kept out of
// scheduler.cc, which holds the scheduling decisions.
#include "scheduler/scheduler.h"

namespace df::scheduler {

Result<std::vector<v1::Host>> Scheduler::ProbeCandidates(const std::string& src_host_id,
                                                         const std::string& caller_ip,
                                                         size_t sample_size) {
  std::lock_guard lock(mu_);
  const Host* src = model_.FindHost(src_host_id);
  if (src_host_id.empty() || !src || !src->announced || src->left) {
    return NotFound("sync probes: host " + src_host_id + " is not announced");
  }
  if (!caller_ip.empty() && src->info.ip() != caller_ip) {
    return Status(StatusCode::kPermissionDenied,
                  "sync probes: host " + src_host_id + " may only probe from its own address");
  }
  // Reservoir sampling (Algorithm R): one pass, uniform, no index of hosts to keep in step.
  std::vector<const Host*> sample;
  sample.reserve(std::min(sample_size, model_.hosts().size()));
  size_t seen = 0;
  const auto now = clock_.Now();
  const auto host_ttl = std::chrono::milliseconds(config_.host_ttl_ms);
  for (const auto& [id, host] : model_.hosts()) {
    // A host past its TTL is gone, whether or not GC has run yet.
    if (id == src_host_id || !host->reachable() || now - host->last_seen > host_ttl) continue;
    ++seen;
    if (sample.size() < sample_size) {
      sample.push_back(host.get());
      continue;
    }
    std::uniform_int_distribution<size_t> pick(0, seen - 1);
    if (size_t j = pick(rng_); j < sample_size) sample[j] = host.get();
  }
  std::vector<v1::Host> out;
  out.reserve(sample.size());
  for (const Host* h : sample) out.push_back(h->info);
  return out;
}

std::vector<Scheduler::HostView> Scheduler::ListHosts() const {
  std::lock_guard lock(mu_);
  std::vector<HostView> out;
  out.reserve(model_.hosts().size());
  for (const auto& [id, host] : model_.hosts()) {
    out.push_back({host->info,
                   HostCapacity{capacity_.Get(id), host->upload_capacity(),
                                host->download_capacity(), host->upload_allotted},
                   host->inferred_group});
  }
  return out;
}

std::vector<CapacityEstimator::PairRate> Scheduler::PairRates() const {
  std::lock_guard lock(mu_);
  return capacity_.Pairs();
}

}  // namespace df::scheduler
