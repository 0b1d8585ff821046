// CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected), the checksum of every piece.
// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace df {

// Extends `crc` (the CRC32C of the bytes before `data`; 0 for none) over `data[0..n)`.
// Crc32cExtend(Crc32cExtend(0, a), b) == Crc32c(a ++ b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace df
