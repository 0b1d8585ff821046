// Origins: where a task's bytes come from when no peer has them ("back to source").
//
// One small interface with an implementation per URL scheme: http(s) through libcurl
// (ranged GETs, redirects, TLS, custom headers) and file://. Later issues add OCI registries,
// object storage (s3://) and model hubs behind the same seam.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace df {

struct BackendRequest {
  std::string url;
  std::map<std::string, std::string> headers;  // sent as-is ("Authorization", "Cookie", ...)
  int64_t timeout_ms = 0;                      // whole request; 0 = none
  int64_t connect_timeout_ms = 10000;
};

struct ObjectInfo {
  int64_t content_length = -1;  // -1 when the origin did not say
  bool supports_range = false;  // ranged reads can start anywhere
};

// Receives bytes in order. Returning a non-OK Status aborts the read with that status.
using ByteSink = std::function<Status(const char* data, size_t n)>;

// Thread-safe: several threads may read from one backend at once.
//
// Errors, shared by Stat and Read:
//   NotFound          404, 410
//   PermissionDenied  401, 403
//   Unavailable       resolve/connect/TLS/reset, and answers worth retrying: 408, 429 and 5xx
//                     other than 501/505 (the origin is busy or briefly broken)
//   HttpError         any other non-2xx answer, and an answer that cannot be trusted: a malformed
//                     or mismatched Content-Range, a malformed or conflicting Content-Length,
//                     a redirect to a scheme other than http(s), oversized response headers
//   DeadlineExceeded  BackendRequest.timeout_ms passed (also when the origin stalls mid-body)
//   InvalidArgument   a malformed URL or one whose scheme the backend does not serve
class Backend {
 public:
  virtual ~Backend() = default;

  // Size and range support of the object. Reads no more of the body than it needs to learn them
  // (an origin that answers a one-byte probe with the whole object is cut off after its headers).
  // content_length is -1 when the origin did not say (a "*" total, no Content-Length), never a
  // guess: a size that does not parse is an HttpError.
  virtual Result<ObjectInfo> Stat(const BackendRequest& req) = 0;

  // Streams bytes [offset, offset + length) to `sink`; length < 0 means "to the end". The sink
  // never receives more than `length` bytes, and receives none until the answer is known to
  // carry exactly the bytes asked for:
  //   - an origin that ignores Range from offset 0 (200, whole object) is cut off at `length`;
  //   - one that ignores Range at offset > 0 is an HttpError before any byte reaches the sink;
  //   - a 206 whose Content-Range is missing, malformed or names other bytes is an HttpError.
  // DataLoss when the origin sends fewer bytes than asked; a non-OK sink status ends the read
  // and is returned as is.
  virtual Status Read(const BackendRequest& req, uint64_t offset, int64_t length,
                      const ByteSink& sink) = 0;
};

// Backends by URL scheme. Thread-safe after construction.
class BackendRegistry {
 public:
  // http, https, file. `extra_ca_file`: PEM CAs trusted for https besides the system's ("": the
  // system's only).
  explicit BackendRegistry(const std::string& extra_ca_file = "");
  ~BackendRegistry();
  // The backend for `url`'s scheme; InvalidArgument for an unsupported or missing scheme.
  Result<Backend*> ForUrl(std::string_view url);

 private:
  std::unique_ptr<Backend> http_;
  std::unique_ptr<Backend> file_;
};

// A Content-Range header value of a 206 answer: "bytes <first>-<last>/<total>", or
// "bytes <first>-<last>/*" when the origin does not know the total.
struct ContentRange {
  uint64_t first = 0;
  uint64_t last = 0;              // inclusive
  std::optional<uint64_t> total;  // nullopt for "*"
};

// Parses `value` (without surrounding whitespace) strictly; nullopt unless it is exactly the
// form above with unit "bytes" (any case), decimal numbers that fit in int64_t, first <= last
// and last < total. The unsatisfied-range form "bytes */<total>" is rejected too: it never
// describes a body.
std::optional<ContentRange> ParseContentRange(std::string_view value);

// `extra_ca_file` as for BackendRegistry.
std::unique_ptr<Backend> NewHttpBackend(const std::string& extra_ca_file = "");
std::unique_ptr<Backend> NewFileBackend();

}  // namespace df
