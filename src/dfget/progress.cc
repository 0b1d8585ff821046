#include "dfget/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "common/units.h"

namespace df {

namespace {

std::string Percent(const ProgressSnapshot& s) {
  if (s.total_bytes <= 0) return s.total_bytes == 0 ? "100%" : "";
  double frac = std::min(1.0, static_cast<double>(s.done_bytes) / static_cast<double>(s.total_bytes));
  char buf[8];
  std::snprintf(buf, sizeof buf, "%3d%%", static_cast<int>(std::floor(frac * 100)));
  return buf;
}

std::string Bar(const ProgressSnapshot& s, int inner) {
  double frac = s.total_bytes > 0 ? std::min(1.0, static_cast<double>(s.done_bytes) /
                                                      static_cast<double>(s.total_bytes))
                                  : 0;
  int filled = static_cast<int>(frac * inner);
  return "[" + std::string(static_cast<size_t>(filled), '#') +
         std::string(static_cast<size_t>(inner - filled), '.') + "]";
}

std::string Join(const std::vector<std::string>& fields) {
  std::string line;
  for (const std::string& f : fields) {
    if (f.empty()) continue;
    if (!line.empty()) line += "  ";
    line += f;
  }
  return line;
}

}  // namespace

std::string FormatEta(double seconds) {
  if (!(seconds >= 0) || seconds > 99 * 3600.0) return "--:--";
  long t = std::lround(seconds);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}

std::string FormatProgressLine(const ProgressSnapshot& s, int width) {
  const size_t max = width > 1 ? static_cast<size_t>(width - 1) : 1;
  const std::string pct = Percent(s);
  const std::string done = FormatBytes(static_cast<double>(s.done_bytes));
  const std::string sizes =
      s.total_bytes >= 0 ? done + "/" + FormatBytes(static_cast<double>(s.total_bytes)) : done;
  const std::string rate =
      s.rate_bytes_per_sec > 0 ? FormatBytes(s.rate_bytes_per_sec) + "/s" : "";
  std::string eta;
  if (s.total_bytes >= 0) {
    double left = static_cast<double>(s.total_bytes) - static_cast<double>(s.done_bytes);
    eta = "ETA " + FormatEta(s.rate_bytes_per_sec > 0 ? std::max(0.0, left) / s.rate_bytes_per_sec
                                                      : -1);
  }
  // Widest first; the first candidate that fits wins.
  const std::vector<std::vector<std::string>> candidates = {
      {pct, sizes, rate, eta}, {pct, sizes, rate}, {pct, done, rate}, {pct, rate},
      {pct.empty() ? done : pct}};
  for (const auto& fields : candidates) {
    std::string tail = Join(fields);
    if (tail.size() > max) continue;
    // A bar goes after the percentage when at least 10 columns are left for it.
    if (fields.size() == 4 && s.total_bytes > 0) {
      const size_t bar_cols = max - tail.size() - 1;  // one space between the bar and the rest
      if (bar_cols >= 12) {
        const size_t inner = std::min<size_t>(bar_cols - 2, 50);
        std::string rest = Join({sizes, rate, eta});
        return pct + " " + Bar(s, static_cast<int>(inner)) + " " + rest;
      }
    }
    return tail;
  }
  return Join(candidates.back()).substr(0, max);
}

std::string FormatSummary(const DownloadSummary& s) {
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f s", s.seconds);
  std::string line = "downloaded " + FormatBytes(static_cast<double>(s.size_bytes)) + " in " + secs;
  if (s.seconds > 0) {
    line += " (" + FormatBytes(static_cast<double>(s.size_bytes) / s.seconds) + "/s)";
  }
  if (s.bytes_from_peers == 0 && s.bytes_from_origin == 0) return line + ": from the local cache";
  return line + ": " + FormatBytes(static_cast<double>(s.bytes_from_peers)) + " from peers, " +
         FormatBytes(static_cast<double>(s.bytes_from_origin)) + " from the origin";
}

void RateMeter::Add(Clock::time_point now, uint64_t bytes) {
  if (!samples_.empty() && bytes < samples_.back().second) samples_.clear();
  samples_.emplace_back(now, bytes);
  // Keep one sample at or before the window's start, so the average spans the whole window.
  while (samples_.size() > 2 && samples_[1].first <= now - window_) samples_.pop_front();
}

double RateMeter::rate_bytes_per_sec() const {
  if (samples_.size() < 2) return 0;
  const auto& [t0, b0] = samples_.front();
  const auto& [t1, b1] = samples_.back();
  double dt = std::chrono::duration<double>(t1 - t0).count();
  if (dt < 0.1) return 0;
  return static_cast<double>(b1 - b0) / dt;
}

int TerminalWidth(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    int w = std::atoi(c);
    if (w > 0) return w;
  }
  return 80;
}

ProgressBar::ProgressBar(std::FILE* out, bool enabled)
    : out_(out), enabled_(enabled && ::isatty(::fileno(out)) != 0) {}

void ProgressBar::Update(int64_t total_bytes, uint64_t done_bytes) {
  if (!enabled_) return;
  auto now = RateMeter::Clock::now();
  meter_.Add(now, done_bytes);
  if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  ProgressSnapshot s{total_bytes, done_bytes, meter_.rate_bytes_per_sec()};
  // \r, the line, then erase to the end of the line: a shorter line leaves nothing behind.
  std::fprintf(out_, "\r%s\x1b[K", FormatProgressLine(s, TerminalWidth(::fileno(out_))).c_str());
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::Finish(const DownloadSummary& summary) {
  if (!enabled_) return;
  std::string line = FormatSummary(summary);
  std::fprintf(out_, "\r%s\x1b[K\n", line.c_str());
  std::fflush(out_);
  drawn_ = false;
}

void ProgressBar::Clear() {
  if (!enabled_ || !drawn_) return;
  std::fputs("\r\x1b[K", out_);
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace df
