// What dfcache prints: URLs without their secrets, sizes, ages and task states. Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/redact.h"  // RedactUrl

namespace df {

// "3s ago", "5m ago", "2h ago", "4d ago"; "-" for 0 or a time in the future by more than 1 s.
std::string FormatAge(int64_t then_unix_ms, int64_t now_unix_ms);

// "done", "running 12/500", "partial 12/500" (stopped, resumes on the next download), "new".
std::string FormatTaskState(bool done, bool running, uint32_t finished, uint32_t total);

}  // namespace df
