#include "common/ids.h"

#include <algorithm>
#include <random>

#include "common/digest.h"

namespace df {

std::string FilterQueryParams(std::string_view url, const std::vector<std::string>& filtered) {
  if (filtered.empty()) return std::string(url);
  // The query is what lies between the first '?' and the first '#'; a '?' inside the fragment
  // is part of the fragment (RFC 3986), so its "parameters" are never filtered.
  size_t q = url.find('?');
  size_t frag = url.find('#');
  if (q == std::string_view::npos || (frag != std::string_view::npos && frag < q)) {
    return std::string(url);
  }
  std::string_view query = url.substr(q + 1, frag == std::string_view::npos ? frag : frag - q - 1);
  std::string kept;
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view kv = query.substr(pos, amp - pos);
    std::string_view key = kv.substr(0, kv.find('='));
    bool drop = kv.empty() ||
                std::find(filtered.begin(), filtered.end(), std::string(key)) != filtered.end();
    if (!drop) {
      if (!kept.empty()) kept += '&';
      kept += kv;
    }
    pos = amp + 1;
  }
  std::string out(url.substr(0, q));
  if (!kept.empty()) out += "?" + kept;
  if (frag != std::string_view::npos) out += url.substr(frag);
  return out;
}

std::string TaskId(const TaskIdInput& in) {
  Sha256 h;
  std::string url = FilterQueryParams(in.url, in.filtered_query_params);
  std::string pl = std::to_string(in.piece_length);
  const char nul = '\0';
  h.Update(url.data(), url.size());
  h.Update(&nul, 1);
  h.Update(in.tag.data(), in.tag.size());
  h.Update(&nul, 1);
  h.Update(in.application.data(), in.application.size());
  h.Update(&nul, 1);
  h.Update(pl.data(), pl.size());
  return h.FinalHex();
}

std::string TaskIdFromDigest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.substr(0, kPrefix.size()) != kPrefix) return "";
  std::string_view hex = digest.substr(kPrefix.size());
  if (hex.size() != 64) return "";
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return "";
  }
  return std::string(hex);
}

std::string HostId(std::string_view hostname, std::string_view ip) {
  return std::string(hostname) + "-" + std::string(ip);
}

std::string NewPeerId(std::string_view host_id) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static constexpr char kHex[] = "0123456789abcdef";
  std::string suffix(12, '0');
  uint64_t r = rng();
  for (char& c : suffix) {
    c = kHex[r & 0xF];
    r >>= 4;
  }
  return std::string(host_id) + "-" + suffix;
}

}  // namespace df
