#include "common/malloc_tuning.h"

#include <malloc.h>

#include <climits>

namespace df {

bool KeepLargeBuffersInHeap(size_t mmap_threshold, size_t trim_threshold) {
  if (mmap_threshold > INT_MAX || trim_threshold > INT_MAX) return false;
  const bool mmap_ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmap_threshold)) == 1;
  const bool trim_ok = mallopt(M_TRIM_THRESHOLD, static_cast<int>(trim_threshold)) == 1;
  return mmap_ok && trim_ok;
}

}  // namespace df
