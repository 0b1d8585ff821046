// Fuzz target: the task-spec validator (src/common/task_spec.h) and FilterQueryParams
// (src/common/ids.h). The input is decoded into a TaskSpec, a layout claim and a URL policy.
//
// Invariants: a URL that validates has an allowed scheme, no space or control character and at
// most kMaxUrlBytes; a spec that validates has a 64-hex id that CheckTaskId accepts, the same id
// for the URL with its filtered parameters already removed, and for a content-addressed spec the
// digest's hex; FilterQueryParams is idempotent, never grows the URL and keeps URLs without a
// query as they are; a layout that ExpectedLayout or CheckLayout accepts has at most
// kMaxPieceCount pieces that cover the content exactly.
#include <string>
#include <vector>

#include "common/ids.h"
#include "common/task_spec.h"
#include "fuzz_input.h"

namespace {

bool IsLowerHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// A piece length: mostly powers of two (the valid ones and their neighbours), sometimes raw.
uint64_t PieceLength(df::fuzz::FuzzInput& in) {
  uint8_t sel = in.U8();
  if (sel == 0) return 0;
  if (sel < 64) return uint64_t{1} << sel;
  if (sel < 128) return (uint64_t{1} << (sel - 64)) + 1;
  return in.U64();
}

df::UrlPolicy Policy(uint8_t sel) {
  df::UrlPolicy policy;
  switch (sel % 3) {
    case 0:
      break;  // file:// refused
    case 1:
      policy.allow_any_file = true;  // the scheduler's policy
      break;
    default:
      // A daemon's allow_file_dirs: a missing directory and a real one whose symlinks lead out.
      policy.file_dirs = {"/nonexistent-df-fuzz", "/etc"};
  }
  return policy;
}

void CheckUrl(std::string_view url, const df::UrlPolicy& policy) {
  if (!df::ValidateUrl(url, policy).ok()) return;
  DF_FUZZ_CHECK(!url.empty() && url.size() <= df::kMaxUrlBytes);
  for (char c : url) {
    auto u = static_cast<unsigned char>(c);
    DF_FUZZ_CHECK(u > 0x20 && u != 0x7f);
  }
  DF_FUZZ_CHECK(
      StartsWith(url, "http://") || StartsWith(url, "https://") ||
      (StartsWith(url, "file:///") && (policy.allow_any_file || !policy.file_dirs.empty())));
}

void CheckFilter(const std::string& url, const std::vector<std::string>& filtered) {
  std::string once = df::FilterQueryParams(url, filtered);
  DF_FUZZ_CHECK(once.size() <= url.size());
  DF_FUZZ_CHECK(df::FilterQueryParams(once, filtered) == once);
  if (filtered.empty() || url.find('?') == std::string::npos) DF_FUZZ_CHECK(once == url);
}

void CheckSpec(const df::TaskSpec& spec, const df::UrlPolicy& policy) {
  if (!df::ValidateTaskSpec(spec, policy).ok()) return;
  std::string id = df::TaskSpecId(spec);
  DF_FUZZ_CHECK(IsLowerHex64(id));
  DF_FUZZ_CHECK(df::TaskSpecId(spec) == id);
  DF_FUZZ_CHECK(df::CheckTaskId(spec, id).ok());
  if (spec.id_from_digest) {
    std::string hex = spec.digest.substr(spec.digest.find(':') + 1);
    for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    DF_FUZZ_CHECK(id == hex);
  } else {
    df::TaskSpec filtered = spec;
    filtered.url = df::FilterQueryParams(spec.url, spec.filtered_query_params);
    DF_FUZZ_CHECK(df::TaskSpecId(filtered) == id);
  }
}

void CheckLayouts(uint64_t spec_piece_length, int64_t content_length, uint64_t piece_length,
                  int64_t total_pieces) {
  auto layout = df::ExpectedLayout(spec_piece_length, content_length);
  if (layout.ok()) {
    const df::PieceLayout& l = layout.value();
    DF_FUZZ_CHECK(content_length >= 0 && l.content_length == static_cast<uint64_t>(content_length));
    DF_FUZZ_CHECK(df::IsValidPieceLength(l.piece_length));
    DF_FUZZ_CHECK(spec_piece_length == 0 || l.piece_length == spec_piece_length);
    uint64_t n = l.total_pieces();
    DF_FUZZ_CHECK(n <= df::kMaxPieceCount);
    DF_FUZZ_CHECK(n * l.piece_length >= l.content_length);  // no overflow: n <= 2^24, pl <= 2^30
    if (n > 0) {
      DF_FUZZ_CHECK((n - 1) * l.piece_length < l.content_length);
      uint64_t last = l.length(df::PieceNumber{static_cast<uint32_t>(n - 1)});
      DF_FUZZ_CHECK(last >= 1 && last <= l.piece_length);
    } else {
      DF_FUZZ_CHECK(l.content_length == 0);
    }
  }
  if (df::CheckLayout(spec_piece_length, content_length, piece_length, total_pieces).ok()) {
    DF_FUZZ_CHECK(layout.ok() && layout->piece_length == piece_length);
    DF_FUZZ_CHECK(layout->total_pieces() <= df::kMaxPieceCount);
    DF_FUZZ_CHECK(total_pieces < 0 ||
                  static_cast<uint64_t>(total_pieces) == layout->total_pieces());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  df::fuzz::FuzzInput in(data, size);
  const uint8_t flags = in.U8();
  const df::UrlPolicy policy = Policy(in.U8());

  // Layout claims: sizes near piece boundaries and the piece count cap, or raw.
  uint64_t spec_piece_length = PieceLength(in);
  uint64_t piece_length = (flags & 1) ? spec_piece_length : PieceLength(in);
  auto content_length = static_cast<int64_t>(in.U64());
  if (flags & 2) content_length = static_cast<int64_t>(uint64_t{in.U32()} << (in.U8() % 40));
  int64_t total_pieces = (flags & 4) ? -1 : static_cast<int64_t>(in.U64());
  CheckLayouts(spec_piece_length, content_length, piece_length, total_pieces);

  df::TaskSpec spec;
  spec.piece_length = spec_piece_length;
  spec.id_from_digest = (flags & 8) != 0;
  spec.tag = in.ShortString();
  spec.application = in.ShortString();
  spec.digest = in.ShortString();
  for (uint8_t n = in.U8() % 4; n > 0; --n) spec.filtered_query_params.push_back(in.ShortString());
  spec.url = std::string(in.Rest());

  CheckUrl(spec.url, policy);
  CheckFilter(spec.url, spec.filtered_query_params);
  CheckSpec(spec, policy);
  return 0;
}
