// UniqueFd: RAII owner of a file descriptor. Move-only; closes on destruction. WriteAllAt:
// pwrite until every byte is written.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace df {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// Writes all of data[0..n) at `offset` of `fd` (retrying short writes and EINTR). The error
// names `what` and the offset.
Status WriteAllAt(int fd, const void* data, size_t n, uint64_t offset, std::string_view what);
// Reads exactly n bytes at `offset` of `fd` into `data` (retrying short reads and EINTR); false
// on an error or end of file first.
bool ReadAllAt(int fd, void* data, size_t n, uint64_t offset);

}  // namespace df
