// dfget: downloads a URL through the local dfdaemon (starting one when none runs), with a
// progress bar on a TTY. The output appears atomically; a failed download leaves no file.
//
// Exit codes: 0 success, 1 download failed, 2 bad usage, 3 dfdaemon not reachable.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/digest.h"
#include "common/fd.h"
#include "common/piece.h"
#include "common/units.h"
#include "dfdaemon.grpc.pb.h"
#include "dfget/progress.h"

namespace dv1 = df::dfdaemon::v1;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoDaemon = 3;

int Fail(int code, const std::string& msg) {
  std::fprintf(stderr, "dfget: %s\n", msg.c_str());
  return code;
}

std::string SelfDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path().string();
}

// dfdaemon next to dfget (installed), in the build tree (../daemon), or on PATH.
std::string FindDaemonBinary() {
  std::string dir = SelfDir();
  for (const std::string& p : {dir + "/dfdaemon", dir + "/../daemon/dfdaemon"}) {
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "dfdaemon";
}

bool Connected(const std::shared_ptr<grpc::Channel>& ch, int timeout_ms) {
  return ch->WaitForConnected(std::chrono::system_clock::now() +
                              std::chrono::milliseconds(timeout_ms));
}

// 0 when a process accepts connections on the unix socket `path` (nothing is sent), else the
// errno of the connect: ENOENT or ECONNREFUSED when no daemon serves it, EACCES when the
// socket's mode does not admit this user.
int ConnectError(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  df::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ? 0
                                                                                         : errno;
}

std::string PermissionDenied(const std::string& sock) {
  return "permission denied on " + sock +
         ": the dfdaemon there does not admit your user (its sock_mode); use one of your own with "
         "--daemon-sock";
}

// Why dfget must not talk to the socket at `path`; "" when nothing is there or it is a socket
// owned by this user or root. dfget sends the origin's request headers (-H Authorization) over
// it, so a socket that another local user bound first would collect them. lstat: a symlink at
// the path is refused too. (In a directory that others may write and that is not sticky, the
// path could still be swapped after this check; /tmp is sticky.)
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

// Whether some process holds a flock on `path`, from /proc/locks ("1: FLOCK ADVISORY WRITE pid
// maj:min:inode 0 EOF") rather than by trying the lock, which would make a daemon starting at
// that instant fail. Only the inode is compared: overlay filesystems show other device numbers
// to stat(2) than in /proc/locks, and a false match only makes dfget wait for the socket longer.
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

struct AutoStart {
  std::string sock;
  std::string data_dir;
  std::string scheduler;
};

constexpr auto kDaemonStartTimeout = std::chrono::seconds(10);

// Waits until a dfdaemon answers on `a.sock`. `exited` reaches EOF when the daemon dfget
// spawned exits. If it exited because another dfdaemon holds its data dir or socket (several
// dfgets auto-started at once, and the daemons' locks let one win), dfget waits for that one's
// socket; otherwise the start failed and dfget says so at once.
bool WaitForDaemon(const AutoStart& a, int exited, const std::string& log, std::string* error) {
  const std::string data_dir_lock = a.data_dir + "/dfdaemon.lock";
  auto deadline = std::chrono::steady_clock::now() + kDaemonStartTimeout;
  bool spawned_running = true;
  while (std::chrono::steady_clock::now() < deadline) {
    int err = ConnectError(a.sock);
    if (err == 0) return true;
    if (err == EACCES) {
      *error = PermissionDenied(a.sock);
      return false;
    }
    pollfd p{spawned_running ? exited : -1, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;  // poll sleeps 50 ms even when it ignores the fd
    spawned_running = false;
    if (ConnectError(a.sock) == 0) return true;
    if (!FlockHeld(a.sock + ".lock") && !FlockHeld(data_dir_lock)) {
      *error = "the dfdaemon it started exited (see " + log + ")";
      return false;
    }
  }
  *error = "no dfdaemon answered within " + std::to_string(kDaemonStartTimeout.count()) + " s";
  if (FlockHeld(data_dir_lock) && !FlockHeld(a.sock + ".lock")) {
    *error += " (another dfdaemon holds " + data_dir_lock + " but serves another socket)";
  }
  *error += " (see " + log + ")";
  return false;
}

// Starts a detached dfdaemon serving `a.sock` and waits until a daemon answers there. Its log
// goes to <data_dir>/dfdaemon.log.
bool StartDaemon(const AutoStart& a, std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(a.data_dir, ec);
  std::string log = a.data_dir + "/dfdaemon.log";
  std::string bin = FindDaemonBinary();
  // The daemon holds the write end for its life: EOF on the read end says it exited.
  int exited[2];
  if (::pipe2(exited, O_CLOEXEC) != 0) {
    *error = "pipe failed";
    return false;
  }
  df::UniqueFd exited_read(exited[0]), exited_write(exited[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    *error = "fork failed";
    return false;
  }
  if (pid == 0) {
    ::setsid();
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) ::dup2(devnull, 0);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<std::string> args = {bin,        "--sock",         a.sock, "--data-dir",
                                     a.data_dir, "--grpc-port",    "0",    "--piece-port",
                                     "0",        "--metrics-port", "0"};
    if (!a.scheduler.empty()) {
      args.push_back("--scheduler");
      args.push_back(a.scheduler);
    }
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    // A grandchild keeps running after dfget exits; the intermediate child exits at once.
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      ::fcntl(exited_write.get(), F_SETFD, 0);  // kept across exec
      ::execvp(argv[0], argv.data());
      std::fprintf(stderr, "exec %s failed\n", argv[0]);
      ::_exit(127);
    }
    ::_exit(grandchild < 0 ? 1 : 0);
  }
  exited_write.Reset();
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WaitForDaemon(a, exited_read.get(), log, error)) return true;
  *error = "started " + bin + " but " + *error;
  return false;
}

std::string DefaultDataDir() {
  if (::geteuid() == 0) return "/var/lib/dfdaemon";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.dragonfly/data";
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"dfget: download a URL through the P2P network (via the local dfdaemon)."};
  std::string url, output, digest, tag, application, piece_length_text, timeout_text;
  std::string sock = "/tmp/dfdaemon.sock", data_dir = DefaultDataDir(), scheduler;
  std::vector<std::string> headers, filters;
  bool no_progress = false, disable_back_to_source = false;
  app.add_option("url", url, "URL to download (http://, https://, file://)")->required();
  app.add_option("-O,--output", output, "Output file (written atomically)")->required();
  app.add_option("--digest", digest,
                 "Expected digest, sha256:HEX; a mismatch fails and leaves no file");
  app.add_option("--tag", tag, "Tag: part of the task id (different tags = different tasks)");
  app.add_option("--application", application, "Application name: part of the task id");
  app.add_option("--piece-length", piece_length_text,
                 "Piece length override, e.g. 4MiB (power of two)");
  app.add_option("-H,--header", headers, "Request header 'Key: Value' for the origin (repeatable)");
  app.add_option("--filter", filters,
                 "Query parameter dropped from the task id (repeatable), e.g. a signature");
  app.add_flag("--no-progress", no_progress, "Do not draw a progress bar");
  app.add_option("--timeout", timeout_text,
                 "Give up after this long, e.g. 30s, 10m (default: none)");
  app.add_flag("--disable-back-to-source", disable_back_to_source,
               "Only download from peers, never the origin");
  app.add_option("--daemon-sock", sock, "Unix socket of the local dfdaemon")->capture_default_str();
  app.add_option("--data-dir", data_dir, "Data dir of a dfdaemon started by dfget")
      ->capture_default_str();
  app.add_option("--scheduler", scheduler, "Scheduler HOST:PORT for a dfdaemon started by dfget");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2
  }

  dv1::DownloadRequest req;
  req.set_url(url);
  std::error_code ec;
  req.set_output_path(std::filesystem::absolute(output, ec).lexically_normal().string());
  if (!digest.empty()) {
    auto d = df::ParseDigest(digest);
    if (!d.ok()) return Fail(kExitUsage, "--digest: " + d.status().message());
    req.set_digest("sha256:" + d->hex);
  }
  req.set_tag(tag);
  req.set_application(application);
  if (!piece_length_text.empty()) {
    auto pl = df::ParseSize(piece_length_text);
    if (!pl.ok()) return Fail(kExitUsage, "--piece-length: " + pl.status().message());
    if (!df::IsValidPieceLength(pl.value())) {
      return Fail(kExitUsage, "--piece-length must be a power of two between 64KiB and 1GiB");
    }
    req.set_piece_length(pl.value());
  }
  for (const auto& h : headers) {
    size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      return Fail(kExitUsage, "-H '" + h + "': expected 'Key: Value'");
    }
    std::string value = h.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    (*req.mutable_request_headers())[h.substr(0, colon)] = value;
  }
  for (const auto& f : filters) req.add_filtered_query_params(f);
  uint64_t timeout_ms = 0;
  if (!timeout_text.empty()) {
    auto t = df::ParseDurationMs(timeout_text);
    if (!t.ok()) return Fail(kExitUsage, "--timeout: " + t.status().message());
    timeout_ms = t.value();
    req.set_timeout_ms(timeout_ms);
  }
  req.set_disable_back_to_source(disable_back_to_source);

  std::string untrusted = UntrustedSocketReason(sock);
  if (!untrusted.empty()) return Fail(kExitNoDaemon, "refusing to use " + untrusted);
  int connect_error = ConnectError(sock);
  if (connect_error == EACCES) return Fail(kExitNoDaemon, PermissionDenied(sock));
  if (connect_error != 0) {
    std::string err;
    if (!StartDaemon({sock, data_dir, scheduler}, &err)) {
      return Fail(kExitNoDaemon, "dfdaemon not reachable at " + sock + ": " + err);
    }
    untrusted = UntrustedSocketReason(sock);  // whoever won the start
    if (!untrusted.empty()) return Fail(kExitNoDaemon, "refusing to use " + untrusted);
  }
  auto channel = grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials());
  if (!Connected(channel, 5000)) {
    return Fail(kExitNoDaemon, "dfdaemon at " + sock + " accepts connections but does not answer");
  }
  auto stub = dv1::DfdaemonDownload::NewStub(channel);
  grpc::ClientContext ctx;
  if (timeout_ms)
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(timeout_ms + 5000));
  auto reader = stub->Download(&ctx, req);
  df::ProgressBar bar(stderr);
  bool show = !no_progress;
  dv1::DownloadResponse resp, last;
  bool succeeded = false;
  while (reader->Read(&resp)) {
    last = resp;
    if (show) bar.Update(resp.content_length(), resp.completed_length());
    if (resp.state() == dv1::DOWNLOAD_STATE_SUCCEEDED) succeeded = true;
  }
  grpc::Status s = reader->Finish();
  if (show && succeeded) bar.Finish(last.content_length(), last.completed_length());
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return Fail(kExitNoDaemon, "dfdaemon at " + sock + " went away: " + s.error_message());
    }
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Fail(kExitFailed, "timed out after " + timeout_text);
    }
    return Fail(kExitFailed, s.error_message());
  }
  if (last.state() == dv1::DOWNLOAD_STATE_FAILED) {
    if (show) std::fputc('\n', stderr);
    return Fail(last.error_code() == dv1::ERROR_INVALID_ARGUMENT ? kExitUsage : kExitFailed,
                last.error_message());
  }
  if (!succeeded) return Fail(kExitFailed, "dfdaemon ended the download without a result");
  return 0;
}
