// Names the calling thread, as `top -H`, `perf` and gdb show it. Without a name a thread shows
// its creator's: every piece worker of a download started by the local API showed as
// "grpcpp_sync_ser", which made the daemon's profile unreadable.
#pragma once

#include <pthread.h>

#include <string_view>

namespace df {

// `name`: at most 15 characters (the kernel's limit; longer names are cut).
inline void SetThreadName(std::string_view name) {
  char buf[16] = {};
  name.copy(buf, sizeof buf - 1);
  ::pthread_setname_np(::pthread_self(), buf);
}

}  // namespace df
