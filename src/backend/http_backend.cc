// http(s):// origin through libcurl: ranged GETs on pooled easy handles (so connections are
// reused across pieces), redirects, TLS with the system CA store, custom headers.
//
// The origin is not trusted: every answer is checked before its body reaches the caller's sink
// (status, Content-Range against the range asked for), the sink never gets more than asked, and
// transfers stop as soon as they have what they need.
#include <curl/curl.h>
#include <strings.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "common/redact.h"

namespace df {
namespace {

// Per response: far above what real origins send, far below what would hurt the daemon.
constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr int kMaxHeaderLines = 256;

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

// State of one transfer, shared with curl's callbacks (which run on the calling thread).
struct Transfer {
  explicit Transfer(const std::string& u) : url(u) {}

  // Set by the caller.
  const std::string& url;
  const ByteSink* sink = nullptr;  // null: only the headers are wanted (Stat)
  uint64_t offset = 0;             // the bytes asked for (Read)
  int64_t length = -1;

  // Headers of the latest response; reset when another starts (after a redirect or a 1xx).
  bool accept_ranges = false;
  std::string content_range;
  int content_range_headers = 0;
  size_t header_bytes = 0;
  int header_lines = 0;
  std::string content_length;  // the value; "," joins repeated headers
  int content_length_headers = 0;

  // Progress and outcome.
  CURL* easy = nullptr;
  long code = 0;              // HTTP status, known once the body starts
  bool body_started = false;  // the answer was checked and let through to the sink
  uint64_t received = 0;      // bytes given to the sink
  Status stop;                // why a callback ended the transfer: a bad answer or the sink
  bool enough = false;        // a callback ended the transfer because it had all it wanted
};

// `v` without the optional whitespace (and line end) around it.
std::string_view TrimOws(std::string_view v) {
  size_t begin = v.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  return v.substr(begin, v.find_last_not_of(" \t\r\n") - begin + 1);
}

// Decimal digits only (no sign, no space), at most int64_t's maximum: sizes are int64_t here.
std::optional<uint64_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) return {};
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return {};
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return {};
  return v;
}

// Short enough to quote an origin's header in a one-line message.
std::string Quote(std::string_view v) {
  constexpr size_t kMax = 80;
  return "'" + std::string(v.substr(0, kMax)) + (v.size() > kMax ? "...'" : "'");
}

Status HttpError(const std::string& what) { return {StatusCode::kHttpError, what}; }

Status StatusFromHttp(long code, const std::string& url) {
  std::string what = "HTTP " + std::to_string(code) + " from " + RedactUrl(url);
  if (code == 404 || code == 410) return {StatusCode::kNotFound, what};
  if (code == 401 || code == 403) return {StatusCode::kPermissionDenied, what};
  // Busy or briefly broken: the same request may well succeed later. 501/505 will not.
  bool transient =
      code == 408 || code == 429 || (code >= 500 && code < 600 && code != 501 && code != 505);
  if (transient) return Unavailable(what);
  return HttpError(what);
}

// The one Content-Range of a 206, parsed; HttpError when missing, repeated or malformed.
Result<ContentRange> ContentRangeOf(const Transfer& t) {
  if (t.content_range_headers != 1) {
    return HttpError(RedactUrl(t.url) + ": 206 with " + std::to_string(t.content_range_headers) +
                     " Content-Range headers");
  }
  auto range = ParseContentRange(t.content_range);
  if (!range)
    return HttpError(RedactUrl(t.url) + ": malformed Content-Range " + Quote(t.content_range));
  return *range;
}

// The Content-Length of the final answer, -1 when absent; HttpError unless it is one decimal
// number (repeats of the same number, as one header list or several, are allowed by RFC 9110).
Result<int64_t> ContentLengthOf(const Transfer& t) {
  if (t.content_length_headers == 0) return int64_t{-1};
  std::string_view list = t.content_length;
  std::optional<uint64_t> value;
  while (true) {
    size_t comma = list.find(',');
    auto v = ParseDecimal(TrimOws(list.substr(0, comma)));
    if (!v || (value && *v != *value)) {
      return HttpError(RedactUrl(t.url) + ": malformed Content-Length " + Quote(t.content_length));
    }
    value = v;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return static_cast<int64_t>(*value);
}

// Whether the final answer to a Read carries exactly the bytes asked for.
Status CheckReadAnswer(const Transfer& t) {
  if (t.code < 200 || t.code >= 300) return StatusFromHttp(t.code, t.url);
  if (t.code == 200) {
    if (t.offset == 0) return Status::Ok();  // the object from its start; cut at t.length
    return HttpError(RedactUrl(t.url) +
                     ": origin ignored the Range header (200 to a read at offset " +
                     std::to_string(t.offset) + ")");
  }
  if (t.code != 206) return StatusFromHttp(t.code, t.url);
  auto range = ContentRangeOf(t);
  if (!range.ok()) return range.status();
  uint64_t want_last = range->total ? *range->total - 1 : range->last;
  if (t.length >= 0) want_last = t.offset + static_cast<uint64_t>(t.length) - 1;
  if (range->first != t.offset || range->last != want_last) {
    return HttpError(RedactUrl(t.url) + ": Content-Range " + Quote(t.content_range) +
                     " is not the requested bytes " + std::to_string(t.offset) + "-" +
                     std::to_string(want_last));
  }
  return Status::Ok();
}

size_t OnBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t n = size * nmemb;
  if (!t->sink) {  // Stat: the headers said all there is to learn; don't download the object
    t->enough = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  if (!t->body_started) {
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->code);
    t->stop = CheckReadAnswer(*t);
    if (!t->stop.ok()) return 0;
    t->body_started = true;
  }
  size_t take = n;
  if (t->length >= 0) {
    take =
        static_cast<size_t>(std::min<uint64_t>(n, static_cast<uint64_t>(t->length) - t->received));
  }
  if (take > 0) {
    t->stop = (*t->sink)(data, take);
    if (!t->stop.ok()) return 0;
    t->received += take;
  }
  if (take == n) return n;
  if (t->code == 206) {
    t->stop = HttpError(RedactUrl(t->url) + ": origin sent more than the requested " +
                        std::to_string(t->length) + " bytes");
  } else {
    t->enough = true;  // a 200 with the whole object: its first `length` bytes are the answer
  }
  return 0;
}

bool HeaderIs(std::string_view line, std::string_view name) {
  return line.size() > name.size() && strncasecmp(line.data(), name.data(), name.size()) == 0;
}

// A header's value: the line without the name, the whitespace around the value and the CRLF.
std::string_view HeaderValue(std::string_view line, std::string_view name) {
  return TrimOws(line.substr(name.size()));
}

size_t OnHeader(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  size_t n = size * nmemb;
  std::string_view line(data, n);
  if (HeaderIs(line, "HTTP/")) {  // a new response (after a redirect or a 1xx)
    t->accept_ranges = false;
    t->content_range.clear();
    t->content_range_headers = 0;
    t->content_length.clear();
    t->content_length_headers = 0;
    t->header_bytes = 0;
    t->header_lines = 0;
  }
  t->header_bytes += n;
  if (t->header_bytes > kMaxHeaderBytes || ++t->header_lines > kMaxHeaderLines) {
    t->stop = HttpError(RedactUrl(t->url) + ": response headers exceed " +
                        std::to_string(kMaxHeaderBytes) + " bytes or " +
                        std::to_string(kMaxHeaderLines) + " lines");
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  if (HeaderIs(line, "accept-ranges:")) {
    t->accept_ranges = HeaderValue(line, "accept-ranges:").find("bytes") != std::string::npos;
  } else if (HeaderIs(line, "content-range:")) {
    t->content_range = HeaderValue(line, "content-range:");
    ++t->content_range_headers;
  } else if (HeaderIs(line, "content-length:")) {
    if (t->content_length_headers++ > 0) t->content_length += ",";
    t->content_length += HeaderValue(line, "content-length:");
  }
  return n;
}

Status StatusFromCurl(CURLcode rc, const char* errbuf, const std::string& url, long code) {
  std::string detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  std::string what = RedactUrl(url) + ": " + detail;
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
      if (code >= 300 && code < 400) return HttpError(what + " (refused redirect)");
      return {StatusCode::kInvalidArgument, what};
    case CURLE_URL_MALFORMAT:
      return {StatusCode::kInvalidArgument, what};
    case CURLE_WEIRD_SERVER_REPLY:  // e.g. a Content-Length that is not a number
      return HttpError(what);
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
  explicit HttpBackend(std::string extra_ca_file) : extra_ca_file_(std::move(extra_ca_file)) {}

  Result<ObjectInfo> Stat(const BackendRequest& req) override {
    // HEAD first; origins that refuse HEAD (presigned URLs, some CDNs) get a one-byte GET.
    Transfer head(req.url);
    long code = 0;
    DF_RETURN_IF_ERROR(Perform(req, /*head=*/true, "", &head, &code));
    if (code >= 200 && code < 300) {
      auto length = ContentLengthOf(head);
      if (!length.ok()) return length.status();
      ObjectInfo info;
      info.content_length = *length;
      info.supports_range = head.accept_ranges;
      if (info.supports_range || info.content_length >= 0) return info;
    } else if (code == 404 || code == 410 || code == 401) {
      return StatusFromHttp(code, req.url);
    }
    return StatByRangedGet(req);
  }

  Status Read(const BackendRequest& req, uint64_t offset, int64_t length,
              const ByteSink& sink) override {
    if (length == 0) return Status::Ok();
    constexpr auto kMaxOffset = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (offset > kMaxOffset ||
        (length > 0 && static_cast<uint64_t>(length) > kMaxOffset - offset)) {
      return InvalidArgument(RedactUrl(req.url) + ": range out of bounds");
    }
    std::string range;
    if (offset > 0 || length > 0) {
      range = std::to_string(offset) + "-";
      if (length > 0) range += std::to_string(offset + static_cast<uint64_t>(length) - 1);
    }
    Transfer t(req.url);
    t.sink = &sink;
    t.offset = offset;
    t.length = length;
    DF_RETURN_IF_ERROR(Perform(req, /*head=*/false, range, &t, &t.code));
    if (!t.body_started) DF_RETURN_IF_ERROR(CheckReadAnswer(t));  // an empty body
    if (length >= 0 && t.received != static_cast<uint64_t>(length)) {
      return DataLoss(RedactUrl(req.url) + ": got " + std::to_string(t.received) + " of " +
                      std::to_string(length) + " bytes");
    }
    return Status::Ok();
  }

 private:
  // Stat for an origin whose HEAD said nothing useful: GET bytes 0-0 and read only the headers.
  Result<ObjectInfo> StatByRangedGet(const BackendRequest& req) {
    Transfer get(req.url);
    long code = 0;
    DF_RETURN_IF_ERROR(Perform(req, /*head=*/false, "0-0", &get, &code));
    ObjectInfo info;
    if (code == 206) {
      auto range = ContentRangeOf(get);
      if (!range.ok()) return range.status();
      info.supports_range = true;
      if (range->total) info.content_length = static_cast<int64_t>(*range->total);
      return info;
    }
    if (code != 200) return StatusFromHttp(code, req.url);
    auto length = ContentLengthOf(get);  // the whole object came: no range support
    if (!length.ok()) return length.status();
    info.content_length = *length;
    return info;
  }

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

  // Runs one request. OK when curl completed it or a callback ended it on purpose (t->enough);
  // otherwise the callback's reason (t->stop) or curl's error. *code is the last HTTP status.
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
    // CAINFO replaces the compiled-in bundle file; the compiled-in CA directory (the system's
    // store, hashed) stays, so the system's CAs are trusted too.
    if (!extra_ca_file_.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, extra_ca_file_.c_str());
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
    Status s = Status::Ok();
    if (!t->stop.ok()) {
      s = t->stop;
    } else if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && t->enough)) {
      s = StatusFromCurl(rc, errbuf, req.url, *code);
    }
    Give(std::move(h));
    return s;
  }

  const std::string extra_ca_file_;
  CurlGlobal global_;
  std::mutex mu_;
  std::vector<EasyHandle> pool_;  // GUARDED_BY(mu_)
};

}  // namespace

std::optional<ContentRange> ParseContentRange(std::string_view value) {
  constexpr std::string_view kUnit = "bytes ";
  if (value.size() < kUnit.size() || strncasecmp(value.data(), "bytes", 5) != 0 ||
      value[5] != ' ') {
    return {};
  }
  value.remove_prefix(kUnit.size());
  size_t dash = value.find('-');
  size_t slash = value.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || dash > slash) return {};
  auto first = ParseDecimal(value.substr(0, dash));
  auto last = ParseDecimal(value.substr(dash + 1, slash - dash - 1));
  if (!first || !last || *first > *last) return {};
  ContentRange range{*first, *last, std::nullopt};
  std::string_view total = value.substr(slash + 1);
  if (total == "*") return range;
  range.total = ParseDecimal(total);
  if (!range.total || *last >= *range.total) return {};
  return range;
}

std::unique_ptr<Backend> NewHttpBackend(const std::string& extra_ca_file) {
  return std::make_unique<HttpBackend>(extra_ca_file);
}

}  // namespace df
