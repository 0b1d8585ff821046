#include "common/local_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/fd.h"

namespace df {

int LocalSocketConnectError(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ? 0
                                                                                         : errno;
}

std::string PermissionDeniedMessage(const std::string& sock) {
  return "permission denied on " + sock +
         ": the dfdaemon there does not admit your user (its sock_mode); use one of your own with "
         "--daemon-sock";
}

std::string UntrustedSocketReason(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return "";
  if (!S_ISSOCK(st.st_mode)) {
    return path + " is not a socket" + (S_ISLNK(st.st_mode) ? " but a symlink" : "") +
           "; pass the daemon's socket itself with --daemon-sock";
  }
  uid_t me = ::geteuid();
  if (st.st_uid != me && st.st_uid != 0) {
    return path + " is owned by uid " + std::to_string(st.st_uid) + ", not by you (uid " +
           std::to_string(me) + ") or root; it could be another user's impostor collecting " +
           "request headers";
  }
  return "";
}

bool FlockHeld(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  const std::string inode = ":" + std::to_string(st.st_ino);
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    if (line.find(" FLOCK ") == std::string::npos || line.find("->") != std::string::npos) {
      continue;  // not a flock, or a waiter rather than a holder
    }
    std::istringstream fields(line);
    std::string f;
    while (fields >> f) {
      if (std::count(f.begin(), f.end(), ':') == 2 && f.ends_with(inode)) return true;
    }
  }
  return false;
}

}  // namespace df
