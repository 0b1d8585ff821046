// What a container runtime needs to pull through this host's registry mirror
// (`dfdaemon print-config`, docs/oci.md). Pure functions, thread-safe.
#pragma once

#include <string>

#include "common/status.h"

namespace df {

struct RuntimeConfigRequest {
  std::string runtime;                 // "containerd", "docker" or "podman" (also skopeo, CRI-O)
  std::string registry = "docker.io";  // host[:port], an http(s) URL, or containerd's "_default"
  std::string mirror = "http://127.0.0.1:4001";  // where the mirror listens (--proxy-port)
};

// The text of the runtime's configuration, with a comment naming the file it belongs in:
//   containerd  certs.d/<registry>/hosts.toml: server, [host."<mirror>"] with
//               capabilities ["pull", "resolve"] and the X-Dragonfly-Registry header
//               (for "_default": no server and no header; the mirror then reads containerd's
//               `ns` parameter)
//   podman      a registries.conf [[registry]] with the mirror as an insecure (http) mirror;
//               Podman, skopeo, Buildah and CRI-O read it
//   docker      daemon.json's "registry-mirrors" (Docker mirrors Docker Hub only)
// InvalidArgument for an unknown runtime, a registry that is not host[:port] or an http(s)
// URL, or a mirror that is not http://host:port.
Result<std::string> RenderRuntimeConfig(const RuntimeConfigRequest& req);

}  // namespace df
