#include "backend/oci_image.h"

#include <httplib.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/digest.h"
#include "common/http_syntax.h"
#include "common/redact.h"

namespace df::oci {
namespace {

using Json = nlohmann::json;

constexpr const char* kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr const char* kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";
constexpr const char* kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// Quoted in errors: long enough for a redirect's location or a registry's realm.
std::string Quote(std::string_view s) { return Printable(s, 200); }

// One path component: [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
bool IsPathComponent(std::string_view s) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < s.size() && IsLowerAlnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      ++i;
      if (i < s.size() && s[i] == '_') ++i;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

bool IsTag(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (!IsAlnum(s[0]) && s[0] != '_') return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsAlnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool IsSha256Digest(std::string_view s) {
  if (s.size() != 71 || s.substr(0, 7) != "sha256:") return false;
  return std::all_of(s.begin() + 7, s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// host[:port]: DNS labels (letters, digits, '-') separated by '.', or an IPv4 address; a port
// of 1-65535.
bool IsRegistryHost(std::string_view s) {
  const size_t colon = s.find(':');
  std::string_view host = s.substr(0, colon);
  if (host.empty() || host.size() > 253) return false;
  size_t label = 0;
  for (char c : host) {
    if (c == '.') {
      if (label == 0) return false;
      label = 0;
    } else if (IsAlnum(c) || c == '-') {
      if (++label > 63) return false;
    } else {
      return false;
    }
  }
  if (label == 0 || host.front() == '-' || host.back() == '-') return false;
  if (colon == std::string_view::npos) return true;
  std::string_view port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  const int p = std::stoi(std::string(port));
  return p >= 1 && p <= 65535;
}

std::string Base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string PercentEncode(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (IsAlnum(static_cast<char>(c)) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string LowerAscii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The media type of a Content-Type value (parameters and case dropped).
std::string MediaType(std::string_view content_type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
  return LowerAscii(t);
}

Result<Descriptor> ParseDescriptor(const Json& j, bool with_platform) {
  if (!j.is_object()) return InvalidArgument("a descriptor is not an object");
  Descriptor d;
  if (auto it = j.find("mediaType"); it != j.end() && it->is_string()) d.media_type = *it;
  auto digest = j.find("digest");
  if (digest == j.end() || !digest->is_string() || !IsSha256Digest(digest->get<std::string>())) {
    return InvalidArgument("a descriptor's digest is not sha256:<64 hex>");
  }
  d.digest = *digest;
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return InvalidArgument("descriptor " + d.digest + " has no valid size");
  }
  d.size = *size;
  if (with_platform) {
    auto p = j.find("platform");
    if (p != j.end() && p->is_object()) {
      auto str = [&](const char* key) {
        auto it = p->find(key);
        return it != p->end() && it->is_string() ? it->get<std::string>() : std::string();
      };
      d.platform = Platform{str("os"), str("architecture"), str("variant")};
    }
  }
  return d;
}

Result<std::vector<Descriptor>> ParseDescriptors(const Json& doc, const char* key,
                                                 bool with_platform) {
  auto list = doc.find(key);
  if (list == doc.end() || !list->is_array()) {
    return InvalidArgument(std::string("the manifest has no '") + key + "' list");
  }
  if (list->size() > kMaxDescriptors) {
    return InvalidArgument(std::string("the manifest lists more than ") +
                           std::to_string(kMaxDescriptors) + " " + key);
  }
  std::vector<Descriptor> out;
  for (const Json& j : *list) {
    auto d = ParseDescriptor(j, with_platform);
    if (!d.ok()) return d.status();
    out.push_back(std::move(d).value());
  }
  return out;
}

// scheme://host[:port] and path?query of an absolute http(s) URL without userinfo.
struct SplitUrl {
  std::string origin;
  std::string path_and_query;
};

Result<SplitUrl> SplitHttpUrl(std::string_view url, bool allow_http) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return InvalidArgument("not an absolute URL");
  const std::string scheme = LowerAscii(url.substr(0, sep));
  if (scheme != "https" && !(allow_http && scheme == "http")) {
    return InvalidArgument(allow_http ? "not an http(s) URL" : "not an https URL");
  }
  std::string_view rest = url.substr(sep + 3);
  const size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  if (!IsRegistryHost(authority)) return InvalidArgument("bad host");
  std::string path(slash == std::string_view::npos ? "/" : rest.substr(slash));
  if (path[0] != '/') path = "/" + path;
  if (const size_t hash = path.find('#'); hash != std::string::npos) path.resize(hash);
  for (char c : path) {
    if (c <= 0x20 || c >= 0x7f) return InvalidArgument("control or space characters in the URL");
  }
  return SplitUrl{scheme + "://" + std::string(authority), path};
}

// Redirects a manifest GET follows (Docker's client follows 10; registries use one or two).
constexpr int kMaxRedirects = 5;

std::unique_ptr<httplib::Client> NewClient(const std::string& origin, int timeout_seconds) {
  auto cli = std::make_unique<httplib::Client>(origin);
  cli->set_connection_timeout(timeout_seconds, 0);
  cli->set_read_timeout(timeout_seconds, 0);
  cli->set_write_timeout(timeout_seconds, 0);
  cli->set_follow_location(false);
  cli->enable_server_certificate_verification(true);
  return cli;
}

struct Response {
  int status = 0;
  std::string body;
  httplib::Headers headers;
};

// A GET whose body is cut off (and the call failed) past `max_bytes`.
Result<Response> BoundedGet(httplib::Client& cli, const std::string& target,
                            const httplib::Headers& headers, size_t max_bytes,
                            const std::string& what) {
  Response out;
  bool too_big = false;
  httplib::Result r = cli.Get(
      target.c_str(), headers,
      [&](const httplib::Response& res) {
        out.status = res.status;
        out.headers = res.headers;
        return true;
      },
      [&](const char* data, size_t n) {
        if (out.body.size() + n > max_bytes) {
          too_big = true;
          return false;
        }
        out.body.append(data, n);
        return true;
      });
  if (too_big) {
    return InvalidArgument(what + ": the answer is larger than " + std::to_string(max_bytes) +
                           " bytes");
  }
  if (!r) return Unavailable(what + ": " + httplib::to_string(r.error()));
  out.status = r->status;
  return out;
}

std::string HeaderValue(const httplib::Headers& headers, const std::string& name) {
  for (const auto& [k, v] : headers) {
    if (LowerAscii(k) == LowerAscii(name)) return v;
  }
  return "";
}

// Talks to one registry for one repository, answering its auth challenge once and reusing the
// answer (the Authorization value) for later requests.
class RegistrySession {
 public:
  RegistrySession(const ImageReference& ref, const ResolveOptions& options)
      : options_(options),
        endpoint_(RegistryEndpoint(ref, options.plain_http)),
        repository_(ref.repository),
        cli_(NewClient(endpoint_, options.timeout_seconds)) {}

  const std::string& endpoint() const { return endpoint_; }
  const std::string& authorization() const { return authorization_; }

  Result<Response> GetManifest(const std::string& reference) {
    const std::string target = "/v2/" + repository_ + "/manifests/" + reference;
    auto r = Get(target);
    if (!r.ok() || r.value().status != 401) return r;
    DF_RETURN_IF_ERROR(AnswerChallenge(HeaderValue(r.value().headers, "WWW-Authenticate")));
    return Get(target);
  }

 private:
  // A manifest GET, following up to kMaxRedirects redirects (registries that keep manifests
  // behind a CDN or another host send them). Each Location, absolute or relative, must be an
  // https URL (http too with plain_http: never a downgrade otherwise) on an allowed host; the
  // registry's Authorization goes to the registry's own origin only, as Docker's client does (a
  // CDN URL carries its own signature, and another host must not see the token).
  Result<Response> Get(const std::string& target) {
    std::string origin = endpoint_;
    std::string path = target;
    for (int hop = 0;; ++hop) {
      httplib::Headers h = {{"Accept", std::string(kOciIndex) + ", " + kDockerList + ", " +
                                           kOciManifest + ", " + kDockerManifest}};
      std::unique_ptr<httplib::Client> other;
      httplib::Client* cli = cli_.get();
      if (origin == endpoint_) {
        if (!authorization_.empty()) h.emplace("Authorization", authorization_);
      } else {
        other = NewClient(origin, options_.timeout_seconds);
        cli = other.get();
      }
      auto r = BoundedGet(*cli, path, h, kMaxManifestBytes, origin + path);
      if (!r.ok() || !IsRedirect(r.value().status)) return r;
      if (hop == kMaxRedirects) {
        return InvalidArgument(endpoint_ + target + ": more than " + std::to_string(kMaxRedirects) +
                               " redirects");
      }
      const std::string location = HeaderValue(r.value().headers, "Location");
      std::string next_url = location;
      if (location.rfind("//", 0) == 0) {  // scheme-relative
        next_url = origin.substr(0, origin.find("://") + 1) + location;
      } else if (!location.empty() && location[0] == '/') {  // path-absolute
        next_url = origin + location;
      }
      auto next = SplitHttpUrl(next_url, options_.plain_http);
      if (!next.ok()) {
        return InvalidArgument(origin + path + ": the redirect to '" + Quote(location) +
                               "' is refused: " + next.status().message());
      }
      DF_RETURN_IF_ERROR(CheckAllowedHost(options_.allowed_hosts, next.value().origin));
      origin = next.value().origin;
      path = next.value().path_and_query;
    }
  }

  static bool IsRedirect(int status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
  }

  Status AnswerChallenge(const std::string& header) {
    if (!authorization_.empty()) {
      return Status(StatusCode::kPermissionDenied,
                    "the registry refused the credentials (401) for " + repository_);
    }
    auto challenge = ParseAuthChallenge(header);
    if (!challenge.ok()) {
      return InvalidArgument("the registry's 401 has no usable WWW-Authenticate: " +
                             challenge.status().message());
    }
    if (challenge.value().scheme == "basic") {
      if (options_.credentials.empty()) {
        return Status(StatusCode::kPermissionDenied,
                      "the registry wants credentials (Basic): pass --username/--password");
      }
      authorization_ = "Basic " + BasicUserPass();
      return Status::Ok();
    }
    if (challenge.value().scheme != "bearer") {
      return InvalidArgument("unsupported auth scheme '" + Quote(challenge.value().scheme) + "'");
    }
    auto token = FetchToken(challenge.value().params);
    if (!token.ok()) return token.status();
    authorization_ = "Bearer " + token.value();
    return Status::Ok();
  }

  std::string BasicUserPass() const {
    return Base64(options_.credentials.username + ":" + options_.credentials.password);
  }

  Result<std::string> FetchToken(const std::map<std::string, std::string>& params) {
    auto realm_it = params.find("realm");
    if (realm_it == params.end()) return InvalidArgument("the Bearer challenge has no realm");
    auto realm = SplitHttpUrl(realm_it->second, options_.plain_http);
    if (!realm.ok()) {
      return InvalidArgument("the token realm '" + Quote(realm_it->second) +
                             "' is refused: " + realm.status().message());
    }
    DF_RETURN_IF_ERROR(CheckAllowedHost(options_.allowed_hosts, realm.value().origin));
    std::string target = realm.value().path_and_query;
    target += target.find('?') == std::string::npos ? '?' : '&';
    if (auto s = params.find("service"); s != params.end()) {
      target += "service=" + PercentEncode(s->second) + "&";
    }
    target += "scope=" + PercentEncode("repository:" + repository_ + ":pull");
    httplib::Headers h;
    if (!options_.credentials.empty()) h.emplace("Authorization", "Basic " + BasicUserPass());
    auto cli = NewClient(realm.value().origin, options_.timeout_seconds);
    auto r = BoundedGet(*cli, target, h, kMaxTokenResponseBytes, "token " + realm.value().origin);
    if (!r.ok()) return r.status();
    if (r.value().status == 401 || r.value().status == 403) {
      return Status(StatusCode::kPermissionDenied, "the token service refused the credentials (" +
                                                       std::to_string(r.value().status) + ")");
    }
    if (r.value().status != 200) {
      return Status(StatusCode::kHttpError,
                    "the token service answered " + std::to_string(r.value().status));
    }
    Json doc = Json::parse(r.value().body, nullptr, /*allow_exceptions=*/false);
    std::string token;
    for (const char* key : {"token", "access_token"}) {
      if (doc.is_object() && doc.contains(key) && doc[key].is_string()) {
        token = doc[key].get<std::string>();
        break;
      }
    }
    if (token.empty() || token.size() > 16 * 1024 ||
        !std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
      return InvalidArgument("the token service's answer has no usable token");
    }
    return token;
  }

  const ResolveOptions& options_;
  const std::string endpoint_;
  const std::string repository_;
  std::unique_ptr<httplib::Client> cli_;
  std::string authorization_;  // what every request carries once the challenge was answered
};

Status CheckManifestAnswer(const Response& r, const std::string& what) {
  if (r.status == 200) return Status::Ok();
  if (r.status == 404) return NotFound(what + ": not found in the registry (404)");
  if (r.status == 401 || r.status == 403) {
    return Status(StatusCode::kPermissionDenied,
                  what + ": the registry refused (" + std::to_string(r.status) + ")");
  }
  return Status(StatusCode::kHttpError,
                what + ": the registry answered " + std::to_string(r.status));
}

// The manifest's digest: its sha256; DataLoss when it was fetched by another digest.
Result<std::string> ManifestDigest(const std::string& body, const std::string& fetched_by) {
  Sha256 sha;
  sha.Update(body.data(), body.size());
  const std::string digest = "sha256:" + sha.FinalHex();
  if (fetched_by.rfind("sha256:", 0) == 0 && digest != fetched_by) {
    return DataLoss("the manifest fetched by " + fetched_by + " hashes to " + digest);
  }
  return digest;
}

}  // namespace

Result<ImageReference> ParseImageReference(std::string_view s) {
  if (s.empty()) return InvalidArgument("empty image reference");
  if (s.size() > kMaxReferenceBytes) return InvalidArgument("image reference too long");
  if (s.find("://") != std::string_view::npos) {
    return InvalidArgument("an image reference has no scheme: '" + Quote(s) +
                           "' (write registry/repository:tag)");
  }
  ImageReference ref;
  std::string_view rest = s;
  if (const size_t at = rest.find('@'); at != std::string_view::npos) {
    ref.digest = std::string(rest.substr(at + 1));
    if (!IsSha256Digest(ref.digest)) {
      return InvalidArgument("the digest of '" + Quote(s) + "' is not sha256:<64 hex>");
    }
    rest = rest.substr(0, at);
  }
  const size_t slash = rest.find('/');
  std::string_view first = rest.substr(0, slash);
  if (slash != std::string_view::npos &&
      (first.find_first_of(".:") != std::string_view::npos || first == "localhost")) {
    if (!IsRegistryHost(first)) {
      return InvalidArgument("the registry '" + Quote(first) + "' is not a host[:port]");
    }
    ref.registry = LowerAscii(first);
    rest = rest.substr(slash + 1);
  } else {
    ref.registry = "docker.io";
  }
  // A tag follows the last ':' that comes after the last '/'.
  const size_t last_slash = rest.rfind('/');
  const size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    ref.tag = std::string(rest.substr(colon + 1));
    if (!IsTag(ref.tag)) return InvalidArgument("bad tag '" + Quote(ref.tag) + "'");
    rest = rest.substr(0, colon);
  }
  if (rest.empty() || rest.size() > 255) {
    return InvalidArgument("the repository name of '" + Quote(s) + "' is empty or too long");
  }
  for (size_t start = 0;;) {
    const size_t end = rest.find('/', start);
    if (!IsPathComponent(rest.substr(start, end - start))) {
      return InvalidArgument("bad repository name '" + Quote(rest) +
                             "' (lowercase letters, digits and . _ __ - between them, split by /)");
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  ref.repository = std::string(rest);
  if (ref.registry == "docker.io" && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

Result<std::vector<std::string>> ParseAllowedHosts(std::string_view list) {
  std::vector<std::string> hosts;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view entry = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (!IsRegistryHost(entry)) {
      return InvalidArgument("'" + Quote(entry) + "' is not a HOST or HOST:PORT");
    }
    hosts.push_back(LowerAscii(entry));
  }
  return hosts;
}

Status CheckAllowedHost(const std::vector<std::string>& allowed, std::string_view origin) {
  if (allowed.empty()) return Status::Ok();
  std::string_view authority = origin;
  if (const size_t sep = authority.find("://"); sep != std::string_view::npos) {
    authority.remove_prefix(sep + 3);
  }
  const std::string host_port = LowerAscii(authority);
  // The host without its port ("[::1]:5000" -> "[::1]", "a.b:5000" -> "a.b").
  std::string host = host_port;
  const size_t bracket = host.rfind(']');
  const size_t colon = host.rfind(':');
  if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
    host.resize(colon);
  }
  for (const std::string& a : allowed) {
    if (a == host_port || a == host) return Status::Ok();
  }
  return Status(
      StatusCode::kPermissionDenied,
      "'" + Quote(host_port) + "' is not among the hosts preheat may contact (preheat_registries)");
}

std::string RegistryEndpoint(const ImageReference& ref, bool plain_http) {
  if (ref.registry == "docker.io" || ref.registry == "index.docker.io") {
    return "https://index.docker.io";
  }
  return std::string(plain_http ? "http://" : "https://") + ref.registry;
}

Result<Platform> ParsePlatform(std::string_view s) {
  Platform p;
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t end = s.find('/', start);
    parts.emplace_back(s.substr(start, end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  const bool ok =
      (parts.size() == 2 || parts.size() == 3) &&
      std::all_of(parts.begin(), parts.end(), [](const std::string& x) {
        return !x.empty() && x.size() <= 64 && std::all_of(x.begin(), x.end(), [](char c) {
          return IsLowerAlnum(c) || c == '_' || c == '-' || c == '.';
        });
      });
  if (!ok) {
    return InvalidArgument("platform '" + Quote(s) + "' is not os/arch[/variant]");
  }
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

std::string PlatformString(const Platform& p) {
  return p.os + "/" + p.architecture + (p.variant.empty() ? "" : "/" + p.variant);
}

Result<AuthChallenge> ParseAuthChallenge(std::string_view h) {
  if (h.size() > 8192) return InvalidArgument("WWW-Authenticate too long");
  AuthChallenge c;
  size_t i = 0;
  auto skip_spaces = [&] {
    while (i < h.size() && (h[i] == ' ' || h[i] == '\t')) ++i;
  };
  auto token = [&] {
    const size_t start = i;
    while (i < h.size() && http::IsTokenChar(h[i])) ++i;
    return std::string(h.substr(start, i - start));
  };
  skip_spaces();
  c.scheme = LowerAscii(token());
  if (c.scheme.empty()) return InvalidArgument("no auth scheme");
  for (;;) {
    skip_spaces();
    if (i >= h.size()) break;
    const std::string name = LowerAscii(token());
    skip_spaces();
    if (name.empty() || i >= h.size() || h[i] != '=') {
      return InvalidArgument("malformed auth parameter near byte " + std::to_string(i));
    }
    ++i;
    skip_spaces();
    std::string value;
    if (i < h.size() && h[i] == '"') {
      for (++i;; ++i) {
        if (i >= h.size()) return InvalidArgument("unterminated quoted auth parameter");
        if (h[i] == '\\' && i + 1 < h.size()) {
          value += h[++i];
        } else if (h[i] == '"') {
          ++i;
          break;
        } else {
          value += h[i];
        }
      }
    } else {
      value = token();
    }
    c.params[name] = value;
    skip_spaces();
    if (i < h.size() && h[i] == ',') {
      ++i;
    } else if (i < h.size()) {
      return InvalidArgument("malformed auth parameters (several challenges are not supported)");
    }
  }
  return c;
}

Result<ManifestDocument> ParseManifestDocument(std::string_view body,
                                               std::string_view content_type) {
  Json doc = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return InvalidArgument("the manifest is not a JSON object");
  if (auto v = doc.find("schemaVersion"); v != doc.end() && *v == 1) {
    return InvalidArgument("Docker schema 1 manifests are not supported");
  }
  std::string type = MediaType(content_type);
  if (type != kOciIndex && type != kDockerList && type != kOciManifest && type != kDockerManifest) {
    auto mt = doc.find("mediaType");
    type = mt != doc.end() && mt->is_string() ? mt->get<std::string>() : "";
    if (type.empty()) type = doc.contains("manifests") ? kOciIndex : kOciManifest;
  }
  ManifestDocument out;
  if (type == kOciIndex || type == kDockerList) {
    out.is_index = true;
    auto m = ParseDescriptors(doc, "manifests", /*with_platform=*/true);
    if (!m.ok()) return m.status();
    out.manifests = std::move(m).value();
    return out;
  }
  if (type != kOciManifest && type != kDockerManifest) {
    return InvalidArgument("unsupported manifest media type '" + Quote(type) + "'");
  }
  auto config = doc.find("config");
  if (config == doc.end()) return InvalidArgument("the manifest has no config");
  auto c = ParseDescriptor(*config, false);
  if (!c.ok()) return c.status();
  out.config = std::move(c).value();
  auto layers = ParseDescriptors(doc, "layers", false);
  if (!layers.ok()) return layers.status();
  out.layers = std::move(layers).value();
  return out;
}

Result<Descriptor> SelectPlatform(const std::vector<Descriptor>& manifests,
                                  const Platform& platform) {
  std::string seen;
  for (const Descriptor& d : manifests) {
    if (d.platform.os == platform.os && d.platform.architecture == platform.architecture &&
        (platform.variant.empty() || d.platform.variant == platform.variant)) {
      return d;
    }
    seen += (seen.empty() ? "" : ", ") + PlatformString(d.platform);
  }
  return NotFound("the image has no manifest for " + PlatformString(platform) +
                  " (it has: " + (seen.empty() ? "none" : seen) + ")");
}

Result<ResolvedImage> ResolveImage(const ImageReference& ref, const ResolveOptions& options) {
  DF_RETURN_IF_ERROR(
      CheckAllowedHost(options.allowed_hosts, RegistryEndpoint(ref, options.plain_http)));
  RegistrySession session(ref, options);
  std::string reference = ref.ManifestReference();
  for (int depth = 0;; ++depth) {
    const std::string what = "manifest " + ref.repository + ":" + reference;
    auto r = session.GetManifest(reference);
    if (!r.ok()) return r.status();
    DF_RETURN_IF_ERROR(CheckManifestAnswer(r.value(), what));
    auto digest = ManifestDigest(r.value().body, reference);
    if (!digest.ok()) return digest.status();
    auto doc =
        ParseManifestDocument(r.value().body, HeaderValue(r.value().headers, "Content-Type"));
    if (!doc.ok()) return Status(doc.status().code(), what + ": " + doc.status().message());
    if (doc.value().is_index) {
      if (depth > 0) return InvalidArgument(what + ": an index inside an index");
      auto chosen = SelectPlatform(doc.value().manifests, options.platform);
      if (!chosen.ok()) return chosen.status();
      reference = chosen.value().digest;
      continue;
    }
    ResolvedImage image;
    image.endpoint = session.endpoint();
    image.repository = ref.repository;
    image.manifest_digest = digest.value();
    image.blobs.push_back(doc.value().config);
    for (const Descriptor& layer : doc.value().layers) {
      const bool seen = std::any_of(image.blobs.begin(), image.blobs.end(),
                                    [&](const Descriptor& b) { return b.digest == layer.digest; });
      if (!seen) image.blobs.push_back(layer);
    }
    if (!session.authorization().empty()) {
      image.blob_headers["Authorization"] = session.authorization();
    }
    return image;
  }
}

}  // namespace df::oci
