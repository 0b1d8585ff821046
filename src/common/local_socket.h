// The daemon's local socket as its clients see it (dfget, dfcache, `dfdaemon stop|status`):
// whether something answers there, whether it may be trusted, whether a daemon holds its lock.
// Plain POSIX, no gRPC. All functions are thread-safe.
#pragma once

#include <string>

namespace df {

// 0 when a process accepts connections on the unix socket `path` (nothing is sent), else the
// errno of the connect: ENOENT or ECONNREFUSED when no daemon serves it, EACCES when the
// socket's mode does not admit this user.
int LocalSocketConnectError(const std::string& path);

// Why a client must not talk to the socket at `path`; "" when nothing is there or it is a
// socket owned by this user or root. Clients send the origin's request headers (-H
// Authorization) over it, so a socket that another local user bound first would collect them.
// lstat: a symlink at the path is refused too. (In a directory that others may write and that
// is not sticky, the path could still be swapped after this check; /tmp is sticky.)
std::string UntrustedSocketReason(const std::string& path);

// Whether some process holds a flock on `path`, from /proc/locks ("1: FLOCK ADVISORY WRITE pid
// maj:min:inode 0 EOF") rather than by trying the lock, which would make a daemon starting at
// that instant fail. Only the inode is compared: overlay filesystems show other device numbers
// to stat(2) than in /proc/locks, and a false match only makes a client wait longer.
bool FlockHeld(const std::string& path);

// The message for EACCES on `sock`.
std::string PermissionDeniedMessage(const std::string& sock);

}  // namespace df
