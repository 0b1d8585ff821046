// Status and Result<T>: errors as values on the normal path.
//
// A Status is either OK or carries a code and a one-line message naming the operation and the
// object it concerns ("open /var/lib/df/x: No such file or directory"). Result<T> holds a T or a
// non-OK Status. Both are cheap to move and thread-compatible (no internal synchronisation).
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace df {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,          // origin 404, unknown task, missing file
  kPermissionDenied,  // origin 401/403
  kUnavailable,       // host unreachable, daemon not running, connection reset
  kDataLoss,          // CRC32C or digest mismatch
  kNoSpace,           // ENOSPC / EDQUOT
  kIoError,
  kDeadlineExceeded,
  kCancelled,
  kInternal,
  kHttpError,  // origin answered with another non-2xx status
  kAborted,    // cut short by someone else's failure (a parent's upstream), not the callee's
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CodeName: message", or "OK".
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status Unavailable(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status DataLoss(std::string m) { return {StatusCode::kDataLoss, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
// An I/O error from errno: ENOSPC/EDQUOT map to kNoSpace, ENOENT to kNotFound.
Status ErrnoStatus(const std::string& operation, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }  // NOLINT

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace df

// Returns early from the enclosing function when `expr` yields a non-OK Status.
#define DF_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::df::Status df_status_ = (expr);        \
    if (!df_status_.ok()) return df_status_; \
  } while (0)
