// RegistryMirror: dfdaemon's OCI registry mirror (docs/oci.md). containerd, Docker, Podman,
// CRI-O and skopeo pull through it; every layer blob becomes a P2P task keyed by its digest,
// everything else goes straight to the registry.
//
// A request whose target is a path (origin-form, "GET /v2/...") is a mirror request. Its
// upstream registry is, in order: the X-Dragonfly-Registry header (a URL, what Dragonfly's
// containerd hosts.toml sends), the `ns` query parameter (a registry host, what containerd adds
// for its `_default` mirror), the configured registry_mirror.
//
// The same port is a forward proxy (MirrorFront, mirror_front.h, owns its connections):
//   - an absolute-form request ("GET http://registry:5000/v2/..."; a client with HTTP_PROXY
//     set) is a mirror request whose upstream is the target's scheme://host[:port], validated
//     as any other upstream (SplitAbsoluteTarget); a header or `ns` naming another is ignored.
//   - CONNECT host:port is tunnelled to hosts in proxy_connect_hosts, or intercepted for hosts
//     in proxy_intercept_hosts: the requests inside the TLS are mirror requests whose upstream
//     is https://host:port (blobs P2P as above); any other host gets 403.
//
//   GET /v2/<name>/blobs/sha256:<64 hex>   P2P, in four steps:
//     1. authorisation: HEAD of the same blob upstream with the client's headers. Anything but
//        2xx/3xx (401 with its WWW-Authenticate, 403, 404) and the GET is passed through as is,
//        so the client sees the registry's own answer and runs its own token flow. A yes is
//        cached for kAuthCacheTtl, keyed by upstream, repository, digest and a hash of the
//        credentials (Authorization, Cookie). So a layer this host holds is never served to a
//        request the registry would refuse.
//     2. the task: id = the digest's hex (TaskSpec::id_from_digest), so the same layer through two
//        registries or repositories is one task; back-to-source URL = the upstream blob URL, with
//        the client's headers (Authorization included, Host and hop-by-hop headers removed).
//     3. streamed: once the task knows the size, 200 with Content-Length, and the bytes in order
//        as the task's finished (CRC32C-verified) prefix grows. The mirror hashes every byte it
//        sends and sends the chunk that ends the blob only when the sha256 matches the digest:
//        wrong bytes end in an aborted response, never a clean one. (PeerTask also checks every
//        content-addressed task when it finishes; a mismatch fails it and deletes its content.)
//        A blob already done in this host's storage is served from it directly (hashed the
//        same way) without starting a task, which would read the whole blob once more.
//     4. a Range request for one byte range gets 206 with Content-Range once the size is known,
//        its bytes streamed as the pieces holding them finish (each checked against its origin
//        digest, or fetched from the registry by this host: a range cannot be checked against
//        the blob's digest); once the task fails, stalls or takes a piece on CRC32C alone, the
//        rest comes from the registry. 416 for a range outside the blob; several ranges get the
//        whole blob. X-Dragonfly-Task-ID names the task.
//     When the task fails before the response started (origin trouble with no parent, a digest
//     mismatch, too many tasks), the blob is fetched straight from the registry into an unlinked
//     temporary file, verified and served from it; when it fails while streaming, the rest is
//     fetched from the registry with a ranged GET into the same response (still hashed). Either
//     way the client does not see the P2P failure. Only when the registry fails too does it get
//     an error, with X-Dragonfly-Error-Type: "backend" (the registry answered an error or wrong
//     bytes: 502, or the registry's status; or the streamed response is cut) or "proxy" (this
//     daemon failed: 500).
//   Any other GET or HEAD under /v2/: passed through, status and headers preserved (hop-by-hop
//     headers dropped), the body buffered up to kMaxPassThroughBodyBytes (manifests, indexes,
//     error documents; a larger body is a 502). Redirects are passed back, not followed.
//   Malformed requests get 400 (a blob path whose digest is not sha256:<64 hex>, a bad
//   repository name, a bad upstream), 404 (paths outside /v2/), 405 (methods other than GET and
//   HEAD: the mirror is read-only), 414 (targets over 8 KiB; cpp-httplib).
//
// Trust: the port is reachable by whoever reaches `listen_ip`; a request chooses its upstream,
// so the daemon fetches only http(s) registry API paths (/v2/...) from it, never userinfo, never
// another scheme. Pieces served to other peers are checked against the digest by every peer
// that serves the blob to a client.
//
// Threads: the MirrorFront's accept thread and worker pool run every request. Thread-safe.
#pragma once

#include <prometheus/registry.h>

#include <cstdint>
#include <map>
#include <utility>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "common/status.h"
#include "daemon/config.h"
#include "daemon/registry_upstream.h"
#include "daemon/task_manager.h"
#include "storage/piece_store.h"

namespace df {

// Header names, as Dragonfly spells them.
inline constexpr const char* kHeaderDragonflyRegistry = "X-Dragonfly-Registry";
inline constexpr const char* kHeaderDragonflyTaskId = "X-Dragonfly-Task-ID";
inline constexpr const char* kHeaderDragonflyErrorType = "X-Dragonfly-Error-Type";

// A blob GET's repository name and digest.
struct BlobRef {
  std::string name;    // "library/busybox"
  std::string digest;  // "sha256:<64 lowercase hex>"
};

// Whether `path` is /v2/<name>/blobs/<reference>: nullopt when it is not a blob path at all;
// InvalidArgument when it is one but the name is not an OCI repository name (at most 255 bytes)
// or the reference is not sha256:<64 lowercase hex>.
std::optional<Result<BlobRef>> ParseBlobPath(std::string_view path);

// An absolute-form request target "scheme://host[:port]/path?query" split into its upstream
// (ParseRegistryUpstream: http(s) only, no userinfo) and its origin-form target ("/path?query";
// "/" when there is no path). InvalidArgument naming the problem otherwise.
Result<std::pair<std::string, std::string>> SplitAbsoluteTarget(std::string_view target);

// One byte range of a blob of `size` bytes, inclusive bounds.
struct ByteRange {
  uint64_t first = 0;
  uint64_t last = 0;
};
// The Range header `value` resolved against `size`: nullopt for "serve the whole blob" (no
// header, not a bytes range, several ranges: RFC 9110 lets a server ignore Range); an
// InvalidArgument result for a single range that no byte of the blob satisfies (416).
std::optional<Result<ByteRange>> ResolveRange(std::string_view value, uint64_t size);

// The headers of a client request that go upstream: everything but Host, hop-by-hop headers,
// the X-Dragonfly-* headers, the body's framing and cpp-httplib's REMOTE_ADDR-style entries.
std::map<std::string, std::string> UpstreamHeaders(
    const std::multimap<std::string, std::string>& client_headers);

// The registry mirror server. Construct, Start() once, Stop() (or destroy) once.
class RegistryMirror {
 public:
  // Borrows everything; all must outlive the mirror. `registry` may be null (no metrics).
  RegistryMirror(const DaemonConfig& config, TaskManager& manager, PieceStore& store,
                 BackendRegistry& backends, prometheus::Registry* registry);
  ~RegistryMirror();
  RegistryMirror(const RegistryMirror&) = delete;
  RegistryMirror& operator=(const RegistryMirror&) = delete;

  // Binds config.proxy_ip:config.proxy_port (0 as a port is never passed here) and starts
  // serving. Unavailable when the port cannot be bound; InterceptCa::Load's errors when the
  // proxy CA is configured and cannot be loaded.
  Status Start();
  // Stops accepting, cuts responses still streaming (a 503 for those not started) and tunnels,
  // and waits for the handlers to return. Idempotent.
  void Stop();
  uint16_t port() const { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint16_t port_ = 0;
};

}  // namespace df
