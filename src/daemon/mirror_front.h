// MirrorFront: the listener of the mirror port (proxy_ip:proxy_port), in front of the registry
// mirror's HTTP server (registry_mirror.h). cpp-httplib cannot hand a connection's socket to
// anyone, and a CONNECT tunnel needs exactly that, so the front owns the socket from accept to
// close and lends cpp-httplib a byte stream instead:
//
//   accept ── peek the first bytes ──┬─ "CONNECT " ── read the head (≤ kMaxConnectHeadBytes,
//                                    │                within kConnectHeadTimeout), then
//                                    │    400  bad or oversized head, no port, bad host
//                                    │    403  a host in neither list (no open TCP relay)
//                                    │    503  proxy_max_tunnels tunnels open already
//                                    │    intercepted: host in proxy_intercept_hosts: 200, then
//                                    │      TLS with an InterceptCa leaf for the host; the
//                                    │      requests inside go to the HTTP handler with upstream
//                                    │      https://host:port
//                                    │    tunnelled: host in proxy_connect_hosts: connect
//                                    │      (502 when that fails), 200, then bytes both ways
//                                    │      until both sides close or kTunnelIdleTimeout
//                                    └─ anything else ── the HTTP handler, on the plain socket
//                                                        (mirror requests, absolute-form
//                                                        proxy requests)
//
// Nothing is copied or buffered in between for HTTP: the handler reads the very socket (only a
// peek looked at it). A CONNECT must be a connection's first request; the HTTP server answers
// one that comes later with 400.
//
// Bounds: kMaxConnections connections at once. A connection takes one of the front's worker
// threads only once its first byte arrives; until then it waits in the acceptor's poll, is
// closed after 10 s of silence, and gives its place to a new connection when the limit is
// reached (so idle and half-open connections cannot keep real clients out). proxy_max_tunnels
// tunnels (plain or intercepted); every read and write has a timeout; every failure ends one
// connection, never the daemon.
//
// It includes cpp-httplib, whose compile definitions must match the library's: only df_daemon's
// registry_mirror.cc and mirror_front.cc, and tests linked with PkgConfig::HTTPLIB, include it.
//
// Threads: one accept thread and a pool of worker threads; Start and Stop from one thread.
#pragma once

#include <httplib.h>
#include <prometheus/registry.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "daemon/config.h"

namespace df {

inline constexpr size_t kMaxConnectHeadBytes = 8 << 10;
inline constexpr auto kConnectHeadTimeout = std::chrono::seconds(10);
inline constexpr auto kTunnelIdleTimeout = std::chrono::minutes(5);
inline constexpr auto kUpstreamConnectTimeout = std::chrono::seconds(10);
inline constexpr size_t kMaxConnections = 512;

// One connection's bytes as cpp-httplib reads and writes them (plain, or the TLS inside an
// intercepted tunnel), with the wait keep-alive needs. Reads and writes time out (-1).
class ConnectionStream : public httplib::Stream {
 public:
  // True when a byte can be read within `timeout_ms` (or is buffered); false on timeout,
  // error, or when the front is stopping.
  virtual bool WaitReadable(int timeout_ms) const = 0;
};

// Serves HTTP/1.1 requests on `stream` until the client closes, keep-alive ends or the mirror
// stops; returns then (the front closes the connection). `upstream` is "" for a connection to
// the mirror port, "https://host:port" for the inside of an intercepted tunnel (every request
// on it goes to that registry). Called on a front worker thread.
using HttpConnectionHandler =
    std::function<void(ConnectionStream& stream, const std::string& upstream)>;

// The target ("host:port", normalised by ParseHostPort) of a CONNECT request head: the request
// line and header lines, each ending in CRLF, up to and including the empty line.
// InvalidArgument naming the problem for anything else (another method, no port, a bad host,
// a header line without a colon, a version other than HTTP/1.x).
Result<std::string> ParseConnectHead(std::string_view head);

// Whether a tunnel to `host_port` is refused, tunnelled or intercepted; intercepted only with a
// CA (proxy_intercept_hosts needs one).
enum class ConnectPolicy { kRefused, kTunnel, kIntercept };
ConnectPolicy ConnectPolicyFor(const DaemonConfig& config, const std::string& host_port);

class MirrorFront {
 public:
  // Borrows `config` and `registry` (may be null: no metrics); both must outlive the front.
  MirrorFront(const DaemonConfig& config, HttpConnectionHandler http,
              prometheus::Registry* registry);
  ~MirrorFront();
  MirrorFront(const MirrorFront&) = delete;
  MirrorFront& operator=(const MirrorFront&) = delete;

  // Loads the interception CA (when proxy_ca_cert is set: its errors as InterceptCa::Load),
  // binds proxy_ip:proxy_port (Unavailable when it cannot) and starts accepting.
  Status Start();
  // Stops accepting, ends tunnels and idle keep-alive waits, and waits for every worker; a
  // handler still running must return on its own (the mirror cuts its streams first).
  // Idempotent.
  void Stop();
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace df
