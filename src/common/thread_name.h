// Names the calling thread, as `top -H`, `perf` and gdb show it. Without a name a thread shows
// its creator's: every piece worker of a download started by the local API showed as
// "grpcpp_sync_ser", which made the daemon's profile unreadable.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace df {

// `name`: at most 15 characters (the kernel's limit; longer names are cut).
inline void SetThreadName(std::string_view name) {
  char buf[16] = {};
  name.copy(buf, sizeof buf - 1);
  ::pthread_setname_np(::pthread_self(), buf);
}

// A thread that names itself `name` (as SetThreadName), then runs `fn`.
template <typename Fn>
std::thread NamedThread(std::string_view name, Fn&& fn) {
  return std::thread([name = std::string(name), fn = std::forward<Fn>(fn)]() mutable {
    SetThreadName(name);
    fn();
  });
}

}  // namespace df
