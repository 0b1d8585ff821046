// dfget's progress display: a one-line bar on a terminal, redrawn in place at the terminal's
// width, and a summary line at the end. The formatting is pure (FormatProgressLine,
// FormatSummary; tests pin them with string fixtures), the rate is a moving average
// (RateMeter), and ProgressBar only decides when to draw and where.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <string>

namespace df {

// What one progress line shows.
struct ProgressSnapshot {
  int64_t total_bytes = -1;       // -1 while unknown
  uint64_t done_bytes = 0;        // verified plus received in place
  double rate_bytes_per_sec = 0;  // 0: not known yet
};

// The line for `s` in at most `width - 1` columns (the last column is left free: some terminals
// wrap as soon as it is written). As the width shrinks: the bar goes (it takes 12 to 52
// columns), then the sizes give way to a bar again, then the total size goes, then the bar for
// good, the size done, the rate, the ETA; the percentage stays (the size done while the total
// is unknown), cut to the width at 1-column extremes. ASCII only, so bytes = columns.
// e.g. at 40: " 42% [####.......] 85.3 MiB/s  ETA 0:28"
std::string FormatProgressLine(const ProgressSnapshot& s, int width);

// "0:28", "12:05", "1:02:03"; "--:--" when unknown (rate 0 or negative time).
std::string FormatEta(double seconds);

// Where the bytes of a finished download came from.
struct DownloadSummary {
  uint64_t size_bytes = 0;
  double seconds = 0;
  uint64_t bytes_from_peers = 0;
  uint64_t bytes_from_origin = 0;
};

// One line, e.g. "downloaded 4.0 GiB in 48.2 s (85.0 MiB/s): 3.2 GiB from peers, 819.2 MiB from
// the origin"; when neither peers nor the origin sent anything, "... from the local cache".
// With a `width` (> 0) the line is broken between its groups ("in 48.2 s", "3.2 GiB from
// peers,"...) where it would reach the last column, so that a narrow terminal shows whole groups.
std::string FormatSummary(const DownloadSummary& s, int width = 0);

// Moving average of a byte counter over the last `window` of samples. Not thread-safe.
class RateMeter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateMeter(std::chrono::milliseconds window = std::chrono::seconds(3))
      : window_(window) {}
  // Records that the counter was `bytes` at `now` (times never decrease; a counter that goes
  // down, a piece retried, restarts the average).
  void Add(Clock::time_point now, uint64_t bytes);
  // Bytes per second over the window ending at the last sample; 0 until two samples at least
  // 100 ms apart are in.
  double rate_bytes_per_sec() const;

 private:
  std::chrono::milliseconds window_;
  std::deque<std::pair<Clock::time_point, uint64_t>> samples_;
};

// The terminal width of `fd` (TIOCGWINSZ), else $COLUMNS, else 80.
int TerminalWidth(int fd);

// Not thread-safe; one per download. Draws only when `out` is a terminal and `enabled`; then
// it redraws at most 10 times a second, reading the width each time (a resize is followed).
class ProgressBar {
 public:
  ProgressBar(std::FILE* out, bool enabled);
  void Update(int64_t total_bytes, uint64_t done_bytes);
  // Replaces the bar with the summary line (on a terminal only).
  void Finish(const DownloadSummary& summary);
  // Erases the bar so that an error line stands alone.
  void Clear();
  bool drawing() const { return enabled_; }

 private:
  std::FILE* out_;
  bool enabled_;
  bool drawn_ = false;
  RateMeter meter_;
  RateMeter::Clock::time_point last_draw_{};
};

}  // namespace df
