// Small TCP helpers for the data plane: listen, connect with a timeout, socket options.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/status.h"

namespace df {

// Listens on ip:port (port 0 = any free port) with SO_REUSEADDR. `bound_port` gets the port.
Result<UniqueFd> ListenTcp(const std::string& ip, uint16_t port, uint16_t* bound_port);

// Connects to ip:port within `timeout_ms`; the returned socket is blocking with TCP_NODELAY.
Result<UniqueFd> ConnectTcp(const std::string& ip, uint16_t port, int timeout_ms);

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

}  // namespace df
