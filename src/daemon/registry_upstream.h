// Registry upstream addresses for the OCI registry mirror (registry_mirror.h): parsing and
// normalising what a config file, the X-Dragonfly-Registry header or containerd's `ns` parameter
// names. Pure functions with no dependency on the engine, so that the daemon's config (and its
// fuzz target) can validate `registry_mirror` without linking the mirror.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

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

}  // namespace df
