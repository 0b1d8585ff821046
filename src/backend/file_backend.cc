// file:// origin: a local path read with pread, for tests and for seeding from local disks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "backend/backend.h"
#include "common/fd.h"

namespace df {
namespace {

std::string PathOf(const std::string& url) { return url.substr(std::string("file://").size()); }

class FileBackend : public Backend {
 public:
  Result<ObjectInfo> Stat(const BackendRequest& req) override {
    struct stat st;
    std::string path = PathOf(req.url);
    if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("stat " + path, errno);
    if (!S_ISREG(st.st_mode)) return InvalidArgument(path + " is not a regular file");
    return ObjectInfo{st.st_size, true};
  }

  Status Read(const BackendRequest& req, uint64_t offset, int64_t length,
              const ByteSink& sink) override {
    std::string path = PathOf(req.url);
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return ErrnoStatus("open " + path, errno);
    std::vector<char> buf(1 << 20);
    uint64_t left = length < 0 ? UINT64_MAX : static_cast<uint64_t>(length);
    while (left > 0) {
      size_t want = left < buf.size() ? left : buf.size();
      ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus("read " + path, errno);
      }
      if (n == 0) break;
      DF_RETURN_IF_ERROR(sink(buf.data(), static_cast<size_t>(n)));
      offset += static_cast<uint64_t>(n);
      left -= static_cast<uint64_t>(n);
    }
    if (length >= 0 && left > 0) return DataLoss(path + ": file is shorter than the range asked");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Backend> NewFileBackend() { return std::make_unique<FileBackend>(); }

}  // namespace df
