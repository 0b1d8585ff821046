// Small TCP helpers for the data plane: listen, connect with a timeout, socket options.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace df {

// True when `ip` is an IPv4 literal (what ListenTcp and ConnectTcp take); names are not.
bool IsIpv4Literal(const std::string& ip);

// Listens on ip:port (port 0 = any free port) with SO_REUSEADDR. `bound_port` gets the port.
Result<UniqueFd> ListenTcp(const std::string& ip, uint16_t port, uint16_t* bound_port);

// Connects to ip:port within `timeout_ms`; the returned socket is blocking with TCP_NODELAY.
Result<UniqueFd> ConnectTcp(const std::string& ip, uint16_t port, int timeout_ms);

// How MeasureTcpRtt measures: `handshakes` connects, `spacing_ms` apart, each given `timeout_ms`.
struct TcpRttOptions {
  int handshakes = 3;
  int timeout_ms = 2000;
  int spacing_ms = 5;
  // When >= 0, an fd (eventfd, pipe) that becomes readable to abandon the measurement at once:
  // the owner's shutdown. Never read here.
  int cancel_fd = -1;
};

// Round-trip time to ip:port without privileges: the TCP handshake time, from a non-blocking
// connect(2) until the socket is writable with SO_ERROR 0 (SYN out, SYN-ACK back: one RTT plus
// the target kernel's SYN handling, nothing of the target's application). Each socket is
// closed (normally) as soon as it connected. The minimum over the handshakes filters queueing
// noise. `ip` must be an IPv4 or IPv6 literal: no name is ever resolved.
//
// Stops at the first handshake that fails. Returns the minimum over the handshakes that
// succeeded (> 0) when at least one did. Otherwise: InvalidArgument for an `ip` that is not a
// literal or port 0; DeadlineExceeded when the handshake did not complete within timeout_ms;
// Unavailable with the reason (refused, unreachable) when it failed; Cancelled when cancel_fd
// became readable. Blocks the calling thread at most handshakes x (timeout_ms + spacing_ms).
// Thread-safe.
Result<std::chrono::nanoseconds> MeasureTcpRtt(const std::string& ip, uint16_t port,
                                               const TcpRttOptions& options);

// Sets SO_RCVTIMEO and SO_SNDTIMEO (0 = none).
void SetSocketTimeouts(int fd, int timeout_ms);

// Selects the congestion control of one socket ("cubic", "bbr"); ignored when unavailable.
void SetCongestionControl(int fd, const std::string& name);

// Reads or writes exactly n bytes; Unavailable on EOF/reset, DeadlineExceeded on timeout.
Status ReadFull(int fd, void* buf, size_t n);
Status WriteFull(int fd, const void* buf, size_t n);

// First non-loopback IPv4 address of this host, or 127.0.0.1.
std::string DefaultIp();

// The numeric addresses of `host` (a name or an IP literal), deduplicated; empty when it does not
// resolve. "HOST:PORT" is accepted and the port ignored ("[v6]:PORT" too).
std::vector<std::string> ResolveHostIps(const std::string& host_port);

// Splits a scheduler list "a:1,b:2" (dfdaemon --scheduler, dfctl --scheduler) into addresses;
// InvalidArgument for an empty list, an empty entry, an entry without a port, or a duplicate.
Result<std::vector<std::string>> ParseSchedulerAddresses(const std::string& list);

// Rendezvous (highest random weight) hashing: the score of scheduler `address` for task `key`;
// a task belongs to the (healthy) scheduler with the highest score. Stable across processes and
// machines, so every daemon, and dfctl, computes the same owner.
uint64_t RendezvousScore(const std::string& address, const std::string& key);

}  // namespace df
