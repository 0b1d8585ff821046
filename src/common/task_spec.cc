#include "common/task_spec.h"

#include <climits>
#include <cstdlib>
#include <memory>

#include "common/digest.h"
#include "common/ids.h"

namespace df {
namespace {

std::string Shown(std::string_view url) {
  std::string s(url.substr(0, 200));
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return url.size() > 200 ? s + "..." : s;
}

bool HasPrefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// The canonical form of an existing path (symlinks and ".." resolved), or "" when it has none.
std::string RealPath(const std::string& path) {
  std::unique_ptr<char, decltype(&std::free)> p(::realpath(path.c_str(), nullptr), &std::free);
  return p ? std::string(p.get()) : std::string();
}

Status ValidateFileUrl(std::string_view url, const UrlPolicy& policy) {
  std::string path(url.substr(std::string_view("file://").size()));
  if (policy.allow_any_file && !path.empty() && path[0] == '/') return Status::Ok();
  if (policy.file_dirs.empty()) {
    return InvalidArgument("file:// URLs are not allowed on this daemon (see allow_file_dirs)");
  }
  if (path.empty() || path[0] != '/') return InvalidArgument("file:// URL needs an absolute path");
  // The file must exist for the check: a path under an allowed directory by name could still
  // leave it through a symlink or "..", so only the resolved path counts.
  std::string real = RealPath(path);
  if (real.empty()) return InvalidArgument("file:// path " + Shown(path) + " does not exist");
  for (const std::string& dir : policy.file_dirs) {
    std::string real_dir = RealPath(dir);
    if (real_dir.empty()) continue;
    if (real_dir == "/" || HasPrefix(real, real_dir + "/")) return Status::Ok();
  }
  return InvalidArgument("file:// path " + Shown(path) + " is outside the allowed directories");
}

}  // namespace

Status ValidateUrl(std::string_view url, const UrlPolicy& policy) {
  if (url.empty()) return InvalidArgument("url is empty");
  if (url.size() > kMaxUrlBytes) {
    return InvalidArgument("url is longer than " + std::to_string(kMaxUrlBytes) + " bytes");
  }
  for (char c : url) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return InvalidArgument("url " + Shown(url) + " contains a space or control character");
    }
  }
  if (HasPrefix(url, "file://")) return ValidateFileUrl(url, policy);
  std::string_view rest;
  if (HasPrefix(url, "http://")) {
    rest = url.substr(7);
  } else if (HasPrefix(url, "https://")) {
    rest = url.substr(8);
  } else {
    return InvalidArgument("unsupported URL '" + Shown(url) + "' (use http:// or https://)");
  }
  std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  std::string_view host = authority.substr(
      authority.rfind('@') == std::string_view::npos ? 0 : authority.rfind('@') + 1);
  if (host.empty() || host[0] == ':') return InvalidArgument("url " + Shown(url) + " has no host");
  return Status::Ok();
}

Status ValidateTaskSpec(const TaskSpec& spec, const UrlPolicy& policy) {
  DF_RETURN_IF_ERROR(ValidateUrl(spec.url, policy));
  if (spec.piece_length != 0 && !IsValidPieceLength(spec.piece_length)) {
    return InvalidArgument("piece length must be a power of two between 64 KiB and 1 GiB");
  }
  if (!spec.digest.empty()) {
    auto d = ParseDigest(spec.digest);
    if (!d.ok()) return d.status();
  } else if (spec.id_from_digest) {
    return InvalidArgument("a content-addressed task needs a digest");
  }
  if (spec.tag.size() > 1024 || spec.application.size() > 1024) {
    return InvalidArgument("tag and application are limited to 1024 bytes");
  }
  return Status::Ok();
}

std::string TaskSpecId(const TaskSpec& spec) {
  if (spec.id_from_digest) {
    auto d = ParseDigest(spec.digest);
    return d.ok() ? d->hex : std::string();
  }
  return TaskId(TaskIdInput{spec.url, spec.tag, spec.application, spec.piece_length,
                            spec.filtered_query_params});
}

Status CheckTaskId(const TaskSpec& spec, std::string_view claimed_id) {
  std::string id = TaskSpecId(spec);
  if (id.empty() || id != claimed_id) {
    return Status(StatusCode::kPermissionDenied,
                  "task id " + Shown(claimed_id) + " is not the id of " + Shown(spec.url));
  }
  return Status::Ok();
}

Result<PieceLayout> ExpectedLayout(uint64_t spec_piece_length, int64_t content_length) {
  if (content_length < 0) return InvalidArgument("content length is negative");
  uint64_t piece_length =
      spec_piece_length != 0 ? spec_piece_length : ChoosePieceLength(content_length);
  if (!IsValidPieceLength(piece_length)) {
    return InvalidArgument("piece length " + std::to_string(piece_length) + " is not valid");
  }
  uint64_t size = static_cast<uint64_t>(content_length);
  if (size / piece_length + (size % piece_length != 0) > kMaxPieceCount) {
    return InvalidArgument("content length " + std::to_string(size) + " needs more than " +
                           std::to_string(kMaxPieceCount) + " pieces of " +
                           std::to_string(piece_length) + " bytes");
  }
  return PieceLayout{size, piece_length};
}

Status CheckLayout(uint64_t spec_piece_length, int64_t content_length, uint64_t piece_length,
                   int64_t total_pieces) {
  auto want = ExpectedLayout(spec_piece_length, content_length);
  if (!want.ok()) return want.status();
  if (piece_length != want->piece_length) {
    return InvalidArgument("piece length " + std::to_string(piece_length) + " for " +
                           std::to_string(content_length) + " bytes; the task spec implies " +
                           std::to_string(want->piece_length));
  }
  if (total_pieces >= 0 && static_cast<uint64_t>(total_pieces) != want->total_pieces()) {
    return InvalidArgument("total pieces " + std::to_string(total_pieces) + " for " +
                           std::to_string(content_length) + " bytes; expected " +
                           std::to_string(want->total_pieces()));
  }
  return Status::Ok();
}

}  // namespace df
