// A one-line progress bar for a TTY: percentage, bytes, rate and ETA, redrawn in place.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>

namespace df {

// Not thread-safe; one per download. Draws to `out` only when it is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(std::FILE* out);
  // Redraws at most 10 times a second. total < 0 means unknown.
  void Update(int64_t total, uint64_t done);
  // Draws the final state and ends the line.
  void Finish(int64_t total, uint64_t done);

 private:
  void Draw(int64_t total, uint64_t done);

  std::FILE* out_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
  double rate_bytes_per_sec_ = 0;
  uint64_t last_done_ = 0;
  std::chrono::steady_clock::time_point last_sample_;
};

}  // namespace df
