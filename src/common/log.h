// Logging: spdlog, one line per event, "key=value" fields after the message so that logs are
// greppable and machine-parsable. Per-piece events log only at debug.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

#include "common/status.h"

namespace df {

// Sets the global logger: level ("trace".."off"), and an optional file (empty = stderr).
// Returns InvalidArgument for an unknown level. Call once from main before any thread starts.
Status InitLogging(const std::string& component, const std::string& level,
                   const std::string& file = "");

}  // namespace df

// Runtime-filtered, so --log-level debug shows them; when off, the level check comes before the
// arguments are evaluated, so per-piece lines cost nothing on the data path.
#define DF_LOG_TRACE(...)                                                     \
  do {                                                                        \
    if (spdlog::should_log(spdlog::level::trace)) spdlog::trace(__VA_ARGS__); \
  } while (0)
#define DF_LOG_DEBUG(...)                                                     \
  do {                                                                        \
    if (spdlog::should_log(spdlog::level::debug)) spdlog::debug(__VA_ARGS__); \
  } while (0)
#define DF_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define DF_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define DF_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
