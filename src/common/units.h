// Human units: byte sizes ("512MiB", "1G", "4096") and durations, parsed and printed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace df {

// Parses a byte size: a non-negative integer or decimal with an optional unit
// (B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB; KB and KiB both mean 1024). Case-insensitive.
Result<uint64_t> ParseSize(std::string_view text);

// Parses a rate in bits per second: "200mbit", "1gbit", "500kbit", or bytes with "MB/s".
// Returns bytes per second; InvalidArgument for other forms and above 9e18 bytes/s.
Result<uint64_t> ParseRateBytesPerSec(std::string_view text);

// The longest duration ParseDurationMs accepts: 100 years, in milliseconds.
constexpr uint64_t kMaxDurationMs = 100ull * 365 * 24 * 3600 * 1000;

// Parses a duration: "30s", "500ms", "2m", "1h", or a bare number of seconds. InvalidArgument
// for other forms and for more than kMaxDurationMs.
Result<uint64_t> ParseDurationMs(std::string_view text);

// "1.5 GiB", "12.0 MiB", "512 B"; at most 3 digits before the point (1000 B is "1.0 KiB").
std::string FormatBytes(double bytes);

}  // namespace df
