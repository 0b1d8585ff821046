#include "scheduler/capacity_estimator.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace df::scheduler {
namespace {

// A window is "busy" when the host had at least this many transfers at once (on average) in every
// bucket of it: two at once, less the gaps between one piece and the next.
constexpr double kBusyConcurrency = 1.5;
// A window is "active" when a transfer ran through (nearly) all of every bucket of it.
constexpr double kActiveConcurrency = 0.9;
// Weight of a new busy window, and of a new record in a pair's mean.
constexpr double kBusyAlpha = 0.3;
constexpr double kPairAlpha = 0.2;

}  // namespace

CapacityEstimator::CapacityEstimator(Options options)
    : options_(options),
      epoch_(Clock::now() - std::chrono::hours(1)),  // records may start before construction
      ring_(static_cast<size_t>(4 * (options.max_settle / options.bucket + options.window_buckets) +
                                8)) {}

int64_t CapacityEstimator::BucketOf(Clock::time_point t) const {
  if (t < epoch_) return 0;
  return static_cast<int64_t>((t - epoch_) / options_.bucket);
}

CapacityEstimator::Series& CapacityEstimator::SeriesOf(std::unordered_map<std::string, Series>& map,
                                                       const std::string& host) {
  Series& s = map[host];
  if (s.bytes.empty()) {
    s.bytes.assign(ring_, 0);
    s.busy_ns.assign(ring_, 0);
  }
  return s;
}

void CapacityEstimator::AddTransfer(const std::string& child_host, const std::string& parent_host,
                                    uint64_t bytes, std::chrono::nanoseconds cost,
                                    Clock::time_point end) {
  if (bytes == 0 || cost <= std::chrono::nanoseconds::zero()) return;
  now_ = std::max(now_, end);
  const Clock::time_point start = end - std::chrono::duration_cast<Clock::duration>(cost);
  Series& up = SeriesOf(upload_, parent_host);
  Series& down = SeriesOf(download_, child_host);
  for (Series* s : {&up, &down}) {
    if (s->remote) *s = Series{std::vector<uint64_t>(ring_, 0), std::vector<uint64_t>(ring_, 0)};
    s->remote = false;
  }
  Spread(up, bytes, start, end);
  Spread(down, bytes, start, end);
  PairState& p = pairs_[{child_host, parent_host}];
  const double rate = static_cast<double>(bytes) * 1e9 / static_cast<double>(cost.count());
  p.rate = p.records == 0 ? rate : (1 - kPairAlpha) * p.rate + kPairAlpha * rate;
  ++p.records;
}

void CapacityEstimator::Spread(Series& s, uint64_t bytes, Clock::time_point start,
                               Clock::time_point end) {
  const int64_t last = BucketOf(end);
  const int64_t ring = static_cast<int64_t>(ring_);
  s.recent_cost_ns =
      std::max(0.9 * s.recent_cost_ns,
               static_cast<double>(
                   std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count()));
  if (s.newest < 0) {
    s.first_open = std::max<int64_t>(0, BucketOf(start));
    s.newest = s.first_open - 1;
  }
  if (last - ring >= s.first_open) {
    // The ring is about to reuse buckets that were never evaluated: evaluate them now.
    Evaluate(s, last - ring + options_.window_buckets, end);
  }
  for (int64_t b = std::max(s.newest + 1, last - ring + 1); b <= last; ++b) {
    s.bytes[static_cast<size_t>(b % ring)] = 0;
    s.busy_ns[static_cast<size_t>(b % ring)] = 0;
  }
  s.newest = std::max(s.newest, last);
  // Evaluated buckets are closed; the bytes of the rest of the interval are spread over the part
  // that is still open, in proportion to the time of each bucket.
  const int64_t first = std::max({BucketOf(start), s.first_open, last - ring + 1});
  if (first > last) return;
  const Clock::time_point from = std::max(start, epoch_ + first * options_.bucket);
  const auto span = std::chrono::duration_cast<std::chrono::nanoseconds>(end - from).count();
  if (span <= 0) {
    s.bytes[static_cast<size_t>(last % ring)] += bytes;
    return;
  }
  uint64_t left = bytes;
  for (int64_t b = first; b <= last; ++b) {
    const Clock::time_point lo = std::max(from, epoch_ + b * options_.bucket);
    const Clock::time_point hi = std::min(end, epoch_ + (b + 1) * options_.bucket);
    const auto overlap = std::chrono::duration_cast<std::chrono::nanoseconds>(hi - lo).count();
    if (overlap <= 0) continue;
    const uint64_t share = b == last
                               ? left
                               : std::min(left, static_cast<uint64_t>(static_cast<double>(bytes) *
                                                                      static_cast<double>(overlap) /
                                                                      static_cast<double>(span)));
    s.bytes[static_cast<size_t>(b % ring)] += share;
    s.busy_ns[static_cast<size_t>(b % ring)] += static_cast<uint64_t>(overlap);
    left -= share;
  }
}

std::chrono::nanoseconds CapacityEstimator::SettleOf(const Series& s) const {
  const auto twice = std::chrono::nanoseconds(static_cast<int64_t>(2 * s.recent_cost_ns));
  return std::clamp<std::chrono::nanoseconds>(twice, options_.min_settle, options_.max_settle);
}

void CapacityEstimator::Advance(Clock::time_point now) {
  now_ = std::max(now_, now);
  for (auto* map : {&upload_, &download_}) {
    for (auto& [host, s] : *map) {
      const auto settle = std::chrono::duration_cast<Clock::duration>(SettleOf(s));
      // A window ending at bucket e covers up to the start of bucket e + 1.
      Evaluate(s, BucketOf(now - settle) - 1, now);
    }
  }
}

void CapacityEstimator::Evaluate(Series& s, int64_t settled_bucket, Clock::time_point now) {
  if (s.newest < 0) return;
  const int64_t w = options_.window_buckets;
  const int64_t ring = static_cast<int64_t>(ring_);
  const double window_s = std::chrono::duration<double>(options_.bucket * w).count();
  const double bucket_ns = std::chrono::duration<double, std::nano>(options_.bucket).count();
  // Windows end at buckets first_open + w - 1 ... ; past newest + w - 1 they would be empty.
  const int64_t last_end = std::min(settled_bucket, s.newest + w - 1);
  for (int64_t e = s.first_open + w - 1; e <= last_end; ++e) {
    uint64_t bytes = 0;
    bool busy = true, active = true;
    for (int64_t b = e - w + 1; b <= e; ++b) {
      if (b > s.newest || b <= s.newest - ring) {
        busy = active = false;
        continue;
      }
      bytes += s.bytes[static_cast<size_t>(b % ring)];
      const auto in_use = static_cast<double>(s.busy_ns[static_cast<size_t>(b % ring)]);
      busy = busy && in_use >= kBusyConcurrency * bucket_ns;
      active = active && in_use >= kActiveConcurrency * bucket_ns;
    }
    const double rate = static_cast<double>(bytes) / window_s;
    if (rate > DecayedPeak(s, now)) {
      s.peak = rate;
      s.peak_at = now;
    }
    if (busy) s.busy = s.busy == 0 ? rate : (1 - kBusyAlpha) * s.busy + kBusyAlpha * rate;
    if (active) s.active = s.active == 0 ? rate : (1 - kBusyAlpha) * s.active + kBusyAlpha * rate;
  }
  // The oldest bucket a window not evaluated yet still needs.
  s.first_open = std::max(s.first_open, settled_bucket - w + 2);
}

double CapacityEstimator::DecayedPeak(const Series& s, Clock::time_point now) const {
  if (s.peak == 0 || now <= s.peak_at) return s.peak;
  const double age = std::chrono::duration<double>(now - s.peak_at).count();
  const double half_life = std::chrono::duration<double>(options_.peak_half_life).count();
  return s.peak * std::exp2(-age / half_life);
}

CapacityEstimator::Learned CapacityEstimator::Get(const std::string& host) const {
  Learned l;
  if (auto it = upload_.find(host); it != upload_.end()) {
    l.upload_peak = static_cast<uint64_t>(DecayedPeak(it->second, now_));
    l.upload_busy = static_cast<uint64_t>(it->second.busy);
    l.upload_active = static_cast<uint64_t>(it->second.active);
  }
  if (auto it = download_.find(host); it != download_.end()) {
    l.download_peak = static_cast<uint64_t>(DecayedPeak(it->second, now_));
    l.download_busy = static_cast<uint64_t>(it->second.busy);
    l.download_active = static_cast<uint64_t>(it->second.active);
  }
  return l;
}

uint64_t CapacityEstimator::Capacity(const Link& link) const {
  // Headroom is for uploads, where it lets a parent take one more child and show more. A
  // child's download booked above what it showed would only make it hungry for parents it
  // cannot use, pulling them from children that can.
  const double headroom = link.may_lower ? options_.headroom : 1.0;
  const auto learned = static_cast<uint64_t>(
      static_cast<double>(std::max({link.peak, link.busy, link.active})) * headroom);
  if (link.base == 0) return learned;
  auto below = [&](uint64_t rate) {
    return rate > 0 && static_cast<double>(rate) <
                           options_.announced_tolerance * static_cast<double>(link.base);
  };
  const bool contradicted =
      link.may_lower && (below(link.busy) || (link.fully_booked && below(link.active)));
  if (contradicted) return std::min(link.base, learned);
  if (!link.announced && learned > link.base) return learned;
  return link.base;
}

uint64_t CapacityEstimator::UploadCapacity(const std::string& host, uint64_t announced,
                                           uint64_t prior, bool fully_booked) const {
  const Learned l = Get(host);
  return Capacity({announced > 0 ? announced : prior, announced > 0, l.upload_peak, l.upload_busy,
                   l.upload_active, fully_booked, /*may_lower=*/true});
}

uint64_t CapacityEstimator::DownloadCapacity(const std::string& host, uint64_t announced,
                                             uint64_t prior) const {
  const Learned l = Get(host);
  return Capacity({announced > 0 ? announced : prior, announced > 0, l.download_peak,
                   l.download_busy, l.download_active, false, /*may_lower=*/false});
}

std::pair<double, uint64_t> CapacityEstimator::Pair(const std::string& child_host,
                                                    const std::string& parent_host) const {
  auto it = pairs_.find({child_host, parent_host});
  if (it == pairs_.end()) return {0, 0};
  return {it->second.rate, it->second.records};
}

std::pair<uint64_t, uint64_t> CapacityEstimator::SharedRates(const std::string& host) const {
  const Learned l = Get(host);
  auto rate = [](uint64_t peak, uint64_t busy, uint64_t active) {
    return busy > 0 ? busy : std::max(peak, active);
  };
  return {rate(l.upload_peak, l.upload_busy, l.upload_active),
          rate(l.download_peak, l.download_busy, l.download_active)};
}

void CapacityEstimator::MergeRemote(const std::string& host, uint64_t upload, uint64_t download,
                                    Clock::time_point now) {
  auto merge = [&](std::unordered_map<std::string, Series>& map, uint64_t rate) {
    if (rate == 0) return;
    Series& s = SeriesOf(map, host);
    if (!s.remote) return;
    s.peak = s.active = static_cast<double>(rate);
    s.peak_at = now;
  };
  merge(upload_, upload);
  merge(download_, download);
}

void CapacityEstimator::RemoveHost(const std::string& host) {
  upload_.erase(host);
  download_.erase(host);
  std::erase_if(pairs_,
                [&](const auto& e) { return e.first.first == host || e.first.second == host; });
}

std::vector<std::pair<std::string, CapacityEstimator::Learned>> CapacityEstimator::Snapshot()
    const {
  std::vector<std::pair<std::string, Learned>> out;
  std::unordered_set<std::string> seen;
  for (const auto* map : {&upload_, &download_}) {
    for (const auto& entry : *map) {
      const std::string& host = entry.first;
      if (!seen.insert(host).second) continue;
      Learned l = Get(host);
      if (l.upload_peak || l.upload_busy || l.upload_active || l.download_peak || l.download_busy ||
          l.download_active) {
        out.emplace_back(host, l);
      }
    }
  }
  return out;
}

std::vector<CapacityEstimator::PairRate> CapacityEstimator::Pairs() const {
  std::vector<PairRate> out;
  out.reserve(pairs_.size());
  for (const auto& [k, p] : pairs_) out.push_back({k.first, k.second, p.rate, p.records});
  return out;
}

}  // namespace df::scheduler
