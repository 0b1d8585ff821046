#include "daemon/runtime_config.h"

#include "daemon/registry_mirror.h"

namespace df {
namespace {

// The registry's host[:port] and its upstream URL.
struct Registry {
  std::string host;      // what image references name: "docker.io", "127.0.0.1:5000"
  std::string upstream;  // where it is served: "https://index.docker.io"
};

Result<Registry> ParseRegistry(const std::string& registry) {
  if (registry.find("://") != std::string::npos) {
    auto upstream = ParseRegistryUpstream(registry);
    if (!upstream.ok()) return upstream.status();
    return Registry{upstream.value().substr(upstream.value().find("://") + 3), upstream.value()};
  }
  auto upstream = UpstreamFromNs(registry);
  if (!upstream.ok()) return InvalidArgument("registry: " + upstream.status().message());
  return Registry{registry, upstream.value()};
}

std::string Containerd(const Registry* r, const std::string& mirror) {
  std::string out = "# " + std::string(r ? r->host : "_default") +
                    "/hosts.toml in containerd's registry config_path (e.g. "
                    "/etc/containerd/certs.d)\n";
  if (r) out += "server = \"" + r->upstream + "\"\n";
  out += "\n[host.\"" + mirror + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n";
  if (r) {
    out +=
        "  [host.\"" + mirror + "\".header]\n    X-Dragonfly-Registry = \"" + r->upstream + "\"\n";
  }
  return out;
}

std::string Podman(const Registry& r, const std::string& mirror) {
  return "# registries.conf (/etc/containers/registries.conf or a drop-in in registries.conf.d):\n"
         "# Podman, skopeo, Buildah and CRI-O. The mirror sends no registry header: start the\n"
         "# daemon with --registry-mirror " +
         r.upstream + "\n[[registry]]\nlocation = \"" + r.host + "\"\n" +
         (r.upstream.rfind("http://", 0) == 0 ? "insecure = true\n" : "") +
         "\n[[registry.mirror]]\nlocation = \"" + mirror.substr(7) + "\"\ninsecure = true\n";
}

std::string Docker(const std::string& mirror) {
  return "{\n  \"registry-mirrors\": [\"" + mirror + "\"]\n}\n";
}

}  // namespace

Result<std::string> RenderRuntimeConfig(const RuntimeConfigRequest& req) {
  auto mirror = ParseRegistryUpstream(req.mirror);
  if (!mirror.ok() || mirror.value().rfind("http://", 0) != 0) {
    return InvalidArgument("mirror must be http://host:port, got '" + req.mirror + "'");
  }
  if (req.runtime == "docker") return Docker(mirror.value());
  if (req.runtime == "containerd" && req.registry == "_default") {
    return Containerd(nullptr, mirror.value());
  }
  auto registry = ParseRegistry(req.registry);
  if (!registry.ok()) return registry.status();
  if (req.runtime == "containerd") return Containerd(&registry.value(), mirror.value());
  if (req.runtime == "podman") return Podman(registry.value(), mirror.value());
  return InvalidArgument("unknown runtime '" + req.runtime + "' (containerd, docker or podman)");
}

}  // namespace df
