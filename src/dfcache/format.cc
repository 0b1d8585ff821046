#include "dfcache/format.h"

#include <algorithm>

namespace df {

std::string FormatAge(int64_t then_unix_ms, int64_t now_unix_ms) {
  if (then_unix_ms <= 0 || then_unix_ms > now_unix_ms + 1000) return "-";
  int64_t s = std::max<int64_t>(0, (now_unix_ms - then_unix_ms) / 1000);
  if (s < 60) return std::to_string(s) + "s ago";
  if (s < 3600) return std::to_string(s / 60) + "m ago";
  if (s < 86400) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string FormatTaskState(bool done, bool running, uint32_t finished, uint32_t total) {
  if (done) return "done";
  std::string counts = std::to_string(finished) + "/" + std::to_string(total);
  if (running) return "running " + counts;
  if (total == 0) return "new";
  return "partial " + counts;
}

}  // namespace df
