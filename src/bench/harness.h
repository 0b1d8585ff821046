// Harness for benchmarks and end-to-end tests: real processes and a real HTTP origin (nginx).
// Everything started here is stopped by pid in destructors, so a failing test or an interrupted
// benchmark cleans up too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace df::bench {

// A child process. Move-only; the destructor sends SIGTERM, waits up to 5 s, then SIGKILLs.
class Process {
 public:
  Process() = default;
  // Starts argv[0] with `args`; stdout/stderr go to `log_path` (appended) when non-empty.
  static Process Start(const std::vector<std::string>& argv, const std::string& log_path = "");
  ~Process();
  Process(Process&& o) noexcept;
  Process& operator=(Process&& o) noexcept;

  pid_t pid() const { return pid_; }
  bool running();
  void Kill(int sig);                // sends `sig`, does not wait
  int Wait(int timeout_ms = 10000);  // exit code, or 128+signal, or -1 on timeout
  void Stop();                       // SIGTERM, wait, SIGKILL

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  bool reaped_ = false;
};

// Runs a command to completion; returns its exit code and fills `output` (stdout+stderr).
int Run(const std::vector<std::string>& argv, std::string* output, int timeout_ms = 600000);

// The value of an unlabelled metric scraped (with curl) from http://127.0.0.1:port/metrics;
// -1 when the scrape fails or the metric is absent.
double ScrapeMetric(uint16_t port, const std::string& name);

// A TCP port free on every address, outside the kernel's ephemeral range and never returned
// twice by one process (racy only against another test probing the same port at that moment).
uint16_t FreePort();

// A fresh temp directory removed (recursively) by the destructor; with DF_KEEP_TEST_DIR=1 in the
// environment it is kept (the logs of a failed test) and its path printed.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Writes `size` bytes of deterministic pseudo-random data to `path`; returns its sha256 hex.
std::string MakeFile(const std::string& path, uint64_t size, uint32_t seed = 1);

// nginx serving `root` on 127.0.0.1:port with sendfile and byte ranges. The access log records
// each response's body bytes so tests can count what the origin served.
class NginxOrigin {
 public:
  // `limit_rate` is nginx's per-connection rate limit ("20m" = 20 MB/s; empty = none).
  explicit NginxOrigin(const std::string& root, const std::string& limit_rate = "");
  ~NginxOrigin();
  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }
  std::string Url(const std::string& name) const;
  // Body bytes served so far (sum over the access log).
  uint64_t BytesServed() const;
  // Requests logged so far.
  int Requests() const;
  // The X-Test request header of each logged request, in order ("-" when absent), so that
  // tests can check what reached the origin.
  std::vector<std::string> LoggedHeader() const;

 private:
  TempDir dir_;
  uint16_t port_ = 0;
  Process proc_;
  bool ok_ = false;
};

// redis-server on 127.0.0.1 at a free port, without persistence (--save '' --appendonly no),
// in its own temp dir; stopped by pid in the destructor. Kill() and Start() again keep the port,
// so a client can be shown to reconnect to the same address.
class RedisServer {
 public:
  RedisServer();
  ~RedisServer();
  bool Start();  // starts it (again) on port(); true once it accepts connections
  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }
  std::string Url(int db = 0) const;  // redis://127.0.0.1:PORT/DB
  Process& process() { return proc_; }
  // Extra redis-server arguments for the next Start() (e.g. {"--requirepass", "x"}).
  void set_extra_args(std::vector<std::string> args) { extra_args_ = std::move(args); }

 private:
  TempDir dir_;
  uint16_t port_ = 0;
  std::vector<std::string> extra_args_;
  Process proc_;
  bool ok_ = false;
};

// Pieces of `task_id` the dfdaemon on unix socket `sock` holds (its StatTask); 0 when it does not
// answer within 2 s or does not know the task.
uint32_t DaemonFinishedPieces(const std::string& sock, const std::string& task_id);

// Waits until `path` exists (a socket) and a connect to it succeeds, up to timeout_ms.
bool WaitForUnixSocket(const std::string& path, int timeout_ms);
// Waits until 127.0.0.1:port accepts, up to timeout_ms.
bool WaitForTcp(uint16_t port, int timeout_ms);

// Directory of the built binaries (the CMake build tree), from DF_BUILD_DIR.
std::string BuildDir();

// The command line of a dfdaemon called `name` on 127.0.0.1 (any free ports), with its socket
// at WORK_DIR/NAME.sock and its data in WORK_DIR/NAME, announcing every `announce_interval` to
// the scheduler on 127.0.0.1:scheduler_port. `bin_dir` holds daemon/dfdaemon; append flags.
std::vector<std::string> DaemonArgv(const std::string& bin_dir, const std::string& name,
                                    const std::string& work_dir, uint16_t scheduler_port,
                                    const std::string& announce_interval = "500ms");

// A test PKI made with the openssl CLI (docs/security.md shows the same commands): a CA and one
// node certificate it signs, usable as server and client, with IP SAN 127.0.0.1 (every node of
// a loopback cluster) and CN `name`. ECDSA P-256, valid for a day, key mode 0600.
struct TestPki {
  std::string ca_file;    // DIR/NAME-ca.crt
  std::string cert_file;  // DIR/NAME.crt
  std::string key_file;   // DIR/NAME.key
  std::string error;      // openssl's output when it failed; empty on success
  bool ok() const { return error.empty(); }
  // --tls-cert FILE --tls-key FILE --tls-ca FILE
  std::vector<std::string> Flags() const;
};
// Two calls with different names give two unrelated CAs.
TestPki MakeTestPki(const std::string& dir, const std::string& name);

}  // namespace df::bench
