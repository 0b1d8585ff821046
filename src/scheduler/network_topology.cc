#include "scheduler/network_topology.h"

#include <algorithm>
#include <cstdlib>
#include <unordered_set>

#include "common/log.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;

// A reported sample time further than this from ours is the reporter's clock, not the time.
constexpr int64_t kMaxClockSkewMs = 60'000;

}  // namespace

NetworkTopology::NetworkTopology(Store* store, NetworkTopologyOptions options)
    : store_(store),
      options_(options),
      clock_(options.clock ? *options.clock : SteadyClock::Instance()),
      rng_(std::random_device{}()) {}

NetworkTopology::~NetworkTopology() { Stop(); }

void NetworkTopology::Start() {
  thread_ = std::thread([this] { RunBackground(); });
}

void NetworkTopology::Stop() {
  {
    std::lock_guard lock(run_mu_);
    stop_ = true;
  }
  run_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t NetworkTopology::NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool NetworkTopology::StoreUsable() const {
  std::shared_lock lock(mu_);
  return !store_failed_at_ || clock_.Now() - *store_failed_at_ >= options_.store_backoff;
}

void NetworkTopology::StoreFailed(const Status& s, const char* op) {
  bool first = false;
  {
    std::unique_lock lock(mu_);
    first = !store_failed_at_;
    store_failed_at_ = clock_.Now();
  }
  // One warning per outage; the background thread logs the recovery.
  if (first) {
    DF_LOG_WARN("probe store {} failed; probes are kept in memory until it answers: {}", op,
                s.ToString());
  }
}

bool NetworkTopology::Tombstoned(const std::string& host_id, df::Clock::TimePoint now) const {
  auto it = tombstones_.find(host_id);
  return it != tombstones_.end() && now - it->second < kTombstoneTtl;
}

// ---- Assignment ---------------------------------------------------------------------------

std::vector<uint64_t> NetworkTopology::Counts(const std::vector<std::string>& ids) {
  if (StoreUsable()) {
    auto counts = store_->ProbedCounts(ids);
    if (counts.ok() && counts->size() == ids.size()) {
      std::unique_lock lock(mu_);
      for (size_t i = 0; i < ids.size(); ++i) {
        uint64_t& local = probed_counts_[ids[i]];
        local = std::max(local, (*counts)[i]);
      }
      return std::move(counts).value();
    }
    StoreFailed(counts.ok() ? Unavailable("short reply") : counts.status(), "ProbedCounts");
  }
  std::vector<uint64_t> out;
  out.reserve(ids.size());
  std::shared_lock lock(mu_);
  for (const auto& id : ids) {
    auto it = probed_counts_.find(id);
    out.push_back(it == probed_counts_.end() ? 0 : it->second);
  }
  return out;
}

std::vector<v1::Host> NetworkTopology::AssignTargets(const std::string& src_host_id,
                                                     std::vector<v1::Host> candidates) {
  {
    // Drop src, duplicates and ids the wire could not name; a candidate the scheduler offers is
    // reachable again, so its tombstone goes.
    std::unordered_set<std::string> seen;
    std::erase_if(candidates, [&](const v1::Host& h) {
      return h.id().empty() || h.id() == src_host_id || !seen.insert(h.id()).second;
    });
    std::unique_lock lock(mu_);
    tombstones_.erase(src_host_id);
    for (const auto& h : candidates) tombstones_.erase(h.id());
  }
  {
    std::lock_guard lock(rng_mu_);
    std::shuffle(candidates.begin(), candidates.end(), rng_);  // ties are broken at random
  }
  if (candidates.size() > options_.probe_sample_size) candidates.resize(options_.probe_sample_size);
  std::vector<std::string> ids;
  ids.reserve(candidates.size());
  for (const auto& h : candidates) ids.push_back(h.id());
  const std::vector<uint64_t> counts = Counts(ids);
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return counts[a] < counts[b]; });
  if (order.size() > options_.probe_count) order.resize(options_.probe_count);

  std::vector<v1::Host> targets;
  targets.reserve(order.size());
  {
    std::unique_lock lock(mu_);
    for (size_t i : order) ++probed_counts_[ids[i]];
  }
  const bool use_store = StoreUsable();
  for (size_t i : order) {
    if (use_store) {
      Status s = store_->AddProbedCount(ids[i], 1);
      if (!s.ok()) StoreFailed(s, "AddProbedCount");
    }
    targets.push_back(std::move(candidates[i]));
  }
  return targets;
}

// ---- Reports ------------------------------------------------------------------------------

void NetworkTopology::AddLocal(const std::string& src, const std::string& dst,
                               const ProbeSample& sample) {
  ProbeEdge& e = edges_[{src, dst}];
  if (e.samples.empty() && e.src_host_id.empty()) {
    e.src_host_id = src;
    e.dst_host_id = dst;
    e.created_unix_ms = sample.created_unix_ms;
    in_[dst].insert(src);
  }
  e.samples.push_back(sample);
  const size_t keep = std::max<size_t>(options_.probe_queue_length, 1);
  if (e.samples.size() > keep) e.samples.erase(e.samples.begin(), e.samples.end() - keep);
  e.average_rtt_ns = MovingAverageRtt(e.samples);
  e.updated_unix_ms = std::max(e.updated_unix_ms, sample.created_unix_ms);
}

size_t NetworkTopology::Record(const std::string& src_host_id,
                               const std::vector<v1::Probe>& probes) {
  const int64_t now_ms = NowUnixMs();
  std::vector<std::pair<std::string, ProbeSample>> accepted;
  {
    std::unique_lock lock(mu_);
    const auto now = clock_.Now();
    if (src_host_id.empty() || Tombstoned(src_host_id, now)) return 0;
    std::unordered_set<std::string> seen;
    for (size_t i = 0; i < probes.size() && i < kMaxProbesPerMessage; ++i) {
      const v1::Probe& p = probes[i];
      const std::string& dst = p.host_id();
      if (dst.empty() || dst == src_host_id || !seen.insert(dst).second) continue;
      if (p.rtt_ns() <= 0 || p.rtt_ns() >= kMaxRttNs || Tombstoned(dst, now)) continue;
      ProbeSample sample{p.rtt_ns(), p.created_unix_ms()};
      if (std::abs(sample.created_unix_ms - now_ms) > kMaxClockSkewMs) {
        sample.created_unix_ms = now_ms;
      }
      AddLocal(src_host_id, dst, sample);
      failures_.erase(dst);
      accepted.emplace_back(dst, sample);
    }
  }
  if (!StoreUsable()) return accepted.size();
  for (const auto& [dst, sample] : accepted) {
    Status s = store_->AddProbe(src_host_id, dst, sample, options_.probe_queue_length);
    if (!s.ok()) {
      StoreFailed(s, "AddProbe");
      break;
    }
  }
  return accepted.size();
}

void NetworkTopology::RecordFailure(const std::string& src_host_id, const std::string& dst_host_id,
                                    const std::string& why) {
  if (src_host_id.empty() || dst_host_id.empty() || src_host_id == dst_host_id) return;
  std::unique_lock lock(mu_);
  if (Tombstoned(dst_host_id, clock_.Now())) return;
  Failures& f = failures_[dst_host_id];
  // Bounded: only the first kUnreachableFailures sources matter for the count's use.
  if (f.sources.size() < 16) f.sources.insert(src_host_id);
  f.last_error = why.substr(0, 256);
  DF_LOG_DEBUG("probe failed src_host_id={} dst_host_id={} failures={} error={}", src_host_id,
               dst_host_id, f.sources.size(), f.last_error);
}

void NetworkTopology::RemoveHost(const std::string& host_id) {
  if (host_id.empty()) return;
  std::unique_lock lock(mu_);
  for (auto it = edges_.lower_bound({host_id, ""});
       it != edges_.end() && it->first.first == host_id;) {
    auto in = in_.find(it->first.second);
    if (in != in_.end()) {
      in->second.erase(host_id);
      if (in->second.empty()) in_.erase(in);
    }
    it = edges_.erase(it);
  }
  if (auto in = in_.find(host_id); in != in_.end()) {
    for (const auto& src : in->second) edges_.erase({src, host_id});
    in_.erase(in);
  }
  probed_counts_.erase(host_id);
  failures_.erase(host_id);
  tombstones_[host_id] = clock_.Now();
  pending_deletes_.push_back(host_id);
}

// ---- Lookups ------------------------------------------------------------------------------

std::optional<int64_t> NetworkTopology::AverageRtt(const std::string& src_host_id,
                                                   const std::string& dst_host_id) const {
  std::shared_lock lock(mu_);
  for (const EdgeKey& key :
       {EdgeKey{src_host_id, dst_host_id}, EdgeKey{dst_host_id, src_host_id}}) {
    auto it = edges_.find(key);
    if (it != edges_.end() && !it->second.samples.empty()) return it->second.average_rtt_ns;
  }
  return std::nullopt;
}

uint32_t NetworkTopology::ProbeFailures(const std::string& host_id) const {
  std::shared_lock lock(mu_);
  auto it = failures_.find(host_id);
  return it == failures_.end() ? 0 : static_cast<uint32_t>(it->second.sources.size());
}

uint64_t NetworkTopology::ProbedCount(const std::string& host_id) const {
  std::shared_lock lock(mu_);
  auto it = probed_counts_.find(host_id);
  return it == probed_counts_.end() ? 0 : it->second;
}

std::vector<ProbeEdge> NetworkTopology::Edges() const {
  std::shared_lock lock(mu_);
  std::vector<ProbeEdge> out;
  out.reserve(edges_.size());
  for (const auto& [key, edge] : edges_) out.push_back(edge);
  return out;
}

// ---- Background ---------------------------------------------------------------------------

Status NetworkTopology::Refresh() {
  auto edges = store_->ListProbes("");
  if (!edges.ok()) {
    StoreFailed(edges.status(), "ListProbes");
    return edges.status();
  }
  std::unique_lock lock(mu_);
  if (store_failed_at_) {
    DF_LOG_INFO("probe store answers again");
    store_failed_at_.reset();
  }
  const auto now = clock_.Now();
  for (auto& edge : *edges) {
    const std::string& src = edge.src_host_id;
    const std::string& dst = edge.dst_host_id;
    if (src.empty() || dst.empty() || src == dst || edge.samples.empty()) continue;
    if (Tombstoned(src, now) || Tombstoned(dst, now)) continue;
    auto [it, inserted] = edges_.try_emplace({src, dst});
    // Our own newer samples win over a store that missed them (a failed AddProbe).
    if (!inserted && it->second.updated_unix_ms > edge.updated_unix_ms) continue;
    if (edge.samples.size() > options_.probe_queue_length) {
      edge.samples.erase(edge.samples.begin(), edge.samples.end() - options_.probe_queue_length);
    }
    edge.average_rtt_ns = MovingAverageRtt(edge.samples);
    it->second = std::move(edge);
    if (inserted) in_[dst].insert(src);
  }
  return Status::Ok();
}

void NetworkTopology::ForgetOldTombstones() {
  std::unique_lock lock(mu_);
  const auto now = clock_.Now();
  for (auto t = tombstones_.begin(); t != tombstones_.end();) {
    t = now - t->second >= kTombstoneTtl ? tombstones_.erase(t) : std::next(t);
  }
}

void NetworkTopology::DeleteRemoved() {
  std::vector<std::string> ids;
  {
    std::unique_lock lock(mu_);
    ids.swap(pending_deletes_);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    Status s = store_->DeleteHost(ids[i]);
    if (!s.ok()) {
      StoreFailed(s, "DeleteHost");
      std::unique_lock lock(mu_);  // retried next round
      pending_deletes_.insert(pending_deletes_.end(), ids.begin() + static_cast<long>(i),
                              ids.end());
      return;
    }
  }
}

void NetworkTopology::RunBackground() {
  std::unique_lock lock(run_mu_);
  while (!stop_) {
    lock.unlock();
    // Deletions first, so that the reload cannot bring a removed host's probes back.
    DeleteRemoved();
    // A memory store is this process's own: everything in it is already here.
    if (store_->name() != "memory") (void)Refresh();
    ForgetOldTombstones();
    lock.lock();
    run_cv_.wait_for(lock, options_.refresh_interval, [this] { return stop_; });
  }
}

}  // namespace df::scheduler
