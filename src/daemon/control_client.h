// `dfdaemon stop` and `dfdaemon status`: the client side of the local API's daemon calls,
// talking to the dfdaemon on a unix socket (never over TCP).
#pragma once

#include <string>

namespace df {

// Exit codes of the two commands.
constexpr int kControlOk = 0;
constexpr int kControlFailed = 1;
constexpr int kControlNotRunning = 3;  // no dfdaemon answers on the socket (or not trusted)

// Prints the daemon's status (pid, version, uptime, socket, data dir, log, ports, scheduler,
// tasks) on stdout, one "key: value" per line. kControlNotRunning with a line on stderr when no
// daemon answers at `sock`.
int RunStatusCommand(const std::string& sock);

// Asks the daemon at `sock` to shut down and waits (up to `timeout_ms`) until it has released
// its socket lock, i.e. exited. kControlOk when it stopped or none was running (said on
// stderr); kControlFailed when it is still there after the timeout.
int RunStopCommand(const std::string& sock, int timeout_ms);

}  // namespace df
