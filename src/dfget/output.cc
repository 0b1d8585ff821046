#include "dfget/output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

namespace df {

namespace {

const char* KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

}  // namespace

Result<OutputTarget> ResolveOutput(const std::string& arg) {
  OutputTarget t;
  if (arg == "-") {
    t.kind = OutputTarget::kStream;
    t.path = "stdout";
    t.fd = STDOUT_FILENO;
    return t;
  }
  struct stat st {};
  if (::stat(arg.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
      return InvalidArgument("-O " + arg + " is " + KindOf(st.st_mode) +
                             ": give a file path, '-' for stdout, a fifo or a character device");
    }
    // O_NOCTTY: a terminal as output must not become dfget's controlling terminal.
    t.owned.Reset(::open(arg.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY));
    if (!t.owned) return ErrnoStatus("open " + arg, errno);
    t.kind = OutputTarget::kStream;
    t.path = arg;
    t.fd = t.owned.get();
    return t;
  }
  std::error_code ec;
  t.kind = OutputTarget::kPlace;
  t.path = std::filesystem::absolute(arg, ec).lexically_normal().string();
  return t;
}

Status ContentStreamer::Open(const std::string& content_path) {
  if (in_) return Status::Ok();
  in_.Reset(::open(content_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in_) {
    return ErrnoStatus("open the daemon's content file " + content_path +
                           " (streaming reads it: the daemon's data dir must be readable by you)",
                       errno);
  }
  return Status::Ok();
}

Status ContentStreamer::WaitWritable() {
  pollfd p{out_fd_, POLLOUT, 0};
  if (::poll(&p, 1, -1) < 0 && errno != EINTR) return ErrnoStatus("poll the output", errno);
  return Status::Ok();
}

Status ContentStreamer::CopyUpTo(uint64_t ready) {
  if (ready <= written_) return Status::Ok();
  if (!in_) return Internal("content file not open");
  while (sendfile_works_ && written_ < ready) {
    off_t offset = static_cast<off_t>(written_);
    ssize_t n = ::sendfile(out_fd_, in_.get(), &offset, ready - written_);
    if (n > 0) {
      written_ += static_cast<uint64_t>(n);
    } else if (n == 0) {
      return IoError("the content file ends at " + std::to_string(written_) + " bytes, before " +
                     std::to_string(ready));
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      DF_RETURN_IF_ERROR(WaitWritable());  // an O_NONBLOCK output inherited from the shell
    } else if (errno == EINVAL || errno == ENOSYS) {
      sendfile_works_ = false;  // e.g. a terminal, or an output opened O_APPEND
    } else {
      return ErrnoStatus("write to the output", errno);
    }
  }
  return CopyByReadWrite(ready);
}

Status ContentStreamer::CopyByReadWrite(uint64_t ready) {
  constexpr size_t kBufferBytes = 1 << 20;
  if (written_ < ready && buffer_.empty()) buffer_.resize(kBufferBytes);
  while (written_ < ready) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kBufferBytes, ready - written_));
    ssize_t n = ::pread(in_.get(), buffer_.data(), want, static_cast<off_t>(written_));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("read the content file", errno);
    if (n == 0) return IoError("the content file ends before " + std::to_string(ready) + " bytes");
    size_t off = 0;
    while (off < static_cast<size_t>(n)) {
      ssize_t w = ::write(out_fd_, buffer_.data() + off, static_cast<size_t>(n) - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        DF_RETURN_IF_ERROR(WaitWritable());
        continue;
      }
      if (w < 0) return ErrnoStatus("write to the output", errno);
      off += static_cast<size_t>(w);
    }
    written_ += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

}  // namespace df
