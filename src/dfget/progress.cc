#include "dfget/progress.h"

#include <unistd.h>

#include <string>

#include "common/units.h"

namespace df {

using Clock = std::chrono::steady_clock;

ProgressBar::ProgressBar(std::FILE* out)
    : out_(out),
      enabled_(::isatty(::fileno(out)) != 0),
      start_(Clock::now()),
      last_sample_(Clock::now()) {}

void ProgressBar::Update(int64_t total, uint64_t done) {
  if (!enabled_) return;
  auto now = Clock::now();
  double dt = std::chrono::duration<double>(now - last_sample_).count();
  if (dt >= 0.5) {
    double inst = static_cast<double>(done - last_done_) / dt;
    rate_bytes_per_sec_ = rate_bytes_per_sec_ == 0 ? inst : 0.6 * rate_bytes_per_sec_ + 0.4 * inst;
    last_done_ = done;
    last_sample_ = now;
  }
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  Draw(total, done);
}

void ProgressBar::Finish(int64_t total, uint64_t done) {
  if (!enabled_) return;
  double secs = std::chrono::duration<double>(Clock::now() - start_).count();
  if (secs > 0) rate_bytes_per_sec_ = static_cast<double>(done) / secs;
  Draw(total, done);
  std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressBar::Draw(int64_t total, uint64_t done) {
  constexpr int kWidth = 30;
  double frac = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0;
  int filled = static_cast<int>(frac * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '.');
  std::string eta = "--:--";
  if (rate_bytes_per_sec_ > 0 && total > 0) {
    long left = static_cast<long>((static_cast<double>(total) - static_cast<double>(done)) /
                                  rate_bytes_per_sec_);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", left / 60, left % 60);
    eta = buf;
  }
  std::fprintf(out_, "\r[%s] %5.1f%% %10s / %-10s %10s/s ETA %s ", bar.c_str(), frac * 100,
               FormatBytes(static_cast<double>(done)).c_str(),
               total >= 0 ? FormatBytes(static_cast<double>(total)).c_str() : "?",
               FormatBytes(rate_bytes_per_sec_).c_str(), eta.c_str());
  std::fflush(out_);
}

}  // namespace df
