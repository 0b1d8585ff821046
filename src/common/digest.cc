#include "common/digest.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <vector>

#include "common/fd.h"

namespace df {

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(const void* data, size_t n) { EVP_DigestUpdate(ctx_, data, n); }

std::string Sha256::FinalHex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xF];
  }
  return out;
}

Result<std::string> Sha256File(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path, errno);
  Sha256 h;
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read " + path, errno);
    }
    if (n == 0) break;
    h.Update(buf.data(), static_cast<size_t>(n));
  }
  return h.FinalHex();
}

std::array<uint8_t, 32> Sha256::FinalBytes() {
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, out.data(), &len);
  return out;
}

Result<std::array<uint8_t, 32>> Sha256Range(int fd, uint64_t offset, uint64_t length) {
  Sha256 h;
  std::vector<char> buf(std::min<uint64_t>(length, 256 * 1024));
  while (length > 0) {
    ssize_t n =
        ::pread(fd, buf.data(), std::min<uint64_t>(length, buf.size()), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("read for digest", errno);
    }
    if (n == 0) return DataLoss("file is shorter than the range to digest");
    h.Update(buf.data(), static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return h.FinalBytes();
}

Result<Digest> ParseDigest(std::string_view text) {
  size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    return InvalidArgument("digest '" + std::string(text) + "' is not ALGORITHM:HEX");
  }
  Digest d{std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
  if (d.algorithm != "sha256") {
    return InvalidArgument("digest algorithm '" + d.algorithm + "' is not supported (use sha256)");
  }
  if (d.hex.size() != 64) return InvalidArgument("sha256 digest must have 64 hex digits");
  for (char& c : d.hex) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return InvalidArgument("digest has a non-hex character");
    }
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return d;
}

}  // namespace df
