#include "common/fd.h"

#include <cerrno>
#include <string>

namespace df {

Status WriteAllAt(int fd, const void* data, size_t n, uint64_t offset, std::string_view what) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      return ErrnoStatus(std::string(what) + " at offset " + std::to_string(offset), errno);
    }
    if (w == 0) return IoError(std::string(what) + ": the file takes no more bytes");
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

bool ReadAllAt(int fd, void* data, size_t n, uint64_t offset) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t got = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return true;
}

}  // namespace df
