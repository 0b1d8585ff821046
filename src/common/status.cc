#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace df {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kUnavailable:
      return "Unavailable";
    case StatusCode::kDataLoss:
      return "DataLoss";
    case StatusCode::kNoSpace:
      return "NoSpace";
    case StatusCode::kIoError:
      return "IoError";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kCancelled:
      return "Cancelled";
    case StatusCode::kInternal:
      return "Internal";
    case StatusCode::kHttpError:
      return "HttpError";
    case StatusCode::kAborted:
      return "Aborted";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status ErrnoStatus(const std::string& operation, int err) {
  std::string msg = operation + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return {StatusCode::kNoSpace, msg};
    case ENOENT:
      return {StatusCode::kNotFound, msg};
    case EACCES:
    case EPERM:
      return {StatusCode::kPermissionDenied, msg};
    default:
      return {StatusCode::kIoError, msg};
  }
}

}  // namespace df
