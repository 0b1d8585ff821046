// Fuzz target: ParseContentRange (src/backend/backend.h), the parser of an origin's
// Content-Range header. The input is the header value.
//
// Invariants: a value that parses is exactly "bytes <digits>-<digits>/<digits or *>" with "bytes"
// in any case; first <= last < total; every number fits int64_t; and the canonical form of the
// result parses to the same range.
#include <cctype>
#include <cstdint>
#include <limits>
#include <string>

#include "backend/backend.h"
#include "fuzz_input.h"

namespace {

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The grammar the parser documents, checked independently of it.
bool IsStrictForm(std::string_view v) {
  constexpr std::string_view kUnit = "bytes ";
  if (v.size() < kUnit.size()) return false;
  for (size_t i = 0; i < 5; ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) != kUnit[i]) return false;
  }
  if (v[5] != ' ') return false;
  v.remove_prefix(kUnit.size());
  size_t dash = v.find('-');
  size_t slash = v.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) {
    return false;
  }
  std::string_view total = v.substr(slash + 1);
  return AllDigits(v.substr(0, dash)) && AllDigits(v.substr(dash + 1, slash - dash - 1)) &&
         (total == "*" || AllDigits(total));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view value(reinterpret_cast<const char*>(data), size);
  auto range = df::ParseContentRange(value);
  if (!range) return 0;
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  DF_FUZZ_CHECK(IsStrictForm(value));
  DF_FUZZ_CHECK(range->first <= range->last);
  DF_FUZZ_CHECK(range->last <= kMax);
  if (range->total) {
    DF_FUZZ_CHECK(range->last < *range->total);
    DF_FUZZ_CHECK(*range->total <= kMax);
  }
  std::string canonical = "bytes " + std::to_string(range->first) + "-" +
                          std::to_string(range->last) + "/" +
                          (range->total ? std::to_string(*range->total) : std::string("*"));
  auto again = df::ParseContentRange(canonical);
  DF_FUZZ_CHECK(again && again->first == range->first && again->last == range->last &&
                again->total == range->total);
  return 0;
}
