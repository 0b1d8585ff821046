// dfget: downloads a URL through the local dfdaemon (starting one when none runs), with a
// progress bar on a TTY. A file output appears atomically (a failed download leaves no file);
// `-O -`, a fifo or a character device gets the bytes streamed in order as pieces arrive
// (dfget/output.h).
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
#include "common/local_socket.h"
#include "common/piece.h"
#include "common/units.h"
#include "common/version.h"
#include "dfdaemon.grpc.pb.h"
#include "dfget/output.h"
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

struct AutoStart {
  std::string sock;
  std::string data_dir;
  std::string scheduler;
  uint16_t metrics_port = 0;  // 0: no metrics server
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
    int err = df::LocalSocketConnectError(a.sock);
    if (err == 0) return true;
    if (err == EACCES) {
      *error = df::PermissionDeniedMessage(a.sock);
      return false;
    }
    pollfd p{spawned_running ? exited : -1, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;  // poll sleeps 50 ms even when it ignores the fd
    spawned_running = false;
    if (df::LocalSocketConnectError(a.sock) == 0) return true;
    if (!df::FlockHeld(a.sock + ".lock") && !df::FlockHeld(data_dir_lock)) {
      *error = "the dfdaemon it started exited (see " + log + ")";
      return false;
    }
  }
  *error = "no dfdaemon answered within " + std::to_string(kDaemonStartTimeout.count()) + " s";
  if (df::FlockHeld(data_dir_lock) && !df::FlockHeld(a.sock + ".lock")) {
    *error += " (another dfdaemon holds " + data_dir_lock + " but serves another socket)";
  }
  *error += " (see " + log + ")";
  return false;
}

// Starts a detached dfdaemon serving `a.sock` and waits until a daemon answers there. Its log
// goes to <data_dir>/dfdaemon.log. `spawned` is the pid of the daemon started here, which is
// not the one that answers when several dfgets raced (the others' daemons lose the lock).
bool StartDaemon(const AutoStart& a, std::string* error, pid_t* spawned) {
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
  int pid_pipe[2];  // the intermediate child sends the daemon's pid through it
  if (::pipe2(pid_pipe, O_CLOEXEC) != 0) {
    *error = "pipe failed";
    return false;
  }
  df::UniqueFd pid_read(pid_pipe[0]), pid_write(pid_pipe[1]);
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
    // Free ports, so that several users' daemons on one host never clash; metrics only on the
    // port asked for (a fixed port would make a second user's daemon fail to start).
    std::vector<std::string> args = {bin,
                                     "--sock",
                                     a.sock,
                                     "--data-dir",
                                     a.data_dir,
                                     "--grpc-port",
                                     "0",
                                     "--piece-port",
                                     "0",
                                     "--metrics-port",
                                     std::to_string(a.metrics_port),
                                     "--proxy-port",
                                     "0"};  // a user's daemon mirrors nothing
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
    if (grandchild > 0) (void)!::write(pid_write.get(), &grandchild, sizeof grandchild);
    ::_exit(grandchild < 0 ? 1 : 0);
  }
  exited_write.Reset();
  pid_write.Reset();
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (::read(pid_read.get(), spawned, sizeof *spawned) != sizeof *spawned) *spawned = -1;
  if (WaitForDaemon(a, exited_read.get(), log, error)) return true;
  *error = "started " + bin + " but " + *error;
  return false;
}

std::string DefaultDataDir() {
  if (::geteuid() == 0) return "/var/lib/dfdaemon";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/tmp") + "/.dragonfly/data";
}

// Tells the user, on stderr, that dfget left a daemon running behind it and how to stop it.
void AnnounceStartedDaemon(const AutoStart& a, pid_t pid) {
  std::fprintf(stderr,
               "dfget: started a dfdaemon in the background (pid %d, socket %s, data %s, log "
               "%s/dfdaemon.log); it keeps serving the cache: stop it with "
               "'dfdaemon stop --sock %s'\n",
               static_cast<int>(pid), a.sock.c_str(), a.data_dir.c_str(), a.data_dir.c_str(),
               a.sock.c_str());
}

struct Options {
  std::string url, output, digest, tag, application, piece_length_text, timeout_text;
  std::string sock = "/tmp/dfdaemon.sock", data_dir = DefaultDataDir(), scheduler;
  uint16_t daemon_metrics_port = 0;
  std::vector<std::string> headers, filters;
  bool no_progress = false, disable_back_to_source = false;
  uint64_t timeout_ms = 0;
};

// Fills `req` from the flags (not the output). Usage errors as InvalidArgument.
df::Status BuildRequest(Options& o, dv1::DownloadRequest* req) {
  req->set_url(o.url);
  if (!o.digest.empty()) {
    auto d = df::ParseDigest(o.digest);
    if (!d.ok()) return df::InvalidArgument("--digest: " + d.status().message());
    req->set_digest("sha256:" + d->hex);
  }
  req->set_tag(o.tag);
  req->set_application(o.application);
  if (!o.piece_length_text.empty()) {
    auto pl = df::ParseSize(o.piece_length_text);
    if (!pl.ok()) return df::InvalidArgument("--piece-length: " + pl.status().message());
    if (!df::IsValidPieceLength(pl.value())) {
      return df::InvalidArgument("--piece-length must be a power of two between 64KiB and 1GiB");
    }
    req->set_piece_length(pl.value());
  }
  for (const auto& h : o.headers) {
    size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0) {
      return df::InvalidArgument("-H '" + h + "': expected 'Key: Value'");
    }
    std::string value = h.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    (*req->mutable_request_headers())[h.substr(0, colon)] = value;
  }
  for (const auto& f : o.filters) req->add_filtered_query_params(f);
  if (!o.timeout_text.empty()) {
    auto t = df::ParseDurationMs(o.timeout_text);
    if (!t.ok()) return df::InvalidArgument("--timeout: " + t.status().message());
    o.timeout_ms = t.value();
    req->set_timeout_ms(o.timeout_ms);
  }
  req->set_disable_back_to_source(o.disable_back_to_source);
  return df::Status::Ok();
}

// A channel to a trusted dfdaemon on `o.sock`, started when none answers. Exit code on failure.
int ConnectDaemon(const Options& o, std::shared_ptr<grpc::Channel>* channel) {
  std::string untrusted = df::UntrustedSocketReason(o.sock);
  if (!untrusted.empty()) return Fail(kExitNoDaemon, "refusing to use " + untrusted);
  int connect_error = df::LocalSocketConnectError(o.sock);
  if (connect_error == EACCES) return Fail(kExitNoDaemon, df::PermissionDeniedMessage(o.sock));
  pid_t started = -1;  // the daemon this dfget started, if it did
  if (connect_error != 0) {
    std::string err;
    pid_t spawned = -1;
    AutoStart a{o.sock, o.data_dir, o.scheduler, o.daemon_metrics_port};
    if (!StartDaemon(a, &err, &spawned)) {
      return Fail(kExitNoDaemon, "dfdaemon not reachable at " + o.sock + ": " + err);
    }
    untrusted = df::UntrustedSocketReason(o.sock);  // whoever won the start
    if (!untrusted.empty()) return Fail(kExitNoDaemon, "refusing to use " + untrusted);
    started = spawned;
  }
  *channel = grpc::CreateChannel("unix:" + o.sock, grpc::InsecureChannelCredentials());
  if (!Connected(*channel, 5000)) {
    return Fail(kExitNoDaemon,
                "dfdaemon at " + o.sock + " accepts connections but does not answer");
  }
  if (started > 0) {
    // Several dfgets may have raced to start one: only the one whose daemon answers says so.
    auto stub = dv1::DfdaemonDownload::NewStub(*channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    dv1::DaemonStatus st;
    if (stub->GetDaemonStatus(&ctx, dv1::GetDaemonStatusRequest(), &st).ok() &&
        st.pid() == static_cast<uint32_t>(started)) {
      AnnounceStartedDaemon({o.sock, o.data_dir, o.scheduler}, started);
    }
  }
  return 0;
}

// Follows the Download stream: streams the content to `target` when it is a stream, draws the
// bar, and returns the exit code (with the error line printed).
int FollowDownload(const Options& o, dv1::DfdaemonDownload::Stub* stub,
                   const dv1::DownloadRequest& req, df::OutputTarget& target) {
  grpc::ClientContext ctx;
  if (o.timeout_ms) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(o.timeout_ms + 5000));
  }
  const auto start = std::chrono::steady_clock::now();
  auto reader = stub->Download(&ctx, req);
  const bool streaming = target.kind == df::OutputTarget::kStream;
  // Bytes streamed to a terminal would be torn by a bar redrawn in the middle of them.
  df::ProgressBar bar(stderr, !o.no_progress && !(streaming && ::isatty(target.fd)));
  df::ContentStreamer streamer(target.fd);
  dv1::DownloadResponse resp, last;
  bool succeeded = false;
  df::Status stream_error;
  while (reader->Read(&resp)) {
    last = resp;
    if (streaming && stream_error.ok() && !resp.content_path().empty()) {
      stream_error = streamer.Open(resp.content_path());
      if (stream_error.ok()) stream_error = streamer.CopyUpTo(resp.ready_length());
      if (!stream_error.ok()) ctx.TryCancel();  // the daemon's task goes on for others
    }
    uint64_t done = resp.completed_length() + resp.receiving_length();
    if (resp.content_length() >= 0) done = std::min<uint64_t>(done, resp.content_length());
    bar.Update(resp.content_length(), done);
    if (resp.state() == dv1::DOWNLOAD_STATE_SUCCEEDED) succeeded = true;
  }
  grpc::Status s = reader->Finish();
  if (!stream_error.ok()) {
    bar.Clear();
    return Fail(kExitFailed, target.path + ": " + stream_error.message());
  }
  if (!s.ok()) {
    bar.Clear();
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return Fail(kExitNoDaemon, "dfdaemon at " + o.sock + " went away: " + s.error_message());
    }
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return Fail(kExitFailed, "timed out after " + o.timeout_text);
    }
    return Fail(kExitFailed, s.error_message());
  }
  if (last.state() == dv1::DOWNLOAD_STATE_FAILED) {
    bar.Clear();
    return Fail(last.error_code() == dv1::ERROR_INVALID_ARGUMENT ? kExitUsage : kExitFailed,
                last.error_message());
  }
  if (!succeeded) {
    bar.Clear();
    return Fail(kExitFailed, "dfdaemon ended the download without a result");
  }
  if (streaming) {
    // The digest (if any) was checked by the daemon before SUCCEEDED; copy what is left.
    uint64_t size = last.content_length() > 0 ? static_cast<uint64_t>(last.content_length()) : 0;
    df::Status c = streamer.Open(last.content_path());
    if (c.ok()) c = streamer.CopyUpTo(size);
    if (!c.ok()) {
      bar.Clear();
      return Fail(kExitFailed, target.path + ": " + c.message());
    }
  }
  bar.Finish({static_cast<uint64_t>(std::max<int64_t>(0, last.content_length())),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
              last.bytes_from_peers(), last.bytes_from_origin()});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"dfget: download a URL through the P2P network (via the local dfdaemon)."};
  app.set_version_flag("--version", df::VersionLine("dfget"));
  Options o;
  app.add_option("url", o.url, "URL to download (http://, https://, file://)")->required();
  app.add_option("-O,--output", o.output,
                 "Output file (written atomically), or '-' for stdout; a fifo or character "
                 "device gets the bytes streamed in order")
      ->required();
  app.add_option("--digest", o.digest,
                 "Expected digest, sha256:HEX; a mismatch fails and leaves no file");
  app.add_option("--tag", o.tag, "Tag: part of the task id (different tags = different tasks)");
  app.add_option("--application", o.application, "Application name: part of the task id");
  app.add_option("--piece-length", o.piece_length_text,
                 "Piece length override, e.g. 4MiB (power of two)");
  app.add_option("-H,--header", o.headers,
                 "Request header 'Key: Value' for the origin (repeatable)");
  app.add_option("--filter", o.filters,
                 "Query parameter dropped from the task id (repeatable), e.g. a signature");
  app.add_flag("--no-progress", o.no_progress, "Do not draw a progress bar");
  app.add_option("--timeout", o.timeout_text,
                 "Give up after this long, e.g. 30s, 10m (default: none)");
  app.add_flag("--disable-back-to-source", o.disable_back_to_source,
               "Only download from peers, never the origin");
  app.add_option("--daemon-sock", o.sock, "Unix socket of the local dfdaemon")
      ->capture_default_str();
  app.add_option("--data-dir", o.data_dir, "Data dir of a dfdaemon started by dfget")
      ->capture_default_str();
  app.add_option("--scheduler", o.scheduler, "Scheduler HOST:PORT for a dfdaemon started by dfget");
  app.add_option("--daemon-metrics-port", o.daemon_metrics_port,
                 "Port of /metrics and /healthz for a dfdaemon started by dfget (0 = off)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2
  }

  dv1::DownloadRequest req;
  if (df::Status s = BuildRequest(o, &req); !s.ok()) return Fail(kExitUsage, s.message());
  auto target = df::ResolveOutput(o.output);
  if (!target.ok()) {
    return Fail(
        target.status().code() == df::StatusCode::kInvalidArgument ? kExitUsage : kExitFailed,
        target.status().message());
  }
  if (target->kind == df::OutputTarget::kStream) {
    req.set_keep_output_in_cache_only(true);  // dfget writes the stream itself
  } else {
    req.set_output_path(target->path);
  }
  std::shared_ptr<grpc::Channel> channel;
  if (int rc = ConnectDaemon(o, &channel); rc != 0) return rc;
  auto stub = dv1::DfdaemonDownload::NewStub(channel);
  return FollowDownload(o, stub.get(), req, target.value());
}
