#include "daemon/registry_mirror.h"

#include <fcntl.h>
#include <httplib.h>
#include <prometheus/counter.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "common/digest.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/redact.h"
#include "common/task_spec.h"
#include "daemon/mirror_front.h"
#include "daemon/services.h"

namespace df {
namespace {

using MirrorClock = std::chrono::steady_clock;

// How long a registry's yes to "may these credentials read this blob" is reused.
constexpr auto kAuthCacheTtl = std::chrono::seconds(60);
constexpr size_t kMaxAuthCacheEntries = 4096;
// Pass-through bodies are manifests, indexes and error documents (the OCI spec suggests
// manifests of at most 4 MiB); anything larger is refused rather than buffered.
constexpr size_t kMaxPassThroughBodyBytes = 64ull << 20;
// A blob whose task has not finished after this long is fetched from the registry directly.
constexpr auto kBlobTaskTimeout = std::chrono::minutes(30);
constexpr size_t kServeChunkBytes = 256 << 10;
// A streaming response whose task gives no new byte for this long continues from the registry.
constexpr auto kStreamStallTimeout = std::chrono::minutes(5);
// How often a streaming response looks for newly finished pieces.
constexpr int kStreamPollMs = 20;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsLowerAlnum(char c) { return IsDigit(c) || (c >= 'a' && c <= 'z'); }
bool IsHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }

// One component of an OCI repository name: [a-z0-9]+ joined by ".", "_", "__" or "-"+.
bool IsNameComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !IsLowerAlnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    const bool dashes = std::all_of(sep.begin(), sep.end(), [](char x) { return x == '-'; });
    if (sep != "." && sep != "_" && sep != "__" && !dashes) return false;
    i = j;
  }
  return true;
}

bool IsRepositoryName(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  size_t start = 0;
  for (;;) {
    size_t slash = name.find('/', start);
    if (!IsNameComponent(name.substr(start, slash - start))) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

bool ParseDecimal(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), IsDigit)) return false;
  *out = std::stoull(std::string(s));
  return true;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return AsciiLower(a) == AsciiLower(b);
}

// Headers that describe one hop, not the message (RFC 9110 7.6.1), and what cpp-httplib adds.
bool IsHopHeader(std::string_view name) {
  static const char* const kHop[] = {"host",
                                     "connection",
                                     "keep-alive",
                                     "proxy-connection",
                                     "proxy-authorization",
                                     "proxy-authenticate",
                                     "te",
                                     "trailer",
                                     "transfer-encoding",
                                     "upgrade",
                                     "content-length",
                                     "remote_addr",
                                     "remote_port",
                                     "local_addr",
                                     "local_port"};
  const std::string lower = AsciiLower(name);
  for (const char* h : kHop) {
    if (lower == h) return true;
  }
  return false;
}

// The upstream request target: the client's raw target without containerd's `ns` parameter.
std::string UpstreamTarget(const std::string& target) {
  const size_t q = target.find('?');
  if (q == std::string::npos) return target;
  std::string out = target.substr(0, q), query;
  size_t start = q + 1;
  while (start <= target.size()) {
    size_t amp = target.find('&', start);
    if (amp == std::string::npos) amp = target.size();
    std::string_view param(target.data() + start, amp - start);
    if (!param.empty() && param != "ns" && param.substr(0, 3) != "ns=") {
      query += (query.empty() ? "" : "&") + std::string(param);
    }
    start = amp + 1;
  }
  return query.empty() ? out : out + "?" + query;
}

// A path that a registry would normalise into another one ("/v2/../x").
bool HasDotSegment(std::string_view path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view seg = path.substr(start, slash - start);
    if (seg == "." || seg == "..") return true;
    start = slash + 1;
  }
  return false;
}

void SendError(httplib::Response& res, int status, const char* error_type,
               const std::string& message) {
  res.status = status;
  if (error_type) res.set_header(kHeaderDragonflyErrorType, error_type);
  res.set_content(message + "\n", "text/plain");
}

// The mirror's cpp-httplib server, fed connections by the MirrorFront instead of listening
// itself (process_request is the per-request step of cpp-httplib's own connection loop).
class MirrorHttpServer : public httplib::Server {
 public:
  // cpp-httplib reads svr_sock_ only as "the server is not shutting down": content providers
  // stop once it is INVALID_SOCKET. Nothing is ever done with the value itself.
  void SetServing(bool serving) { svr_sock_ = serving ? 0 : INVALID_SOCKET; }

  // HTTPConnectionHandler: requests on `stream` while keep-alive lasts. `upstream` (an
  // intercepted tunnel's registry) replaces any X-Dragonfly-Registry of the client's.
  void ServeConnection(ConnectionStream& stream, const std::string& upstream) {
    const std::function<void(httplib::Request&)> setup = [&upstream](httplib::Request& req) {
      if (upstream.empty()) return;
      req.headers.erase(kHeaderDragonflyRegistry);
      req.headers.emplace(kHeaderDragonflyRegistry, upstream);
    };
    for (size_t left = keep_alive_max_count_; left > 0 && svr_sock_ != INVALID_SOCKET; --left) {
      if (!stream.WaitReadable(static_cast<int>(keep_alive_timeout_sec_ * 1000))) return;
      bool closed = false;
      if (!process_request(stream, left == 1, closed, setup) || closed) return;
    }
  }
};

// What the registry answered to the authorisation HEAD.
enum class Authorisation { kAllowed, kRefused, kUnreachable };

}  // namespace

std::optional<Result<BlobRef>> ParseBlobPath(std::string_view path) {
  constexpr std::string_view kPrefix = "/v2/", kBlobs = "/blobs/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const size_t blobs = path.rfind(kBlobs);
  if (blobs == std::string_view::npos || blobs + 1 < kPrefix.size()) return std::nullopt;
  std::string_view name =  // "/v2//blobs/..." has an empty name
      blobs < kPrefix.size() ? std::string_view() : path.substr(4, blobs - kPrefix.size());
  std::string_view ref = path.substr(blobs + kBlobs.size());
  if (ref.find('/') != std::string_view::npos) return std::nullopt;  // blobs/uploads/<uuid>
  if (!IsRepositoryName(name)) {
    return Result<BlobRef>(InvalidArgument("repository name is not a valid OCI name"));
  }
  constexpr std::string_view kSha256 = "sha256:";
  if (ref.size() != kSha256.size() + 64 || ref.substr(0, kSha256.size()) != kSha256 ||
      !std::all_of(ref.begin() + kSha256.size(), ref.end(), IsHex)) {
    return Result<BlobRef>(InvalidArgument("blob digest must be sha256:<64 lowercase hex>"));
  }
  return Result<BlobRef>(BlobRef{std::string(name), std::string(ref)});
}

Result<std::pair<std::string, std::string>> SplitAbsoluteTarget(std::string_view target) {
  const size_t sep = target.find("://");
  if (sep == std::string_view::npos) return InvalidArgument("not an absolute URL");
  const size_t slash = target.find('/', sep + 3);
  auto upstream = ParseRegistryUpstream(target.substr(0, slash));
  if (!upstream.ok()) return upstream.status();
  std::string origin = slash == std::string_view::npos ? "/" : std::string(target.substr(slash));
  return std::make_pair(std::move(upstream).value(), std::move(origin));
}

std::optional<Result<ByteRange>> ResolveRange(std::string_view value, uint64_t size) {
  constexpr std::string_view kBytes = "bytes=";
  if (value.size() <= kBytes.size() || !EqualsIgnoreCase(value.substr(0, kBytes.size()), kBytes)) {
    return std::nullopt;
  }
  std::string_view spec = value.substr(kBytes.size());
  const size_t dash = spec.find('-');
  if (dash == std::string_view::npos || spec.find(',') != std::string_view::npos) {
    return std::nullopt;
  }
  const auto unsatisfiable = [] {
    return Result<ByteRange>(InvalidArgument("range not satisfiable"));
  };
  uint64_t first = 0, last = 0;
  if (dash == 0) {  // suffix: the last N bytes
    if (!ParseDecimal(spec.substr(1), &last)) return std::nullopt;
    if (last == 0 || size == 0) return unsatisfiable();
    return Result<ByteRange>(ByteRange{size > last ? size - last : 0, size - 1});
  }
  if (!ParseDecimal(spec.substr(0, dash), &first)) return std::nullopt;
  if (dash + 1 == spec.size()) {
    last = size == 0 ? 0 : size - 1;
  } else if (!ParseDecimal(spec.substr(dash + 1), &last) || last < first) {
    return std::nullopt;
  }
  if (first >= size) return unsatisfiable();
  return Result<ByteRange>(ByteRange{first, std::min(last, size - 1)});
}

std::map<std::string, std::string> UpstreamHeaders(
    const std::multimap<std::string, std::string>& client_headers) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : client_headers) {
    const std::string lower = AsciiLower(name);
    if (IsHopHeader(name) || lower == "range" || lower.rfind("x-dragonfly-", 0) == 0) continue;
    auto [it, fresh] = out.emplace(name, value);
    if (!fresh) it->second += ", " + value;  // repeated header: one comma-separated list
  }
  return out;
}

struct RegistryMirror::Impl {
  Impl(const DaemonConfig& c, TaskManager& m, PieceStore& s, BackendRegistry& b,
       prometheus::Registry* registry)
      : config(c), manager(m), store(s), backends(b), metrics_registry(registry) {
    // ValidateDaemonConfig compiled them already: a failure here cannot happen; no rules then.
    if (auto r = ProxyRules::Compile(c.proxy_rules); r.ok()) rules = std::move(r).value();
    if (registry) {
      requests = &prometheus::BuildCounter()
                      .Name("df_daemon_proxy_requests_total")
                      .Help(
                          "Registry mirror requests by how they were served: p2p (a blob from "
                          "its task), fallback (a blob straight from the registry after the "
                          "task failed), pass_through, refused (the registry did not authorise "
                          "the blob), error (the client got an error from the mirror)")
                      .Register(*registry);
    }
  }

  void Count(const char* kind) {
    if (requests) requests->Add({{"kind", kind}}).Increment();
  }

  void Handle(const httplib::Request& req, httplib::Response& res);
  Result<std::string> ResolveUpstream(const httplib::Request& req) const;
  void PassThrough(const httplib::Request& req, httplib::Response& res, const std::string& upstream,
                   const std::map<std::string, std::string>& headers);
  void ServeBlob(const httplib::Request& req, httplib::Response& res, const std::string& upstream,
                 const std::map<std::string, std::string>& headers, const BlobRef& blob);
  // Answers from the blob's task (streamed, or from verified content for a range); the task's
  // failure, with `res` untouched, when it fails before the response could start.
  Status ServeFromTask(const httplib::Request& req, httplib::Response& res, const std::string& url,
                       const BlobRef& blob, const std::map<std::string, std::string>& headers);
  Authorisation Authorise(const std::string& upstream, const BlobRef& blob,
                          const std::map<std::string, std::string>& headers);
  // The blob's task, started or joined.
  Result<std::shared_ptr<PeerTask>> StartTask(const std::string& url, const BlobRef& blob,
                                              const std::map<std::string, std::string>& h);
  // Waits until the task knows the blob's size (and has storage) or finished: the size, or the
  // task's failure (DeadlineExceeded after kBlobTaskTimeout).
  Result<uint64_t> WaitForSize(PeerTask& task);
  // Waits until the task finished: its verified content opened for reading, or its failure.
  Result<UniqueFd> WaitForContent(PeerTask& task);
  // Answers 200 with the blob streamed from the task's content file as its prefix grows.
  void StreamTask(httplib::Response& res, std::shared_ptr<PeerTask> task, uint64_t size,
                  const std::string& url, const BlobRef& blob,
                  const std::map<std::string, std::string>& h);
  struct BlobStream;
  struct RangeStream;
  // Answers 206 for `range` of the blob, streamed from the task's pieces as they finish
  // (RangeNext).
  void StreamRange(httplib::Response& res, std::shared_ptr<PeerTask> task, uint64_t size,
                   ByteRange range, const std::string& url, const BlobRef& blob,
                   const std::map<std::string, std::string>& h);
  // Sends the next bytes of the range at `offset` (bytes of the range sent so far): from a
  // finished piece of the task while every piece it took from a parent was checked against its
  // origin digest; from the registry once the task failed, stalled or took a piece on CRC32C
  // alone. False aborts the response.
  bool RangeNext(RangeStream& st, uint64_t offset, httplib::DataSink& sink);
  bool RangeFromRegistry(RangeStream& st, uint64_t at, httplib::DataSink& sink);
  // Serves a blob whose task is done in storage (a cache hit) without starting a task (which
  // would hash the whole blob again); false when there is no such content.
  bool ServeFromCache(const httplib::Request& req, httplib::Response& res, const std::string& url,
                      const BlobRef& blob, const std::map<std::string, std::string>& headers);
  // Answers 200 and streams `st` (StreamNext).
  void StartStream(httplib::Response& res, std::shared_ptr<BlobStream> st);
  // Sends the next bytes of `st` at `offset` (the bytes sent so far): from the task's verified
  // prefix, or from the registry once the task failed. The chunk that ends the blob is sent
  // only when the sha256 of every byte sent matches the digest; false aborts the response.
  bool StreamNext(BlobStream& st, uint64_t offset, httplib::DataSink& sink);
  bool SendFromFile(BlobStream& st, uint64_t offset, uint64_t ready, httplib::DataSink& sink);
  bool SendFromRegistry(BlobStream& st, uint64_t offset, httplib::DataSink& sink);
  // The blob straight from the registry, verified, in an unlinked temporary file.
  Result<std::pair<UniqueFd, uint64_t>> FetchDirect(const std::string& url, const BlobRef& blob,
                                                    const std::map<std::string, std::string>& h);
  static void Serve(const httplib::Request& req, httplib::Response& res, UniqueFd fd, uint64_t size,
                    const std::string& content_type = "application/octet-stream");
  // A GET a proxy rule matched: the registry's HEAD with the client's headers decides (anything
  // but 200 and the GET passes through); then the task keyed by the URL serves it, with the
  // HEAD's Content-Type and Docker-Content-Digest. A failed task passes the GET through.
  void ServeByRule(const httplib::Request& req, httplib::Response& res, const std::string& upstream,
                   const std::map<std::string, std::string>& headers);

  const DaemonConfig& config;
  ProxyRules rules;
  TaskManager& manager;
  PieceStore& store;
  BackendRegistry& backends;
  prometheus::Registry* metrics_registry = nullptr;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  MirrorHttpServer server;
  std::unique_ptr<MirrorFront> front;  // set by Start

  // Set by Stop(): waits end, streams are cut, nothing falls back to the registry any more.
  std::atomic<bool> stopping{false};

  std::mutex mu;
  // Credential-scoped authorisations: key -> when the registry said yes.
  std::map<std::string, MirrorClock::time_point> authorised;  // GUARDED_BY(mu)
};

namespace {

// A client for `upstream` that passes bytes as they are: no decompression, no redirects.
// `ca_file`: PEM CAs trusted besides the system's (origin_ca_file; "" for none).
std::unique_ptr<httplib::Client> NewUpstreamClient(const std::string& upstream,
                                                   const std::string& ca_file) {
  auto cli = std::make_unique<httplib::Client>(upstream);
  cli->set_connection_timeout(10, 0);
  cli->set_read_timeout(60, 0);
  cli->set_write_timeout(60, 0);
  cli->set_decompress(false);
  cli->set_follow_location(false);
  cli->enable_server_certificate_verification(true);
  if (!ca_file.empty() && upstream.rfind("https://", 0) == 0) {
    // The client's TLS context takes the store; cpp-httplib adds the system's CAs to it.
    X509_STORE* store = X509_STORE_new();
    if (store && X509_STORE_load_file(store, ca_file.c_str()) == 1) {
      cli->set_ca_cert_store(store);
    } else {
      X509_STORE_free(store);
    }
  }
  return cli;
}

httplib::Headers ToHeaders(const std::map<std::string, std::string>& m) {
  return httplib::Headers(m.begin(), m.end());
}

}  // namespace

Result<std::string> RegistryMirror::Impl::ResolveUpstream(const httplib::Request& req) const {
  if (req.has_header(kHeaderDragonflyRegistry)) {
    auto u = ParseRegistryUpstream(req.get_header_value(kHeaderDragonflyRegistry));
    if (!u.ok())
      return InvalidArgument(std::string(kHeaderDragonflyRegistry) + ": " + u.status().message());
    return u;
  }
  if (req.has_param("ns")) return UpstreamFromNs(req.get_param_value("ns"));
  return config.registry_mirror;
}

void RegistryMirror::Impl::Handle(const httplib::Request& req, httplib::Response& res) {
  if ((req.path != "/v2" && req.path.rfind("/v2/", 0) != 0) || HasDotSegment(req.path)) {
    Count("error");
    return SendError(res, 404, "proxy", "only the registry API (/v2/...) is mirrored");
  }
  auto upstream = ResolveUpstream(req);
  if (!upstream.ok()) {
    Count("error");
    return SendError(res, 400, "proxy", upstream.status().message());
  }
  std::map<std::string, std::string> headers =
      UpstreamHeaders({req.headers.begin(), req.headers.end()});
  if (Status s = ValidateRequestHeaders(headers); !s.ok()) {
    Count("error");
    return SendError(res, 400, "proxy", s.message());
  }
  if (req.method == "GET") {
    if (auto blob = ParseBlobPath(req.path)) {
      if (!blob->ok()) {
        Count("error");
        return SendError(res, 400, "proxy", blob->status().message());
      }
      return ServeBlob(req, res, upstream.value(), headers, blob->value());
    }
    if (rules.Matches(req.path)) return ServeByRule(req, res, upstream.value(), headers);
  }
  PassThrough(req, res, upstream.value(), headers);
}

void RegistryMirror::Impl::ServeByRule(const httplib::Request& req, httplib::Response& res,
                                       const std::string& upstream,
                                       const std::map<std::string, std::string>& headers) {
  const std::string target = UpstreamTarget(req.target);
  httplib::Result head =
      NewUpstreamClient(upstream, config.origin_ca_file)->Head(target.c_str(), ToHeaders(headers));
  if (!head || head->status != 200) return PassThrough(req, res, upstream, headers);
  TaskSpec spec;
  spec.url = upstream + target;
  if (!ValidateTaskSpec(spec, UrlPolicy{}).ok()) return PassThrough(req, res, upstream, headers);
  auto task = manager.Acquire(RequestOf(spec, headers));
  auto fd = task.ok() ? WaitForContent(*task.value()) : Result<UniqueFd>(task.status());
  struct stat st {};
  if (!fd.ok() || ::fstat(fd.value().get(), &st) != 0) {
    DF_LOG_WARN("mirror: the task for {} failed ({}); passing the request through",
                RedactUrl(spec.url), fd.ok() ? "fstat" : fd.status().ToString());
    Count("fallback");
    return PassThrough(req, res, upstream, headers);
  }
  Count("p2p");
  res.set_header(kHeaderDragonflyTaskId, task.value()->request().task_id);
  if (head->has_header("Docker-Content-Digest")) {
    res.set_header("Docker-Content-Digest", head->get_header_value("Docker-Content-Digest"));
  }
  std::string type = head->get_header_value("Content-Type");
  Serve(req, res, std::move(fd).value(), static_cast<uint64_t>(st.st_size),
        type.empty() ? "application/octet-stream" : type);
}

void RegistryMirror::Impl::PassThrough(const httplib::Request& req, httplib::Response& res,
                                       const std::string& upstream,
                                       const std::map<std::string, std::string>& headers) {
  auto cli = NewUpstreamClient(upstream, config.origin_ca_file);
  httplib::Headers h = ToHeaders(headers);
  if (req.has_header("Range")) h.emplace("Range", req.get_header_value("Range"));
  const std::string target = UpstreamTarget(req.target);
  std::string body;
  bool too_big = false;
  httplib::Result r = req.method == "HEAD"
                          ? cli->Head(target.c_str(), h)
                          : cli->Get(
                                target.c_str(), h, [](const httplib::Response&) { return true; },
                                [&](const char* data, size_t n) {
                                  if (body.size() + n > kMaxPassThroughBodyBytes) {
                                    too_big = true;
                                    return false;
                                  }
                                  body.append(data, n);
                                  return true;
                                });
  if (too_big) {
    Count("error");
    return SendError(res, 502, "backend", "registry response body exceeds the mirror's limit");
  }
  if (!r) {
    Count("error");
    return SendError(res, 502, "backend",
                     "registry " + upstream + " unreachable: " + httplib::to_string(r.error()));
  }
  Count("pass_through");
  res.status = r->status;
  uint64_t length = 0;
  bool has_length = false;
  for (const auto& [name, value] : r->headers) {
    if (EqualsIgnoreCase(name, "Content-Length")) has_length = ParseDecimal(value, &length);
    if (IsHopHeader(name)) continue;
    res.headers.emplace(name, value);
  }
  if (req.method == "HEAD" && has_length && length > 0) {
    // A HEAD answer's Content-Length is the GET's; cpp-httplib takes it from a content provider
    // (never called for HEAD).
    const std::string type = r->get_header_value("Content-Type");
    res.headers.erase("Content-Type");
    res.set_content_provider(length, type.empty() ? "application/octet-stream" : type,
                             [](size_t, size_t, httplib::DataSink&) { return false; });
    return;
  }
  res.body = std::move(body);
}

Authorisation RegistryMirror::Impl::Authorise(const std::string& upstream, const BlobRef& blob,
                                              const std::map<std::string, std::string>& headers) {
  Sha256 credentials;
  for (const auto& [name, value] : headers) {
    const std::string lower = AsciiLower(name);
    if (lower == "authorization" || lower == "cookie") {
      credentials.Update(lower.data(), lower.size());
      credentials.Update(value.data(), value.size() + 1);  // with the NUL: unambiguous
    }
  }
  const std::string key =
      upstream + "\n" + blob.name + "\n" + blob.digest + "\n" + credentials.FinalHex();
  const auto now = MirrorClock::now();
  {
    std::lock_guard<std::mutex> l(mu);
    auto it = authorised.find(key);
    if (it != authorised.end() && now - it->second < kAuthCacheTtl) return Authorisation::kAllowed;
  }
  auto cli = NewUpstreamClient(upstream, config.origin_ca_file);
  httplib::Result r =
      cli->Head(("/v2/" + blob.name + "/blobs/" + blob.digest).c_str(), ToHeaders(headers));
  if (!r) return Authorisation::kUnreachable;
  if (r->status < 200 || r->status >= 400) return Authorisation::kRefused;
  std::lock_guard<std::mutex> l(mu);
  if (authorised.size() >= kMaxAuthCacheEntries) {
    std::erase_if(authorised, [&](const auto& kv) { return now - kv.second >= kAuthCacheTtl; });
    if (authorised.size() >= kMaxAuthCacheEntries) authorised.clear();
  }
  authorised[key] = now;
  return Authorisation::kAllowed;
}

Result<std::shared_ptr<PeerTask>> RegistryMirror::Impl::StartTask(
    const std::string& url, const BlobRef& blob, const std::map<std::string, std::string>& h) {
  TaskSpec spec;
  spec.url = url;
  spec.digest = blob.digest;
  spec.id_from_digest = true;
  DF_RETURN_IF_ERROR(ValidateTaskSpec(spec, UrlPolicy{}));
  TaskRequest request = RequestOf(spec, h);
  // The first line about a blob's task names its URL, as a local client's download does.
  DF_LOG_INFO("mirror: blob requested task_id={} url={}", request.task_id, RedactUrl(url));
  return manager.Acquire(request);
}

Result<uint64_t> RegistryMirror::Impl::WaitForSize(PeerTask& task) {
  const auto deadline = MirrorClock::now() + kBlobTaskTimeout;
  for (;;) {
    const bool finished = task.WaitFinished(kStreamPollMs);
    TaskProgress p = task.Progress();
    if (finished && !p.status.ok()) return p.status;
    if (p.content_length >= 0 && task.storage()) return static_cast<uint64_t>(p.content_length);
    if (finished) return Internal("finished task without content");
    if (MirrorClock::now() > deadline) {
      return Status(StatusCode::kDeadlineExceeded, "the blob's task did not start in time");
    }
    if (stopping) return Unavailable("the daemon is shutting down");
  }
}

Result<UniqueFd> RegistryMirror::Impl::WaitForContent(PeerTask& task) {
  const auto deadline = MirrorClock::now() + kBlobTaskTimeout;
  while (!task.WaitFinished(kStreamPollMs)) {
    if (stopping) return Unavailable("the daemon is shutting down");
    if (MirrorClock::now() > deadline) {
      return Status(StatusCode::kDeadlineExceeded, "the blob's task did not finish in time");
    }
  }
  TaskProgress p = task.Progress();
  if (!p.status.ok()) return p.status;  // PeerTask checked the digest of a successful one
  std::shared_ptr<TaskStorage> storage = task.storage();
  if (!storage) return Internal("finished task without content");
  UniqueFd fd(::open(storage->content_path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return IoError("cannot open the content of task " + task.request().task_id);
  return fd;
}

struct RegistryMirror::Impl::BlobStream {
  std::shared_ptr<PeerTask> task;
  std::shared_ptr<TaskStorage> storage;
  UniqueFd fd;  // the task's content file
  uint64_t size = 0;
  std::string url;
  std::string digest;
  std::map<std::string, std::string> headers;
  Sha256 sent;                 // over every byte sent (or held back) so far
  uint32_t prefix_pieces = 0;  // FinishedPrefixBytes' cursor
  bool from_registry = false;  // the task failed: the rest comes from the registry
  std::vector<char> buffer = std::vector<char>(kServeChunkBytes);
  // The task gave no new byte until then: the rest comes from the registry.
  MirrorClock::time_point deadline = MirrorClock::now() + kStreamStallTimeout;
};

void RegistryMirror::Impl::StreamTask(httplib::Response& res, std::shared_ptr<PeerTask> task,
                                      uint64_t size, const std::string& url, const BlobRef& blob,
                                      const std::map<std::string, std::string>& h) {
  auto st = std::make_shared<BlobStream>();
  st->storage = task->storage();
  st->fd = UniqueFd(::open(st->storage->content_path().c_str(), O_RDONLY | O_CLOEXEC));
  st->task = std::move(task);
  st->size = size;
  st->url = url;
  st->digest = blob.digest;
  st->headers = h;
  StartStream(res, std::move(st));
}

void RegistryMirror::Impl::StartStream(httplib::Response& res, std::shared_ptr<BlobStream> st) {
  res.status = 200;
  res.set_header("Accept-Ranges", "bytes");
  const uint64_t size = st->size;
  res.set_content_provider(size, "application/octet-stream",
                           [this, st](size_t offset, size_t, httplib::DataSink& sink) {
                             return StreamNext(*st, offset, sink);
                           });
}

bool RegistryMirror::Impl::StreamNext(BlobStream& st, uint64_t offset, httplib::DataSink& sink) {
  while (!st.from_registry) {
    if (stopping) return false;  // shutting down: the response is cut, never ended cleanly
    if (st.fd) {
      const uint64_t ready = st.storage->FinishedPrefixBytes(&st.prefix_pieces);
      if (ready > offset) return SendFromFile(st, offset, ready, sink);
    }
    // Cached content (no task) is whole: not finding the bytes there means it went away.
    const bool finished = !st.task || st.task->WaitFinished(kStreamPollMs);
    if (finished && st.task && st.task->Progress().status.ok() && st.fd) continue;
    if (finished || !st.fd || MirrorClock::now() > st.deadline) {
      DF_LOG_WARN(
          "mirror: task for {} failed after {} bytes were sent ({}); the rest comes "
          "from the registry",
          st.digest, offset,
          st.task ? st.task->Progress().status.ToString() : "cached content went away");
      Count("fallback");
      st.from_registry = true;
    }
  }
  return SendFromRegistry(st, offset, sink);
}

bool RegistryMirror::Impl::SendFromFile(BlobStream& st, uint64_t offset, uint64_t ready,
                                        httplib::DataSink& sink) {
  const size_t n = static_cast<size_t>(std::min<uint64_t>(ready - offset, st.buffer.size()));
  if (!ReadAllAt(st.fd.get(), st.buffer.data(), n, offset)) return false;
  st.sent.Update(st.buffer.data(), n);
  st.deadline = MirrorClock::now() + kStreamStallTimeout;
  if (offset + n == st.size && "sha256:" + st.sent.FinalHex() != st.digest) {
    DF_LOG_ERROR("mirror: the bytes of {} do not match its digest; response aborted", st.digest);
    return false;  // never a clean end for wrong bytes
  }
  return sink.write(st.buffer.data(), n);
}

bool RegistryMirror::Impl::SendFromRegistry(BlobStream& st, uint64_t offset,
                                            httplib::DataSink& sink) {
  auto backend = backends.ForUrl(st.url);
  if (!backend.ok()) return false;
  std::string held;  // the chunk that ends the blob, until the digest is checked
  uint64_t position = offset;
  BackendRequest breq{st.url, st.headers, 0, 10000};
  Status s = backend.value()->Read(breq, offset, static_cast<int64_t>(st.size - offset),
                                   [&](const char* data, size_t n) -> Status {
                                     st.sent.Update(data, n);
                                     position += n;
                                     if (position == st.size) {
                                       held.assign(data, n);
                                       return Status::Ok();
                                     }
                                     if (!sink.write(data, n))
                                       return Status(StatusCode::kCancelled, "client went away");
                                     return Status::Ok();
                                   });
  if (!s.ok() || position != st.size) {
    DF_LOG_WARN("mirror: fetching the rest of {} from the registry failed: {}", st.digest,
                s.ToString());
    return false;
  }
  if ("sha256:" + st.sent.FinalHex() != st.digest) {
    DF_LOG_ERROR("mirror: the bytes of {} do not match its digest; response aborted", st.digest);
    return false;
  }
  return sink.write(held.data(), held.size());
}

Result<std::pair<UniqueFd, uint64_t>> RegistryMirror::Impl::FetchDirect(
    const std::string& url, const BlobRef& blob, const std::map<std::string, std::string>& h) {
  const std::string dir = config.data_dir;
  UniqueFd fd(::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!static_cast<bool>(fd)) return IoError("cannot create a temporary file in " + dir);
  auto backend = backends.ForUrl(url);
  if (!backend.ok()) return backend.status();
  Sha256 sha;
  uint64_t size = 0;
  BackendRequest breq{url, h, 0, 10000};
  Status s = backend.value()->Read(breq, 0, -1, [&](const char* data, size_t n) -> Status {
    sha.Update(data, n);
    DF_RETURN_IF_ERROR(WriteAllAt(fd.get(), data, n, size, "write the blob's temporary file"));
    size += n;
    return Status::Ok();
  });
  if (!s.ok()) return s;
  if ("sha256:" + sha.FinalHex() != blob.digest) {
    return DataLoss("the registry's bytes for " + blob.digest + " do not match the digest");
  }
  return std::make_pair(std::move(fd), size);
}

void RegistryMirror::Impl::Serve(const httplib::Request& req, httplib::Response& res, UniqueFd fd,
                                 uint64_t size, const std::string& content_type) {
  res.set_header("Accept-Ranges", "bytes");
  auto range = ResolveRange(req.get_header_value("Range"), size);
  if (range && !range->ok()) {
    res.status = 416;
    res.set_header("Content-Range", "bytes */" + std::to_string(size));
    return;
  }
  uint64_t first = 0, length = size;
  res.status = 200;
  if (range) {
    first = range->value().first;
    length = range->value().last - first + 1;
    res.status = 206;
    res.set_header("Content-Range", "bytes " + std::to_string(first) + "-" +
                                        std::to_string(range->value().last) + "/" +
                                        std::to_string(size));
  }
  if (length == 0) {
    res.set_content("", content_type);
    return;
  }
  auto file = std::make_shared<UniqueFd>(std::move(fd));
  auto buffer = std::make_shared<std::vector<char>>(kServeChunkBytes);
  res.set_content_provider(length, content_type,
                           [file, buffer, first](size_t offset, size_t n, httplib::DataSink& sink) {
                             const size_t want = std::min(n, buffer->size());
                             ssize_t got = ::pread(file->get(), buffer->data(), want,
                                                   static_cast<off_t>(first + offset));
                             if (got <= 0)
                               return false;  // a short file: abort the response, never a clean end
                             return sink.write(buffer->data(), static_cast<size_t>(got));
                           });
}

bool RegistryMirror::Impl::ServeFromCache(const httplib::Request& req, httplib::Response& res,
                                          const std::string& url, const BlobRef& blob,
                                          const std::map<std::string, std::string>& headers) {
  const std::string id = blob.digest.substr(7);
  std::shared_ptr<TaskStorage> cached = store.FindTask(id);
  if (!cached || !cached->done() || cached->ContentModifiedSinceDone()) return false;
  const bool range = req.has_header("Range");
  // A range cannot be checked against the digest as it is sent: serve one only from content
  // whose task is over (PeerTask checked it then), never in the moment between the last piece
  // and that check.
  if (auto running = manager.Find(id); range && running && !running->Progress().finished) {
    return false;
  }
  UniqueFd fd(::open(cached->content_path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  (void)store.OpenTask(cached->meta());  // records the use, for GC by TTL and LRU
  const uint64_t size = cached->meta().content_length;
  Count("p2p");
  res.set_header(kHeaderDragonflyTaskId, id);
  res.set_header("Docker-Content-Digest", blob.digest);
  if (range || size == 0) {
    Serve(req, res, std::move(fd), size);
    return true;
  }
  auto st = std::make_shared<BlobStream>();
  st->storage = std::move(cached);
  st->fd = std::move(fd);
  st->size = size;
  st->url = url;
  st->digest = blob.digest;
  st->headers = headers;
  StartStream(res, std::move(st));
  return true;
}

Status RegistryMirror::Impl::ServeFromTask(const httplib::Request& req, httplib::Response& res,
                                           const std::string& url, const BlobRef& blob,
                                           const std::map<std::string, std::string>& headers) {
  if (ServeFromCache(req, res, url, blob, headers)) return Status::Ok();
  auto task = StartTask(url, blob, headers);
  if (!task.ok()) return task.status();
  auto size = WaitForSize(*task.value());
  if (!size.ok()) return size.status();
  res.set_header(kHeaderDragonflyTaskId, blob.digest.substr(7));
  res.set_header("Docker-Content-Digest", blob.digest);
  if (auto range = ResolveRange(req.get_header_value("Range"), size.value());
      range && range->ok()) {
    Count("p2p");
    StreamRange(res, std::move(task).value(), size.value(), range->value(), url, blob, headers);
    return Status::Ok();
  }
  if (req.has_header("Range") || size.value() == 0) {
    // A range past the end (416) or several ranges (the whole blob) are answered from the
    // verified content.
    auto fd = WaitForContent(*task.value());
    if (!fd.ok()) {
      res.headers.clear();
      return fd.status();
    }
    Count("p2p");
    Serve(req, res, std::move(fd).value(), size.value());
    return Status::Ok();
  }
  Count("p2p");
  StreamTask(res, std::move(task).value(), size.value(), url, blob, headers);
  return Status::Ok();
}

struct RegistryMirror::Impl::RangeStream {
  std::shared_ptr<PeerTask> task;
  std::shared_ptr<TaskStorage> storage;
  UniqueFd fd;  // the task's content file
  PieceLayout layout;
  ByteRange range;
  std::string url;
  std::string digest;
  std::map<std::string, std::string> headers;
  bool from_registry = false;
  std::vector<char> buffer = std::vector<char>(kServeChunkBytes);
  MirrorClock::time_point deadline = MirrorClock::now() + kStreamStallTimeout;
};

void RegistryMirror::Impl::StreamRange(httplib::Response& res, std::shared_ptr<PeerTask> task,
                                       uint64_t size, ByteRange range, const std::string& url,
                                       const BlobRef& blob,
                                       const std::map<std::string, std::string>& h) {
  auto st = std::make_shared<RangeStream>();
  st->storage = task->storage();
  st->fd = UniqueFd(::open(st->storage->content_path().c_str(), O_RDONLY | O_CLOEXEC));
  // From the task, which knew the size before WaitForSize returned (the storage's own layout
  // has no such promise yet).
  const TaskProgress p = task->Progress();
  st->layout = PieceLayout{size, p.piece_length};
  if (p.piece_length == 0) st->from_registry = true;  // cannot happen; never divide by it
  st->task = std::move(task);
  st->range = range;
  st->url = url;
  st->digest = blob.digest;
  st->headers = h;
  res.status = 206;
  res.set_header("Accept-Ranges", "bytes");
  res.set_header("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                      std::to_string(range.last) + "/" + std::to_string(size));
  res.set_content_provider(range.last - range.first + 1, "application/octet-stream",
                           [this, st](size_t offset, size_t, httplib::DataSink& sink) {
                             return RangeNext(*st, offset, sink);
                           });
}

bool RegistryMirror::Impl::RangeNext(RangeStream& st, uint64_t offset, httplib::DataSink& sink) {
  const uint64_t at = st.range.first + offset;
  if (st.from_registry) return RangeFromRegistry(st, at, sink);
  const PieceNumber piece{static_cast<uint32_t>(at / st.layout.piece_length)};
  while (!st.from_registry) {
    if (stopping) return false;  // shutting down: the response is cut, never ended cleanly
    // Checked after HasPiece: a piece taken on CRC32C alone is counted before it is committed.
    if (st.fd && st.storage->HasPiece(piece) && st.task->Progress().unverified_pieces == 0) {
      const uint64_t end =
          std::min(st.layout.offset(piece) + st.layout.length(piece), st.range.last + 1);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(end - at, st.buffer.size()));
      if (!ReadAllAt(st.fd.get(), st.buffer.data(), n, at)) return false;
      st.deadline = MirrorClock::now() + kStreamStallTimeout;
      return sink.write(st.buffer.data(), n);
    }
    const bool finished = st.task->WaitFinished(kStreamPollMs);
    const TaskProgress p = st.task->Progress();
    const bool usable = p.status.ok() && p.unverified_pieces == 0 && st.fd;
    if (!usable || (finished && !st.storage->HasPiece(piece)) || MirrorClock::now() > st.deadline) {
      DF_LOG_WARN("mirror: range of {} at byte {}: the task {}; the rest comes from the registry",
                  st.digest, at,
                  !p.status.ok()            ? "failed (" + p.status.ToString() + ")"
                  : p.unverified_pieces > 0 ? std::string("took pieces without an origin digest")
                                            : std::string("stalled or lost its content"));
      Count("fallback");
      st.from_registry = true;
    }
  }
  return RangeFromRegistry(st, at, sink);
}

bool RegistryMirror::Impl::RangeFromRegistry(RangeStream& st, uint64_t at,
                                             httplib::DataSink& sink) {
  auto backend = backends.ForUrl(st.url);
  if (!backend.ok()) return false;
  uint64_t position = at;
  BackendRequest breq{st.url, st.headers, 0, 10000};
  Status s = backend.value()->Read(breq, at, static_cast<int64_t>(st.range.last + 1 - at),
                                   [&](const char* data, size_t n) -> Status {
                                     position += n;
                                     if (!sink.write(data, n))
                                       return Status(StatusCode::kCancelled, "client went away");
                                     return Status::Ok();
                                   });
  if (!s.ok() || position != st.range.last + 1) {
    DF_LOG_WARN("mirror: fetching the rest of a range of {} from the registry failed: {}",
                st.digest, s.ToString());
    return false;
  }
  return true;
}

void RegistryMirror::Impl::ServeBlob(const httplib::Request& req, httplib::Response& res,
                                     const std::string& upstream,
                                     const std::map<std::string, std::string>& headers,
                                     const BlobRef& blob) {
  switch (Authorise(upstream, blob, headers)) {
    case Authorisation::kAllowed:
      break;
    case Authorisation::kRefused:
      // The registry's own answer (401 with WWW-Authenticate, 403, 404) reaches the client.
      Count("refused");
      return PassThrough(req, res, upstream, headers);
    case Authorisation::kUnreachable:
      Count("error");
      return SendError(res, 502, "backend", "registry " + upstream + " unreachable");
  }
  const std::string url = upstream + "/v2/" + blob.name + "/blobs/" + blob.digest;
  // The blob's bytes are wanted as they are (their digest), never re-encoded on the way.
  std::map<std::string, std::string> fetch_headers = headers;
  std::erase_if(fetch_headers,
                [](const auto& kv) { return EqualsIgnoreCase(kv.first, "Accept-Encoding"); });
  Status failed = ServeFromTask(req, res, url, blob, fetch_headers);
  if (failed.ok()) return;
  if (stopping) {
    Count("error");
    return SendError(res, 503, "proxy", "the daemon is shutting down");
  }
  DF_LOG_WARN("mirror: task for {} failed ({}), fetching it from {} directly", blob.digest,
              failed.ToString(), upstream);
  auto direct = FetchDirect(url, blob, fetch_headers);
  if (!direct.ok()) {
    Count("error");
    const Status& s = direct.status();
    const int status = s.code() == StatusCode::kNotFound           ? 404
                       : s.code() == StatusCode::kPermissionDenied ? 403
                       : s.code() == StatusCode::kIoError          ? 500
                                                                   : 502;
    return SendError(res, status, status == 500 ? "proxy" : "backend", s.message());
  }
  Count("fallback");
  res.set_header("Docker-Content-Digest", blob.digest);
  Serve(req, res, std::move(direct.value().first), direct.value().second);
}

RegistryMirror::RegistryMirror(const DaemonConfig& config, TaskManager& manager, PieceStore& store,
                               BackendRegistry& backends, prometheus::Registry* registry)
    : impl_(std::make_unique<Impl>(config, manager, store, backends, registry)) {}

RegistryMirror::~RegistryMirror() { Stop(); }

Status RegistryMirror::Start() {
  MirrorHttpServer& server = impl_->server;
  server.set_keep_alive_max_count(1000);
  // cpp-httplib slices any response by the request's Range itself, even a pass-through 206 or
  // 401: the mirror handles ranges (blobs) or forwards them (everything else) on its own.
  // An absolute-form target (a client using this port as its HTTP proxy) becomes origin-form
  // with its scheme://host[:port] as the request's upstream.
  server.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
    auto& r = const_cast<httplib::Request&>(req);
    r.ranges.clear();
    if (req.method == "CONNECT") {
      SendError(res, 400, "proxy", "CONNECT must be the first request of a connection");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!req.path.empty() && req.path[0] != '/') {
      auto split = SplitAbsoluteTarget(req.target);
      const size_t prefix = req.target.find('/', req.target.find("://") + 3);
      if (!split.ok() || prefix == std::string::npos || req.path.size() < prefix ||
          req.path.compare(0, prefix, req.target, 0, prefix) != 0) {
        SendError(res, 400, "proxy",
                  "proxy request target: " +
                      (split.ok() ? std::string("malformed") : split.status().message()));
        return httplib::Server::HandlerResponse::Handled;
      }
      r.path = req.path.substr(prefix);
      r.target = split.value().second;
      r.headers.erase(kHeaderDragonflyRegistry);
      r.headers.emplace(kHeaderDragonflyRegistry, split.value().first);
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        SendError(res, 500, "proxy", "internal error");
      });
  Impl* impl = impl_.get();
  auto handle = [impl](const httplib::Request& req, httplib::Response& res) {
    impl->Handle(req, res);
  };
  server.Get(".*", handle);  // GET and HEAD
  auto refuse = [impl](const httplib::Request&, httplib::Response& res) {
    impl->Count("error");
    SendError(res, 405, "proxy", "the registry mirror is read-only (GET and HEAD)");
  };
  server.Post(".*", refuse);
  server.Put(".*", refuse);
  server.Patch(".*", refuse);
  server.Delete(".*", refuse);
  server.Options(".*", refuse);
  server.SetServing(true);
  impl_->front = std::make_unique<MirrorFront>(
      impl_->config,
      [impl](ConnectionStream& stream, const std::string& upstream) {
        impl->server.ServeConnection(stream, upstream);
      },
      impl_->metrics_registry);
  if (Status s = impl_->front->Start(); !s.ok()) {
    server.SetServing(false);
    return s;
  }
  port_ = impl_->front->port();
  DF_LOG_INFO(
      "registry mirror listening on {}:{} (default upstream {}; CONNECT to {} host(s), "
      "intercepting {})",
      impl_->config.proxy_ip, port_, impl_->config.registry_mirror,
      impl_->config.proxy_connect_hosts.size(), impl_->config.proxy_intercept_hosts.size());
  return Status::Ok();
}

void RegistryMirror::Stop() {
  if (!impl_) return;
  impl_->stopping = true;
  impl_->server.SetServing(false);
  if (impl_->front) impl_->front->Stop();
}

}  // namespace df
