#include "common/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace df {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Splits "12.5MiB" into 12.5 and "mib". Fails on an empty or negative number.
Result<std::pair<double, std::string>> SplitNumber(std::string_view text) {
  std::string s = Lower(text);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  size_t start = i;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == start) return InvalidArgument("'" + std::string(text) + "' is not a number with a unit");
  char* end = nullptr;
  std::string num = s.substr(start, i - start);
  double v = std::strtod(num.c_str(), &end);
  if (end != num.c_str() + num.size()) return InvalidArgument("bad number '" + num + "'");
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return std::make_pair(v, s.substr(i));
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text) {
  auto r = SplitNumber(text);
  if (!r.ok()) return r.status();
  auto [v, unit] = r.value();
  double mult;
  if (unit.empty() || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    mult = 1024.0;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tb" || unit == "tib")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    return InvalidArgument("unknown size unit '" + unit + "' in '" + std::string(text) + "'");
  double bytes = v * mult;
  if (bytes > 9.0e18) return InvalidArgument("size '" + std::string(text) + "' is too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<uint64_t> ParseRateBytesPerSec(std::string_view text) {
  auto r = SplitNumber(text);
  if (!r.ok()) return r.status();
  auto [v, unit] = r.value();
  double bits_per_sec;
  if (unit == "bit" || unit == "bps")
    bits_per_sec = v;
  else if (unit == "kbit" || unit == "kbps")
    bits_per_sec = v * 1e3;
  else if (unit == "mbit" || unit == "mbps")
    bits_per_sec = v * 1e6;
  else if (unit == "gbit" || unit == "gbps")
    bits_per_sec = v * 1e9;
  else if (unit == "b/s")
    bits_per_sec = v * 8;
  else if (unit == "kb/s")
    bits_per_sec = v * 8e3;
  else if (unit == "mb/s")
    bits_per_sec = v * 8e6;
  else if (unit == "gb/s")
    bits_per_sec = v * 8e9;
  else
    return InvalidArgument("unknown rate unit '" + unit + "' (use kbit, mbit, gbit or MB/s)");
  double bytes_per_sec = bits_per_sec / 8;
  if (bytes_per_sec > 9.0e18)
    return InvalidArgument("rate '" + std::string(text) + "' is too large");
  return static_cast<uint64_t>(bytes_per_sec);
}

Result<uint64_t> ParseDurationMs(std::string_view text) {
  auto r = SplitNumber(text);
  if (!r.ok()) return r.status();
  auto [v, unit] = r.value();
  double ms;
  if (unit.empty() || unit == "s")
    ms = v * 1000;
  else if (unit == "ms")
    ms = v;
  else if (unit == "m" || unit == "min")
    ms = v * 60000;
  else if (unit == "h")
    ms = v * 3600000;
  else
    return InvalidArgument("unknown duration unit '" + unit + "' (use ms, s, m or h)");
  // Durations end up added to a clock's time point (int64 nanoseconds, ~292 years): a longer
  // one would overflow there.
  if (ms > static_cast<double>(kMaxDurationMs)) {
    return InvalidArgument("duration '" + std::string(text) + "' is longer than 100 years");
  }
  return static_cast<uint64_t>(std::llround(ms));
}

std::string FormatBytes(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  // At most 3 digits before the point ("1019.0 KiB" is "1.0 MiB"): a rate near a unit's end
  // keeps the width of the line it is in, so a progress bar does not jump between layouts.
  while (bytes >= 999.95 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f %s", bytes, kUnits[u]);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", bytes, kUnits[u]);
  return buf;
}

}  // namespace df
