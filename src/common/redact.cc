#include "common/redact.h"

#include <algorithm>
#include <cctype>

#include "common/http_syntax.h"

namespace df {

namespace {

bool SecretParamName(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* word :
       {"sig", "token", "key", "credential", "password", "passwd", "secret", "auth", "session"}) {
    if (n.find(word) != std::string::npos) return true;
  }
  return false;
}

std::string RedactQuery(std::string_view query) {
  std::string out;
  size_t start = 0;
  while (start <= query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string_view::npos) end = query.size();
    std::string_view param = query.substr(start, end - start);
    size_t eq = param.find('=');
    if (!out.empty() || start > 0) out += '&';
    if (eq != std::string_view::npos && SecretParamName(param.substr(0, eq))) {
      out += std::string(param.substr(0, eq)) + "=REDACTED";
    } else {
      out += param;
    }
    start = end + 1;
  }
  return out;
}

}  // namespace

std::string RedactUrl(std::string_view url) {
  std::string_view rest = url;
  std::string out;
  if (size_t scheme = rest.find("://"); scheme != std::string_view::npos) {
    out = std::string(rest.substr(0, scheme + 3));
    rest.remove_prefix(scheme + 3);
    size_t authority_end = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, authority_end);
    if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
      rest.remove_prefix(at + 1);  // user:password@ is dropped
    }
  }
  size_t q = rest.find('?');
  if (q == std::string_view::npos) return out + std::string(rest);
  size_t hash = rest.find('#', q);
  std::string_view query =
      rest.substr(q + 1, hash == std::string_view::npos ? std::string_view::npos : hash - q - 1);
  out += std::string(rest.substr(0, q + 1)) + RedactQuery(query);
  if (hash != std::string_view::npos) out += rest.substr(hash);
  return out;
}

std::string Printable(std::string_view s, size_t max) {
  std::string out(s.substr(0, max));
  for (char& c : out) {
    if (!http::IsFieldValueChar(c)) c = '?';
  }
  return out;
}

}  // namespace df
