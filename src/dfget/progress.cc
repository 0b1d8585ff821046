#include "dfget/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "common/units.h"

namespace df {

namespace {

std::string Percent(const ProgressSnapshot& s) {
  if (s.total_bytes <= 0) return s.total_bytes == 0 ? "100%" : "";
  double frac =
      std::min(1.0, static_cast<double>(s.done_bytes) / static_cast<double>(s.total_bytes));
  char buf[8];
  std::snprintf(buf, sizeof buf, "%3d%%", static_cast<int>(std::floor(frac * 100)));
  return buf;
}

std::string Bar(const ProgressSnapshot& s, int inner) {
  double frac =
      s.total_bytes > 0
          ? std::min(1.0, static_cast<double>(s.done_bytes) / static_cast<double>(s.total_bytes))
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
  // With the total unknown, the size done leads the line in place of the percentage.
  const bool known = s.total_bytes >= 0;
  const std::string lead = known ? pct : done;
  const std::string sizes =
      known ? done + "/" + FormatBytes(static_cast<double>(s.total_bytes)) : "";
  const std::string rate = s.rate_bytes_per_sec > 0 ? FormatBytes(s.rate_bytes_per_sec) + "/s" : "";
  std::string eta;
  if (s.total_bytes >= 0) {
    double left = static_cast<double>(s.total_bytes) - static_cast<double>(s.done_bytes);
    eta = "ETA " +
          FormatEta(s.rate_bytes_per_sec > 0 ? std::max(0.0, left) / s.rate_bytes_per_sec : -1);
  }
  // Widest first; the first candidate that fits wins. A bar goes after the percentage when it
  // gets at least 12 columns (10 inside the brackets), at most 52.
  struct Candidate {
    bool bar;
    std::vector<std::string> rest;
  };
  const std::vector<Candidate> candidates = {{true, {sizes, rate, eta}},
                                             {false, {sizes, rate, eta}},
                                             {true, {rate, eta}},
                                             {false, {known ? done : "", rate, eta}},
                                             {false, {rate, eta}},
                                             {false, {eta}},
                                             {false, {}}};
  for (const Candidate& c : candidates) {
    std::string rest = Join(c.rest);
    if (c.bar) {
      if (s.total_bytes <= 0) continue;
      const size_t fixed = pct.size() + 2 + rest.size();  // "PCT [bar] REST"
      if (fixed + 12 > max) continue;
      const size_t inner = std::min<size_t>(max - fixed - 2, 50);
      return pct + " " + Bar(s, static_cast<int>(inner)) + " " + rest;
    }
    std::string line = Join({lead, rest});
    if (line.size() <= max) return line;
  }
  return lead.substr(0, max);
}

std::string FormatSummary(const DownloadSummary& s, int width) {
  char secs[32];
  std::snprintf(secs, sizeof secs, "in %.1f s", s.seconds);
  // Groups that stay on one line; between them a space, or a line break where the width ends.
  std::vector<std::string> groups = {"downloaded " + FormatBytes(static_cast<double>(s.size_bytes)),
                                     secs};
  if (s.seconds > 0) {
    groups.push_back("(" + FormatBytes(static_cast<double>(s.size_bytes) / s.seconds) + "/s):");
  } else {
    groups.back() += ":";
  }
  if (s.bytes_from_peers == 0 && s.bytes_from_origin == 0) {
    groups.push_back("from the local cache");
  } else {
    groups.push_back(FormatBytes(static_cast<double>(s.bytes_from_peers)) + " from peers,");
    groups.push_back(FormatBytes(static_cast<double>(s.bytes_from_origin)) + " from the origin");
  }
  const size_t max = width > 1 ? static_cast<size_t>(width - 1) : SIZE_MAX;
  std::string out;
  size_t line = 0;  // length of the current line
  for (const std::string& g : groups) {
    if (line > 0 && line + 1 + g.size() > max) {
      out += '\n';
      line = 0;
    } else if (line > 0) {
      out += ' ';
      ++line;
    }
    out += g;
    line += g.size();
  }
  return out;
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
  std::string line = FormatSummary(summary, TerminalWidth(::fileno(out_)));
  // Erase the bar first: a summary broken over lines leaves its first line shorter.
  std::fprintf(out_, "\r\x1b[K%s\n", line.c_str());
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
