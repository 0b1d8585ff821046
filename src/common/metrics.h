// Metrics and health over HTTP: Prometheus text format at /metrics and a health check at
// /healthz. Each binary owns one MetricsServer; components register their counters in the
// shared prometheus::Registry.
//
// The server is ours, not prometheus-cpp's Exposer (whose single civetweb worker could be held
// by one idle connection). It is one thread running an epoll loop over non-blocking sockets, and
// every resource a client can claim is bounded (see MetricsServerLimits), so a client that
// connects and sends nothing, sends slowly, sends garbage or never reads cannot keep a scraper
// out nor block the thread:
//   - at most `max_connections`; when full, a new connection closes the connection that has
//     gone longest without completing a request, preferring one that is idle (no partial
//     request, no pending reply), so held connections cannot lock out a scraper;
//   - a connection is closed `idle_timeout_ms` after its last complete request (or its accept),
//     and `head_timeout_ms` after the first byte of a request head that is still incomplete;
//   - a request head is at most kMaxHeadBytes; a larger one gets 431 and the connection closes;
//   - replies are buffered and written as the socket allows; the next pipelined request is not
//     parsed while a reply is pending, and a connection whose unsent reply bytes exceed
//     `max_output_bytes` is dropped.
//
// HTTP: HTTP/1.0 and HTTP/1.1, GET and HEAD, keep-alive and pipelining.
//   GET /metrics  200 "text/plain; version=0.0.4": the registry, plus a df_healthy gauge
//                 (1 while /healthz would answer 200, else 0)
//   GET /healthz  200 "ok\n" when healthy; 503 with the reason as a one-line body when not
//   GET <path>    200 with what the handler registered for <path> (SetHandler) returns
//   other path 404; other method 405; malformed request 400 (then close); request head over
//   kMaxHeadBytes 431 (then close); HTTP version other than 1.x 505 (then close). A request
//   that carries a body (Content-Length > 0, Transfer-Encoding) is answered, then the connection
//   closes, since its body is never read.
#pragma once

#include <prometheus/registry.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace df {

// Bounds on what clients of a MetricsServer can hold. The defaults suit production; tests
// shrink the timeouts.
struct MetricsServerLimits {
  int max_connections = 256;
  int idle_timeout_ms = 10'000;  // since the last complete request (or the accept)
  int head_timeout_ms = 5'000;   // since the first byte of a request head
  // After the last reply of a connection that closes, its unread input is drained this long
  // (the write side already shut) so that the client receives the reply instead of a reset.
  int linger_timeout_ms = 2'000;
  size_t max_output_bytes = 16 << 20;  // unsent reply bytes per connection
};

// Thread-safety: registry(), SetHealthy() and SetHealthCheck() may be called from any thread at
// any time. Start() is called once, by the owner, before port() is used elsewhere; the
// destructor must not race with any other call. The server thread only reads the registry and
// the health state; the registry outlives the server (both are owned here).
class MetricsServer {
 public:
  // Largest request head (request line and headers, including the blank line) accepted.
  static constexpr size_t kMaxHeadBytes = 8 << 10;

  explicit MetricsServer(MetricsServerLimits limits = MetricsServerLimits());
  // Stops the server thread (waking it through an eventfd), closes every connection and joins.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds exactly `address`, "IP:PORT" or "[IPv6]:PORT" (port 0 = any free port), and starts
  // serving on a thread of its own. Unavailable, with the address and the reason, when the
  // address is malformed, the port is taken or the socket cannot be set up; the server is then
  // not running and Start() may be retried. InvalidArgument when already started.
  Status Start(const std::string& address);

  // The bound port; 0 before a successful Start().
  int port() const { return port_; }

  prometheus::Registry& registry() { return *registry_; }

  // While false, /healthz answers 503 "not serving" (a daemon clears it while shutting down).
  void SetHealthy(bool healthy);
  // Installs a check run on every /healthz request (and /metrics scrape, for df_healthy), on
  // the server thread: it returns "" when healthy or a one-line reason (line breaks become
  // spaces; a throw reads as unhealthy). It must be cheap, thread-safe and must not block: every
  // client of the server waits for it. Replaces any earlier check; an empty function removes it.
  void SetHealthCheck(std::function<std::string()> check);

  // A reply body and its Content-Type, as a registered handler produces it.
  struct HttpBody {
    std::string content_type;  // e.g. "application/json"
    std::string body;
  };
  // Serves GET/HEAD `path` (exact match, query ignored) with what `handler` returns, 200, so a
  // component can expose its state (the scheduler's /api/v1/...) without this class knowing it.
  // The handler runs on the server thread for every request: like the health check it must be
  // thread-safe and must not block (no I/O); a throw becomes a 500. Replaces an earlier handler
  // of the path; an empty function removes it (once SetHandler returns, a removed handler is not
  // started again, though a call in progress may still finish). InvalidArgument for "/metrics",
  // "/healthz" or a path not starting with '/'.
  Status SetHandler(const std::string& path, std::function<HttpBody()> handler);

 private:
  class Loop;
  struct Reply;

  // Routes one request (called on the server thread).
  Reply Respond(const std::string& method, const std::string& path);
  Reply MetricsReply();
  Reply HealthReply();
  // "" when healthy, else the reason (one line, no newline).
  std::string Unhealthy();

  const MetricsServerLimits limits_;
  const std::shared_ptr<prometheus::Registry> registry_;
  std::mutex mu_;
  bool healthy_ = true;                                        // GUARDED_BY(mu_)
  std::shared_ptr<const std::function<std::string()>> check_;  // GUARDED_BY(mu_)
  std::map<std::string, std::shared_ptr<const std::function<HttpBody()>>>
      handlers_;  // GUARDED_BY(mu_)
  int port_ = 0;
  std::unique_ptr<Loop> loop_;  // null until Start() succeeds
};

}  // namespace df
