// Where dfget puts a download.
//
// A regular file (or a path where nothing is yet) is placed by the daemon atomically: a link or
// copy under a temporary name, then rename(2) (TaskManager's PlaceOutput). Everything that
// cannot be replaced is streamed instead, by dfget itself with the user's permissions: `-O -`
// (stdout, whatever it is) and a path that resolves to a fifo or a character device
// (`-O /dev/stdout` on a pipe, `-O /dev/null`). Streamed bytes come from the daemon's content
// file in byte order as its finished prefix grows (DownloadResponse.ready_length), copied in the
// kernel (sendfile) where the output allows it: the file is written once, by the daemon, and
// read once. A directory, socket, block device, or symlink to anything else is refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace df {

struct OutputTarget {
  // kPlace: the daemon places `path`; kStream: dfget writes to `fd` as bytes arrive.
  enum Kind { kPlace, kStream };
  Kind kind = kPlace;
  std::string path;  // absolute (kPlace) or as given (kStream), for messages
  UniqueFd owned;    // kStream on a path dfget opened; -1 for stdout (not dfget's to close)
  int fd = -1;       // kStream: where bytes go
};

// Decides what `arg` (-O's value) is: "-" is stdout; a path whose target (symlinks followed) is
// a fifo or character device is opened for writing (blocks on a fifo until a reader opens it,
// as any writer does); an absent path or a regular file is placed by the daemon (which refuses
// a symlink). InvalidArgument for a directory, socket or block device; the open's error
// otherwise.
Result<OutputTarget> ResolveOutput(const std::string& arg);

// Copies a content file that grows at its end to an output, in order. Not thread-safe.
class ContentStreamer {
 public:
  explicit ContentStreamer(int out_fd) : out_fd_(out_fd) {}
  // Opens the content file once (later calls with any path do nothing): the fd stays valid
  // even if the daemon removes the file meanwhile (GC after the download).
  Status Open(const std::string& content_path);
  bool opened() const { return static_cast<bool>(in_); }
  // Writes content bytes [written(), ready) to the output. sendfile where the output takes it
  // (pipes, regular files), else pread+write. IoError when the output fails (EPIPE: the reader
  // went away) or the content is shorter than `ready`.
  Status CopyUpTo(uint64_t ready);
  uint64_t written() const { return written_; }

 private:
  Status CopyByReadWrite(uint64_t ready);
  Status WaitWritable();

  int out_fd_;
  UniqueFd in_;
  uint64_t written_ = 0;
  bool sendfile_works_ = true;
  std::vector<char> buffer_;  // the pread+write fallback's, allocated once
};

}  // namespace df
