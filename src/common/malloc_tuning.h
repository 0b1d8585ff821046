// Keeps large buffers in the process's heap instead of mapping and unmapping them per use.
//
// glibc serves an allocation above its mmap threshold (128 KiB at start, raised as large
// blocks are freed) with a fresh mmap, and gives memory at the top of a heap back to the kernel
// past its trim threshold. A ModelInfer request of the bandwidth model is 773 KB for 64 pairs,
// and its tensors are as large: every call then faulted its pages in again (19 % of
// dfinference's CPU was page faults), and p50 was 8 ms instead of 2 (docs/learning.md,
// "Inference: latency"). Raising both thresholds keeps those blocks in the heap for reuse.
// What the process holds at its peak stays held: meant for dfinference and dfscheduler, whose
// large buffers are reused call after call.
#pragma once

#include <cstddef>

namespace df {

// Blocks below `mmap_threshold` come from the heap; the top of a heap is returned to the kernel
// only beyond `trim_threshold`. Returns false when glibc refused a value (it caps the mmap
// threshold at 32 MiB on 64-bit). Call once, early in main, before threads start.
bool KeepLargeBuffersInHeap(size_t mmap_threshold = size_t{32} << 20,
                            size_t trim_threshold = size_t{256} << 20);

}  // namespace df
