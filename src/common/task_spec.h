// TaskSpec: the one authority for what a task is (its id) and what shape its bytes may have.
//
// Every id, URL, size and piece length that arrives from the network (a dfget request, a seed
// trigger, a register on the scheduler, a parent's availability, the scheduler's metadata) goes
// through these functions before anything acts on it, so that nobody can choose which task an id
// names or make a peer allocate, fetch or finish something it should not:
//  - the task id is recomputed from the spec, never taken from the wire (TaskSpecId);
//  - only allowed URL schemes are fetched: http and https always, file:// only under directories
//    the operator listed (UrlPolicy);
//  - a layout is a content length with the piece length the spec implies: the requested one, or
//    ChoosePieceLength(content_length) when the spec leaves it to the size (ExpectedLayout), with
//    a piece count bounded by kMaxPieceCount.
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/piece.h"
#include "common/status.h"

namespace df {

// The most pieces a task may have: 16 Mi pieces (1 TiB at 64 KiB, 1 PiB at 64 MiB). Bounds the
// per-piece bookkeeping (bitmaps, CRCs) that a peer allocates from a size it was told.
constexpr uint64_t kMaxPieceCount = 1ull << 24;
// The longest URL accepted (as common HTTP servers and proxies do).
constexpr size_t kMaxUrlBytes = 8192;

// What identifies a task: the fields of a download request that make two downloads the same.
struct TaskSpec {
  std::string url;
  std::string tag;
  std::string application;
  uint64_t piece_length = 0;                       // 0 = chosen from the size (piece.h)
  std::vector<std::string> filtered_query_params;  // names dropped from the URL for the id
  std::string digest;                              // "sha256:HEX" of the whole content, or empty
  // True for content-addressed tasks (OCI blobs): the id is the digest's hex, so the same
  // content fetched through two URLs is one task.
  bool id_from_digest = false;
};

// Which URLs a daemon may fetch from the origin.
struct UrlPolicy {
  // file:// URLs are allowed only for paths under one of these directories (absolute, no "..").
  // Empty: file:// is refused.
  std::vector<std::string> file_dirs;
  // Accept any absolute file:// path without looking at the local disk: for the scheduler,
  // which never reads URLs itself (each seed checks them against its own file_dirs).
  bool allow_any_file = false;
};

// OK when `url` is one this daemon may fetch: http:// or https:// with a host, or file:// under
// an allowed directory; no control characters, at most kMaxUrlBytes. InvalidArgument naming the
// problem otherwise (the message never echoes more than the first 200 bytes of the URL).
Status ValidateUrl(std::string_view url, const UrlPolicy& policy);

// OK when the spec is well formed: a valid URL (ValidateUrl), a piece length of 0 or valid
// (IsValidPieceLength), a digest that is empty or "sha256:" + 64 hex digits, and a digest
// when id_from_digest is set.
Status ValidateTaskSpec(const TaskSpec& spec, const UrlPolicy& policy);

// The task id of a spec (lowercase hex sha256; see ids.h). Precondition: ValidateTaskSpec ok.
std::string TaskSpecId(const TaskSpec& spec);

// OK when `claimed_id` is the id of `spec`; PermissionDenied otherwise (an id is never trusted).
Status CheckTaskId(const TaskSpec& spec, std::string_view claimed_id);

// The layout of a task of spec piece length `spec_piece_length` (0 = from the size) and size
// `content_length`, checked: content_length >= 0, the piece count within kMaxPieceCount.
// InvalidArgument otherwise.
Result<PieceLayout> ExpectedLayout(uint64_t spec_piece_length, int64_t content_length);

// OK when a layout told by someone else (a parent, the scheduler) is the one the spec implies:
// same piece length as ExpectedLayout, total pieces consistent. InvalidArgument naming both
// otherwise. `total_pieces` < 0 skips that check (the sender did not say).
Status CheckLayout(uint64_t spec_piece_length, int64_t content_length, uint64_t piece_length,
                   int64_t total_pieces = -1);

}  // namespace df
