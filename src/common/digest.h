// SHA-256 over a stream of bytes (OpenSSL EVP) and "sha256:HEX" digest strings.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

struct evp_md_ctx_st;

namespace df {

// Incremental SHA-256. Not thread-safe; one instance per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n);
  // Lowercase hex of the digest; the object must not be updated afterwards.
  std::string FinalHex();
  // The 32 raw bytes of the digest; the object must not be updated afterwards.
  std::array<uint8_t, 32> FinalBytes();

 private:
  evp_md_ctx_st* ctx_;  // owned
};

// Lowercase hex sha256 of a whole file, read with a bounded buffer.
Result<std::string> Sha256File(const std::string& path);

// Raw sha256 of bytes [offset, offset + length) of an open file (pread, bounded buffer).
// DataLoss when the file is shorter, IoError on a read error.
Result<std::array<uint8_t, 32>> Sha256Range(int fd, uint64_t offset, uint64_t length);

// A parsed "algorithm:hex" digest. Only sha256 is supported.
struct Digest {
  std::string algorithm;  // "sha256"
  std::string hex;        // lowercase
};
// Parses "sha256:HEX" (64 hex digits, either case). Anything else is InvalidArgument.
Result<Digest> ParseDigest(std::string_view text);

}  // namespace df
