#include "daemon/registry_upstream.h"

#include <re2/re2.h>

#include <algorithm>
#include <cctype>

namespace df {
namespace {

constexpr size_t kMaxUpstreamBytes = 512;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLowerAlnum(char c) { return IsDigit(c) || (c >= 'a' && c <= 'z'); }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

bool IsHostName(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  return std::all_of(host.begin(), host.end(), [](char c) {
    return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '-';
  });
}

bool IsIpv6Literal(std::string_view host) {
  if (host.size() < 4 || host.front() != '[' || host.back() != ']') return false;
  return std::all_of(host.begin() + 1, host.end() - 1,
                     [](char c) { return IsHex(c) || (c >= 'A' && c <= 'F') || c == ':'; });
}

// "host[:port]" checked; the host lowercased.
Result<std::string> ParseAuthority(std::string_view authority) {
  std::string_view host = authority, port;
  const size_t bracket = authority.rfind(']');
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), IsDigit) ||
        std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535) {
      return InvalidArgument("registry port is not a number between 1 and 65535");
    }
  }
  if (!IsHostName(host) && !IsIpv6Literal(host)) {
    return InvalidArgument("registry host is not a host name or address");
  }
  return AsciiLower(host) + (port.empty() ? "" : ":" + std::string(port));
}

}  // namespace

std::string AsciiLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Result<std::string> ParseRegistryUpstream(std::string_view url) {
  if (url.size() > kMaxUpstreamBytes) return InvalidArgument("registry URL is too long");
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return InvalidArgument("registry URL has no scheme");
  const std::string scheme = AsciiLower(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") {
    return InvalidArgument("registry URL scheme must be http or https");
  }
  std::string_view rest = url.substr(sep + 3);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#@") != std::string_view::npos) {
    return InvalidArgument(
        "registry URL must be scheme://host[:port], without user, path or query");
  }
  auto authority = ParseAuthority(rest);
  if (!authority.ok()) return authority.status();
  return scheme + "://" + authority.value();
}

Result<std::string> UpstreamFromNs(std::string_view ns) {
  if (ns.size() > kMaxUpstreamBytes) return InvalidArgument("ns is too long");
  auto authority = ParseAuthority(ns);
  if (!authority.ok()) return InvalidArgument("ns: " + authority.status().message());
  if (authority.value() == "docker.io") return std::string("https://index.docker.io");
  return "https://" + authority.value();
}

Result<std::string> ParseHostPort(std::string_view s, uint16_t default_port) {
  if (s.size() > kMaxUpstreamBytes) return InvalidArgument("host:port is too long");
  auto authority = ParseAuthority(s);
  if (!authority.ok()) return authority.status();
  const std::string& a = authority.value();
  const size_t bracket = a.rfind(']'), colon = a.rfind(':');
  const bool has_port =
      colon != std::string::npos && (bracket == std::string::npos || colon > bracket);
  if (has_port) return a;
  if (default_port == 0) return InvalidArgument("'" + std::string(s) + "' names no port");
  return a + ":" + std::to_string(default_port);
}

Result<ProxyRules> ProxyRules::Compile(const std::vector<std::string>& patterns) {
  if (patterns.size() > kMaxProxyRules) {
    return InvalidArgument("proxy_rules: " + std::to_string(patterns.size()) + " rules; at most " +
                           std::to_string(kMaxProxyRules));
  }
  ProxyRules out;
  for (size_t i = 0; i < patterns.size(); ++i) {
    const std::string where = "proxy_rules[" + std::to_string(i) + "]: ";
    if (patterns[i].empty()) return InvalidArgument(where + "empty (it would match every path)");
    if (patterns[i].size() > kMaxProxyRuleBytes) {
      return InvalidArgument(where + "longer than " + std::to_string(kMaxProxyRuleBytes) +
                             " bytes");
    }
    RE2::Options options;
    options.set_log_errors(false);
    auto rule = std::make_shared<const re2::RE2>(patterns[i], options);
    if (!rule->ok()) {
      return InvalidArgument(where + "bad regular expression '" + patterns[i] +
                             "': " + rule->error());
    }
    out.rules_.push_back(std::move(rule));
  }
  return out;
}

bool ProxyRules::Matches(std::string_view path) const {
  const re2::StringPiece piece(path.data(), path.size());
  return std::any_of(rules_.begin(), rules_.end(),
                     [&](const auto& rule) { return RE2::PartialMatch(piece, *rule); });
}

}  // namespace df
