// Registry upstream addresses for the OCI registry mirror (registry_mirror.h): parsing and
// normalising what a config file, the X-Dragonfly-Registry header or containerd's `ns` parameter
// names. Pure functions with no dependency on the engine, so that the daemon's config (and its
// fuzz target) can validate `registry_mirror` without linking the mirror.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace re2 {
class RE2;
}

namespace df {

// `s` with ASCII letters lowercased.
std::string AsciiLower(std::string_view s);

// "scheme://host[:port]" normalised (lowercase scheme and host, no trailing slash) when `url` is
// an http or https URL with a host, an optional port (1-65535) and no userinfo, path (a single
// "/" is accepted), query or fragment. InvalidArgument naming the problem otherwise.
Result<std::string> ParseRegistryUpstream(std::string_view url);

// The upstream for containerd's `ns` parameter: a registry host[:port] ("docker.io",
// "127.0.0.1:5000"). docker.io means https://index.docker.io; every other host is https.
// InvalidArgument when `ns` is not a host[:port].
Result<std::string> UpstreamFromNs(std::string_view ns);

// "host:port" (the host lowercased) of a CONNECT request target, or of an entry of the forward
// proxy's host lists (proxy_connect_hosts, proxy_intercept_hosts). A target must name its port
// (RFC 9110 9.3.6): `default_port` 0; a list entry may omit it: `default_port` 443. The host is a
// DNS name, an IPv4 address or a bracketed IPv6 address; no userinfo, path or scheme.
// InvalidArgument naming the problem otherwise.
Result<std::string> ParseHostPort(std::string_view s, uint16_t default_port);

constexpr size_t kMaxProxyRules = 64;
constexpr size_t kMaxProxyRuleBytes = 1024;

// Dragonfly's `proxy.rules`: regular expressions on a mirror request's path (without the query)
// that choose which other GETs under /v2/ go P2P as tasks keyed by their URL (blob GETs always
// go P2P, keyed by their digest). RE2 syntax, matched anywhere in the path unless anchored; RE2
// runs in time linear in the path, so no rule can make a request take exponential time.
// Immutable after Compile; thread-safe; cheap to copy (the compiled rules are shared).
class ProxyRules {
 public:
  ProxyRules() = default;  // no rule: nothing matches
  // InvalidArgument naming the rule ("proxy_rules[2]: ...") when one is empty, longer than
  // kMaxProxyRuleBytes, not a valid RE2 expression, or when there are more than kMaxProxyRules.
  static Result<ProxyRules> Compile(const std::vector<std::string>& patterns);
  // True when a rule matches somewhere in `path`.
  bool Matches(std::string_view path) const;
  bool empty() const { return rules_.empty(); }

 private:
  std::vector<std::shared_ptr<const re2::RE2>> rules_;
};

}  // namespace df
