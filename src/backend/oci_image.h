// Resolving an OCI image reference to the blobs a pull of it fetches: what preheat hands to seed
// peers (docs/oci.md, "Preheat").
//
//   reference  --ParseImageReference-->  registry, repository, tag or digest
//   GET /v2/<repository>/manifests/<tag|digest>   (the registry's auth challenge answered:
//       401 + WWW-Authenticate: Bearer realm=..,service=..  -> token from the realm, retry;
//       401 + WWW-Authenticate: Basic                       -> the credentials, retry)
//   an image index (OCI index, Docker manifest list) -> the manifest of the chosen platform
//   a manifest -> its config and layers: each a blob GET of /v2/<repository>/blobs/<digest>
//
// Everything read from the network is checked before it is used: bodies are bounded
// (kMaxManifestBytes, kMaxTokenResponseBytes), a manifest fetched by digest must hash to it,
// descriptors need a sha256 digest and a size, an index or manifest has at most kMaxDescriptors
// entries, a token realm must be an http(s) URL without userinfo (https unless the registry
// itself is plain HTTP, so credentials never leave TLS that came with it).
//
// Pure functions (parsers) are thread-safe; ResolveImage blocks on the network (bounded by its
// timeouts) and keeps no state between calls.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace df::oci {

constexpr size_t kMaxManifestBytes = 4 << 20;       // as the distribution registry's own limit
constexpr size_t kMaxTokenResponseBytes = 1 << 20;  // a token service's JSON answer
constexpr size_t kMaxDescriptors = 1024;            // manifests of an index, layers of an image
constexpr size_t kMaxReferenceBytes = 1024;

// An image reference as docker and containerd write it:
// [registry[:port]/]repository[:tag][@sha256:<64 hex>]. The first component is the registry
// when it contains '.' or ':' or is "localhost"; otherwise the registry is docker.io, where a
// one-component repository is "library/<name>".
struct ImageReference {
  std::string registry;    // "docker.io", "ghcr.io", "127.0.0.1:5000"
  std::string repository;  // "library/busybox"
  std::string tag;         // "latest" when neither a tag nor a digest is given
  std::string digest;      // "sha256:<64 lowercase hex>" or empty
  // The manifest reference to ask for: the digest when there is one, else the tag.
  const std::string& ManifestReference() const { return digest.empty() ? tag : digest; }
};

// The reference parsed; InvalidArgument naming the problem when it is not one: a scheme
// ("http://..."), userinfo, a path component outside [a-z0-9] separated by '.', '_', '__' or
// '-', a tag outside [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, a digest that is not sha256:<64 hex>,
// a bad host or port, more than kMaxReferenceBytes.
Result<ImageReference> ParseImageReference(std::string_view reference);

// Where the registry's API is: "https://index.docker.io" for docker.io (what the mirror's default
// upstream is), "<http|https>://<registry>" otherwise.
std::string RegistryEndpoint(const ImageReference& ref, bool plain_http);

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64"
  std::string variant;       // "v8", or empty: any
};
// "os/arch[/variant]"; InvalidArgument otherwise.
Result<Platform> ParsePlatform(std::string_view platform);
std::string PlatformString(const Platform& p);

// One WWW-Authenticate challenge: its scheme (lowercased: "bearer", "basic") and parameters
// (names lowercased; quoted values unescaped). InvalidArgument for a malformed header.
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
Result<AuthChallenge> ParseAuthChallenge(std::string_view www_authenticate);

struct Descriptor {
  std::string media_type;
  std::string digest;  // sha256:<64 lowercase hex>
  int64_t size = 0;
  Platform platform;  // index entries only
};

// A manifest document: an index (OCI image index, Docker manifest list) lists manifests; a
// manifest (OCI, Docker schema 2) has a config and layers.
struct ManifestDocument {
  bool is_index = false;
  std::vector<Descriptor> manifests;
  Descriptor config;
  std::vector<Descriptor> layers;
};
// `content_type` is the response's Content-Type (parameters ignored); when it names neither kind,
// the document's own mediaType, then its shape, decide. InvalidArgument for anything else:
// not JSON, schema 1, a descriptor without a sha256 digest or a size, too many descriptors.
Result<ManifestDocument> ParseManifestDocument(std::string_view body,
                                               std::string_view content_type);

// The first manifest of the index for `platform` (os and architecture equal; the variant equal
// when one is asked for). NotFound listing the platforms there are otherwise.
Result<Descriptor> SelectPlatform(const std::vector<Descriptor>& manifests,
                                  const Platform& platform);

struct Credentials {
  std::string username;
  std::string password;
  bool empty() const { return username.empty() && password.empty(); }
};

struct ResolveOptions {
  Platform platform{"linux", "amd64", ""};
  Credentials credentials;
  bool plain_http = false;   // the registry speaks HTTP, not HTTPS
  int timeout_seconds = 30;  // connect and each read
  // The hosts the resolution may contact, the registry and its token service
  // (ParseAllowedHosts); empty: any.
  std::vector<std::string> allowed_hosts;
};

// A comma list of HOST or HOST:PORT (a HOST entry allows every port of it), lower-cased;
// InvalidArgument names a bad entry. "" is the empty list.
Result<std::vector<std::string>> ParseAllowedHosts(std::string_view list);
// OK when `origin` ("scheme://host[:port]") is allowed by `allowed` (empty: everything);
// PermissionDenied naming it otherwise.
Status CheckAllowedHost(const std::vector<std::string>& allowed, std::string_view origin);

// What a pull of the image fetches.
struct ResolvedImage {
  std::string endpoint;    // "https://ghcr.io"
  std::string repository;  // "org/app"
  std::string manifest_digest;
  std::vector<Descriptor> blobs;  // the config, then the layers in order, duplicates removed
  // Headers a blob GET needs (Authorization: the token or the credentials), or none.
  std::map<std::string, std::string> blob_headers;
  std::string BlobUrl(const Descriptor& blob) const {
    return endpoint + "/v2/" + repository + "/blobs/" + blob.digest;
  }
};

// Fetches the manifest of `ref` (and, for an index, the platform's manifest) answering the
// registry's auth challenge. Errors: Unavailable when the registry or token service cannot be
// reached; PermissionDenied for a 401/403 the credentials do not cure; NotFound for a 404 or no
// manifest for the platform; InvalidArgument for malformed answers (see above); DataLoss when a
// manifest does not hash to the digest it was fetched by.
Result<ResolvedImage> ResolveImage(const ImageReference& ref, const ResolveOptions& options);

}  // namespace df::oci
