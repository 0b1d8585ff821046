// CapacityEstimator: each host's upload and download capacity, learned from the piece records
// (docs/measurement.md, "Capacity learned from piece records").
//
// A record says `bytes` went from the parent host to the child host during the `cost` before
// `end`. Its bytes are spread evenly over the time buckets that interval covers, in the parent's
// upload series and the child's download series: a host's series is what its link carried in
// aggregate over all its concurrent transfers, not one transfer's rate. Once a window of buckets
// is older than the settle time (reports of pieces still in flight have arrived), its rate is
// evaluated:
//   - the *peak*: the highest window rate seen, decayed with a half-life so that a host that got
//     slower (a noisy neighbour, a throttled link) is believed within minutes; it is a lower bound
//     of the capacity (the link carried that much);
//   - the *busy* rate: the mean rate of recent windows in which the host had at least two
//     transfers at once throughout: what the link sustains when more is asked of it than it
//     gives, i.e. its capacity, unless the other ends were the limit;
//   - the *active* rate: the mean rate of recent windows with a transfer throughout (one is
//     enough): what the link gave while it was in use. Compared with what was booked on it, it
//     shows a host slower than assumed even when it serves a single child.
// Capacity() combines them with what the host announced (see its comment).
//
// Pair bandwidth: an exponentially weighted mean of the record rates of each (child, parent).
//
// Not thread-safe: the Scheduler calls it under its mutex. O(1) per record (a record spans a
// bounded number of buckets), memory O(hosts + pairs).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace df::scheduler {

class CapacityEstimator {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::chrono::milliseconds bucket{250};
    int window_buckets = 4;  // a window: 1 s
    // A window is evaluated once it is older than twice the longest recent transfer of the
    // series (reports of pieces still in flight have then arrived), within these bounds.
    std::chrono::milliseconds min_settle{500};
    std::chrono::milliseconds max_settle{5000};
    std::chrono::seconds peak_half_life{300};
    // Booking a learned capacity asks this much more of the host than it has shown, so that a
    // host that was never pushed to its limit gets the chance to show more.
    double headroom = 1.25;
    // An announced rate is believed unless the busy rate is below this fraction of it.
    double announced_tolerance = 0.8;
  };

  // Learned rates of one host, bytes/s; 0 = nothing learned yet.
  struct Learned {
    uint64_t upload_peak = 0;
    uint64_t upload_busy = 0;
    uint64_t download_peak = 0;
    uint64_t download_busy = 0;
    uint64_t upload_active = 0;
    uint64_t download_active = 0;
  };

  // What is known of one link, for Capacity().
  struct Link {
    uint64_t base = 0;       // announced rate, else the scheduler's prior; 0 = neither
    bool announced = false;  // base is what the host announced
    uint64_t peak = 0, busy = 0, active = 0;
    // The scheduler booked (nearly) all of the link's current capacity: the active rate is then
    // what the link gives when asked for at least the base.
    bool fully_booked = false;
    bool may_lower = false;  // see Capacity()
  };

  CapacityEstimator() : CapacityEstimator(Options{}) {}
  explicit CapacityEstimator(Options options);

  // One piece: `bytes` from `parent_host` to `child_host` in the `cost` before `end`. Records with
  // no bytes or no cost are ignored (the caller validates them).
  void AddTransfer(const std::string& child_host, const std::string& parent_host, uint64_t bytes,
                   std::chrono::nanoseconds cost, Clock::time_point end);

  // Evaluates every window that settled by `now`; call before reading (cheap when nothing
  // settled).
  void Advance(Clock::time_point now);

  Learned Get(const std::string& host) const;

  // The capacity to book for a link; learned = max(peak, busy, active) × headroom:
  //   no base:                                           learned (0 when nothing was learned);
  //   lowering allowed, and the busy rate, or the active
  //   rate of a fully booked link, is below
  //   tolerance × base:                                  min(base, learned): the records win;
  //   the base is only the prior and learned exceeds it:  learned (the host showed more);
  //   otherwise:                                         the base.
  // Lowering is for uploads: a host's upload is what it can give. A child's download is not
  // lowered: what it receives is limited by what its parents supply, so a low rate proves
  // nothing about its link.
  uint64_t Capacity(const Link& link) const;
  // `fully_booked`: the scheduler booked at least 90% of the host's current upload capacity.
  uint64_t UploadCapacity(const std::string& host, uint64_t announced, uint64_t prior,
                          bool fully_booked) const;
  uint64_t DownloadCapacity(const std::string& host, uint64_t announced, uint64_t prior) const;

  // Exponentially weighted mean of the pair's record rates (bytes/s) and how many records;
  // {0, 0} for an unknown pair.
  std::pair<double, uint64_t> Pair(const std::string& child_host,
                                   const std::string& parent_host) const;

  // One rate per direction to share with other schedulers (bytes/s; 0 = nothing learned): the
  // busy rate when there is one (the link measured under load), else max(peak, active).
  std::pair<uint64_t, uint64_t> SharedRates(const std::string& host) const;
  // Adopts what another scheduler learned of a host (`upload`, `download`: SharedRates) unless
  // this one has records of the host itself, which are fresher for its decisions.
  void MergeRemote(const std::string& host, uint64_t upload, uint64_t download,
                   Clock::time_point now);

  // Forgets a host (it left): its series, and the pairs it is in.
  void RemoveHost(const std::string& host);

  // Every host with something learned.
  std::vector<std::pair<std::string, Learned>> Snapshot() const;
  struct PairRate {
    std::string child_host, parent_host;
    double bytes_per_sec = 0;
    uint64_t records = 0;
  };
  std::vector<PairRate> Pairs() const;

 private:
  // One direction of one host's link: a ring of buckets and what was learned from it.
  struct Series {
    std::vector<uint64_t> bytes;    // bytes per bucket, ring indexed by bucket number
    std::vector<uint64_t> busy_ns;  // transfer-time per bucket (sum over transfers)
    int64_t first_open = -1;        // oldest bucket number not evaluated yet (-1: none yet)
    int64_t newest = -1;            // newest bucket number written
    double peak = 0;                // bytes/s
    Clock::time_point peak_at;
    double busy = 0;            // bytes/s, mean of busy windows (EWMA)
    double active = 0;          // bytes/s, mean of windows with a transfer throughout (EWMA)
    double recent_cost_ns = 0;  // longest recent transfer, decaying by 10% per record
    bool remote = true;         // learned only from other schedulers (MergeRemote)
  };
  struct PairState {
    double rate = 0;
    uint64_t records = 0;
  };

  int64_t BucketOf(Clock::time_point t) const;
  void Spread(Series& s, uint64_t bytes, Clock::time_point start, Clock::time_point end);
  std::chrono::nanoseconds SettleOf(const Series& s) const;
  void Evaluate(Series& s, int64_t settled_bucket, Clock::time_point now);
  double DecayedPeak(const Series& s, Clock::time_point now) const;
  Series& SeriesOf(std::unordered_map<std::string, Series>& map, const std::string& host);

  const Options options_;
  const Clock::time_point epoch_;
  const size_t ring_;  // buckets kept per series
  Clock::time_point now_;
  std::unordered_map<std::string, Series> upload_;
  std::unordered_map<std::string, Series> download_;
  std::map<std::pair<std::string, std::string>, PairState> pairs_;  // (child, parent)
};

}  // namespace df::scheduler
