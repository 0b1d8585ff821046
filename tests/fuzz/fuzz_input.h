// Helpers shared by the fuzz targets (docs/fuzzing.md): a reader that splits a fuzz input into
// fields, and the check that turns a broken invariant into a crash libFuzzer reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

// Aborts (a finding) when an invariant of the code under test does not hold.
#define DF_FUZZ_CHECK(cond)                                                                     \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "fuzz invariant violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

namespace df::fuzz {

// Consumes a fuzz input front to back. Reads past the end yield zeros and empty strings, so
// every input decodes to something (short inputs to defaults). Not thread-safe; borrows `data`.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t remaining() const { return size_ - pos_; }
  bool empty() const { return pos_ == size_; }

  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | U8() << 8); }
  uint32_t U32() { return static_cast<uint32_t>(U16() | static_cast<uint32_t>(U16()) << 16); }
  uint64_t U64() { return U32() | static_cast<uint64_t>(U32()) << 32; }

  // Up to `n` bytes (fewer at the end of the input), as a view into the input.
  std::string_view Bytes(size_t n) {
    n = n < remaining() ? n : remaining();
    std::string_view out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  // A string whose length is the next byte: short fields (tags, names, digests).
  std::string ShortString() { return std::string(Bytes(U8())); }
  // Everything left.
  std::string_view Rest() { return Bytes(remaining()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace df::fuzz
