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

// Runtime-filtered (an atomic level check when off), so --log-level debug shows them.
#define DF_LOG_TRACE(...) spdlog::trace(__VA_ARGS__)
#define DF_LOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
#define DF_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define DF_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define DF_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
