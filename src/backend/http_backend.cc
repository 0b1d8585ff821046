// http(s):// origin through libcurl: ranged GETs on pooled easy handles (so connections are
// reused across pieces), redirects, TLS with the system CA store, custom headers.
#include <curl/curl.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "backend/backend.h"

namespace df {
namespace {

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_ALL); }
  ~CurlGlobal() { curl_global_cleanup(); }
};

// Owns one CURL easy handle; its connection cache survives across requests.
struct EasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct HeaderList {
  curl_slist* list = nullptr;
  ~HeaderList() { curl_slist_free_all(list); }
  void Add(const std::string& h) { list = curl_slist_append(list, h.c_str()); }
};

// State of one transfer, shared with curl's callbacks.
struct Transfer {
  const ByteSink* sink = nullptr;
  Status sink_status;
  uint64_t received = 0;
  long status_seen = 0;  // HTTP status of the final response, checked before the body
  bool accept_ranges = false;
  int64_t content_range_total = -1;
  CURL* easy = nullptr;
  int64_t content_length = -1;  // Content-Length of the final response, -1 if absent
};

size_t OnBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t n = size * nmemb;
  if (t->status_seen == 0) curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status_seen);
  if (t->status_seen >= 300) return n;  // an error body: discard, the status decides
  if (!t->sink) return n;
  t->sink_status = (*t->sink)(data, n);
  if (!t->sink_status.ok()) return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  t->received += n;
  return n;
}

bool HeaderIs(const char* line, size_t n, const char* name) {
  size_t len = std::strlen(name);
  return n > len && strncasecmp(line, name, len) == 0;
}

size_t OnHeader(char* line, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t n = size * nmemb;
  if (HeaderIs(line, n, "HTTP/")) {  // a new response (after a redirect): reset what we saw
    t->accept_ranges = false;
    t->content_range_total = -1;
    t->status_seen = 0;
  } else if (HeaderIs(line, n, "accept-ranges:")) {
    std::string v(line + 14, n - 14);
    t->accept_ranges = v.find("bytes") != std::string::npos;
  } else if (HeaderIs(line, n, "content-range:")) {
    std::string v(line + 14, n - 14);
    size_t slash = v.find('/');
    if (slash != std::string::npos && v.find('*', slash) == std::string::npos) {
      t->content_range_total = std::strtoll(v.c_str() + slash + 1, nullptr, 10);
    }
  }
  return n;
}

Status StatusFromHttp(long code, const std::string& url) {
  std::string what = "HTTP " + std::to_string(code) + " from " + url;
  if (code == 404 || code == 410) return {StatusCode::kNotFound, what};
  if (code == 401 || code == 403) return {StatusCode::kPermissionDenied, what};
  // Busy or briefly broken: the same request may well succeed later. 501/505 will not.
  bool transient =
      code == 408 || code == 429 || (code >= 500 && code < 600 && code != 501 && code != 505);
  if (transient) return Unavailable(what);
  return {StatusCode::kHttpError, what};
}

Status StatusFromCurl(CURLcode rc, const char* errbuf, const std::string& url, long code) {
  std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  std::string what = url + ": " + detail;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return {StatusCode::kDeadlineExceeded, what};
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
      return {StatusCode::kUnavailable, what};
    case CURLE_PARTIAL_FILE:
      return {StatusCode::kDataLoss, what};
    case CURLE_UNSUPPORTED_PROTOCOL:
      // After a 3xx it is the origin that sent us somewhere we refuse to go (file://, ftp://...).
      if (code >= 300 && code < 400) return {StatusCode::kHttpError, what + " (refused redirect)"};
      return {StatusCode::kInvalidArgument, what};
    case CURLE_URL_MALFORMAT:
      return {StatusCode::kInvalidArgument, what};
    default:
      return {StatusCode::kIoError, what};
  }
}

// Only http(s), for the URL and every redirect: an origin must never make the daemon read
// file:// (local files) or speak another protocol. curl's default redirect set includes ftp.
Status RestrictProtocols(CURL* c) {
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85: the string options; the bitmask ones are deprecated
  CURLcode a = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode b = curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
  CURLcode a = curl_easy_setopt(c, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
  CURLcode b = curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
  if (a != CURLE_OK || b != CURLE_OK) return Internal("libcurl refused to restrict protocols");
  return Status::Ok();
}

class HttpBackend : public Backend {
 public:
  Result<ObjectInfo> Stat(const BackendRequest& req) override {
    // HEAD first; origins that refuse HEAD (presigned URLs, some CDNs) get a one-byte GET.
    Transfer t;
    long code = 0;
    Status s = Perform(req, /*head=*/true, "", &t, &code);
    if (s.ok() && code < 300) {
      ObjectInfo info;
      info.content_length = t.content_length;
      info.supports_range = t.accept_ranges;
      if (info.supports_range || info.content_length >= 0) return info;
    } else if (!s.ok()) {
      return s;
    } else if (code == 404 || code == 410 || code == 401) {
      return StatusFromHttp(code, req.url);
    }
    Transfer g;
    ByteSink discard = [](const char*, size_t) { return Status::Ok(); };
    g.sink = &discard;
    DF_RETURN_IF_ERROR(Perform(req, /*head=*/false, "0-0", &g, &code));
    if (code >= 300) return StatusFromHttp(code, req.url);
    ObjectInfo info;
    if (code == 206) {
      info.supports_range = true;
      info.content_length = g.content_range_total;
    } else {
      info.content_length = g.content_length;
    }
    return info;
  }

  Status Read(const BackendRequest& req, uint64_t offset, int64_t length,
              const ByteSink& sink) override {
    std::string range;
    if (offset > 0 || length >= 0) {
      range = std::to_string(offset) + "-";
      if (length >= 0) {
        if (length == 0) return Status::Ok();
        range += std::to_string(offset + static_cast<uint64_t>(length) - 1);
      }
    }
    Transfer t;
    t.sink = &sink;
    long code = 0;
    Status s = Perform(req, /*head=*/false, range, &t, &code);
    if (!t.sink_status.ok()) return t.sink_status;
    DF_RETURN_IF_ERROR(s);
    if (code >= 300) return StatusFromHttp(code, req.url);
    if (!range.empty() && code != 206 && offset > 0) {
      return {StatusCode::kHttpError, req.url + ": origin ignored the Range header"};
    }
    if (length >= 0 && t.received != static_cast<uint64_t>(length)) {
      return DataLoss(req.url + ": got " + std::to_string(t.received) + " of " +
                      std::to_string(length) + " bytes");
    }
    return Status::Ok();
  }

 private:
  EasyHandle Take() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!pool_.empty()) {
        EasyHandle h = std::move(pool_.back());
        pool_.pop_back();
        return h;
      }
    }
    return EasyHandle(curl_easy_init());
  }
  void Give(EasyHandle h) {
    std::lock_guard<std::mutex> l(mu_);
    if (pool_.size() < 64) pool_.push_back(std::move(h));
  }

  Status Perform(const BackendRequest& req, bool head, const std::string& range, Transfer* t,
                 long* code) {
    EasyHandle h = Take();
    CURL* c = h.get();
    curl_easy_reset(c);
    DF_RETURN_IF_ERROR(RestrictProtocols(c));
    char errbuf[CURL_ERROR_SIZE] = {0};
    HeaderList headers;
    for (const auto& [k, v] : req.headers) headers.Add(k + ": " + v);
    t->easy = c;
    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "dfdaemon/0.1");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.list);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(req.connect_timeout_ms));
    if (req.timeout_ms > 0)
      curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout_ms));
    // Abort a transfer that stalls below 1 KiB/s for 30 s rather than hanging forever.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, t);
    if (head) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (!range.empty()) curl_easy_setopt(c, CURLOPT_RANGE, range.c_str());
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, code);
    curl_off_t len = -1;
    curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
    t->content_length = len;
    Status s = Status::Ok();
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && !t->sink_status.ok())) {
      s = StatusFromCurl(rc, errbuf, req.url, *code);
    }
    Give(std::move(h));
    return s;
  }

  CurlGlobal global_;
  std::mutex mu_;
  std::vector<EasyHandle> pool_;  // GUARDED_BY(mu_)
};

}  // namespace

std::unique_ptr<Backend> NewHttpBackend() { return std::make_unique<HttpBackend>(); }

}  // namespace df
