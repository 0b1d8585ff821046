#include "bench/harness.h"

#include <grpcpp/grpcpp.h>

#include "dfdaemon.grpc.pb.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "common/digest.h"

namespace df::bench {

Process Process::Start(const std::vector<std::string>& argv, const std::string& log_path) {
  Process p;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    // If the harness dies without running destructors (SIGKILL, a crash), its children go too.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (!log_path.empty()) {
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  p.pid_ = pid;
  return p;
}

Process::~Process() { Stop(); }

Process::Process(Process&& o) noexcept { *this = std::move(o); }

Process& Process::operator=(Process&& o) noexcept {
  if (this != &o) {
    Stop();
    pid_ = std::exchange(o.pid_, -1);
    status_ = o.status_;
    reaped_ = o.reaped_;
  }
  return *this;
}

bool Process::running() {
  if (pid_ <= 0 || reaped_) return false;
  int st;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return true;
}

void Process::Kill(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

int Process::Wait(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (running()) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (pid_ <= 0) return -1;
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

void Process::Stop() {
  if (pid_ <= 0) return;
  if (running()) {
    Kill(SIGTERM);
    if (Wait(5000) < 0) {
      Kill(SIGKILL);
      Wait(5000);
    }
  }
  pid_ = -1;
  reaped_ = false;
}

double ScrapeMetric(uint16_t port, const std::string& name) {
  std::string out;
  if (Run({"curl", "-s", "http://127.0.0.1:" + std::to_string(port) + "/metrics"}, &out, 10000) !=
      0) {
    return -1;
  }
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("\n" + name + " ([0-9.e+]+)"))) return -1;
  return std::stod(m[1]);
}

int Run(const std::vector<std::string>& argv, std::string* output, int timeout_ms) {
  TempDir dir;
  std::string log = dir.path() + "/out";
  Process p = Process::Start(argv, log);
  int rc = p.Wait(timeout_ms);
  if (rc < 0) {
    p.Kill(SIGKILL);
    p.Wait(5000);
  }
  if (output) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    *output = ss.str();
  }
  return rc;
}

namespace {

// The kernel's ephemeral range: ports it hands to outgoing connections and to bind(0).
std::pair<int, int> EphemeralRange() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int lo = 32768, hi = 60999;
  if (!(in >> lo >> hi) || lo < 1024 || hi < lo || hi > 65535) return {32768, 60999};
  return {lo, hi};
}

bool CanBind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);  // free on every address, not just loopback
  a.sin_port = htons(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

// A port from outside the ephemeral range, so that no outgoing connection of this or another
// test takes it between this call and the daemon's bind (the old bind(0) answer could be handed
// out again, to a connect() or to the next bind(0), before the daemon got it: a start that
// failed now and then). Never the same port twice in one process; the start is random per
// process, so tests running side by side rarely probe the same ports.
uint16_t FreePort() {
  static std::mutex mu;
  static std::set<uint16_t> given;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  std::lock_guard<std::mutex> lock(mu);
  auto [lo, hi] = EphemeralRange();
  // Below the range when there is room (the default: 10000..32767), else above it.
  int first = 10000, last = lo - 1;
  if (last - first < 4096) first = hi + 1, last = 65535;
  if (last - first < 4096) first = 1024, last = 65535;  // odd sysctl: take what binds
  const int span = last - first + 1;
  int start = static_cast<int>(rng() % static_cast<unsigned>(span));
  for (int i = 0; i < span; ++i) {
    auto port = static_cast<uint16_t>(first + (start + i) % span);
    if (given.count(port) || !CanBind(port)) continue;
    given.insert(port);
    return port;
  }
  std::fprintf(stderr, "FreePort: no free port in %d..%d\n", first, last);
  std::abort();
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/dftest-XXXXXX";
  path_ = ::mkdtemp(tmpl);
}

TempDir::~TempDir() {
  if (const char* keep = std::getenv("DF_KEEP_TEST_DIR"); keep && *keep && *keep != '0') {
    std::fprintf(stderr, "kept %s (DF_KEEP_TEST_DIR)\n", path_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string MakeFile(const std::string& path, uint64_t size, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> buf(1 << 17);  // 1 MiB
  Sha256 h;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  uint64_t left = size;
  while (left > 0) {
    for (auto& w : buf) w = rng();
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size() * 8));
    if (::write(fd, buf.data(), n) != static_cast<ssize_t>(n)) break;
    h.Update(buf.data(), n);
    left -= n;
  }
  ::close(fd);
  return h.FinalHex();
}

NginxOrigin::NginxOrigin(const std::string& root, const std::string& limit_rate) {
  port_ = FreePort();
  std::string conf = dir_.path() + "/nginx.conf";
  std::ofstream f(conf);
  f << "worker_processes 1;\n"
    << "pid " << dir_.path() << "/nginx.pid;\n"
    << "error_log " << dir_.path() << "/error.log;\n"
    << (::geteuid() == 0 ? "user root;\n" : "") << "events { worker_connections 1024; }\n"
    << "http {\n"
    << "  log_format bytes '$status $body_bytes_sent \"$http_x_test\"';\n"
    << "  access_log " << dir_.path()
    << "/access.log bytes;\n"
    // With sendfile, nginx's limit_rate lets a piece-sized range (1 MiB) through at once and
    // throttles only longer answers: a rate-limited origin reads with read()/write() instead.
    << (limit_rate.empty() ? "  sendfile on; tcp_nopush on;" : "  sendfile off;")
    << " keepalive_requests 100000;\n"
    << "  client_body_temp_path " << dir_.path() << "/body; proxy_temp_path " << dir_.path()
    << "/proxy;\n"
    << "  fastcgi_temp_path " << dir_.path() << "/fcgi; uwsgi_temp_path " << dir_.path()
    << "/uwsgi;\n"
    << "  scgi_temp_path " << dir_.path() << "/scgi;\n"
    << "  server { listen 127.0.0.1:" << port_ << "; root " << root << ";"
    << (limit_rate.empty() ? "" : " limit_rate " + limit_rate + ";") << " }\n"
    << "}\n";
  f.close();
  proc_ = Process::Start({"nginx", "-c", conf, "-p", dir_.path(), "-g", "daemon off;"},
                         dir_.path() + "/stderr.log");
  ok_ = WaitForTcp(port_, 5000);
}

NginxOrigin::~NginxOrigin() { proc_.Stop(); }

RedisServer::RedisServer() : port_(FreePort()) { ok_ = Start(); }

RedisServer::~RedisServer() { proc_.Stop(); }

bool RedisServer::Start() {
  proc_.Stop();
  std::vector<std::string> argv{
      "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
      "--save",       "",       "--appendonly",        "no",     "--dir",
      dir_.path()};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  proc_ = Process::Start(argv, dir_.path() + "/redis.log");
  ok_ = WaitForTcp(port_, 5000);
  return ok_;
}

std::string RedisServer::Url(int db) const {
  return "redis://127.0.0.1:" + std::to_string(port_) + "/" + std::to_string(db);
}

std::string NginxOrigin::Url(const std::string& name) const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/" + name;
}

uint64_t NginxOrigin::BytesServed() const {
  std::ifstream in(dir_.path() + "/access.log");
  uint64_t total = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int status = 0;
    uint64_t bytes = 0;
    if (fields >> status >> bytes) total += bytes;
  }
  return total;
}

std::vector<std::string> NginxOrigin::LoggedHeader() const {
  std::ifstream in(dir_.path() + "/access.log");
  std::vector<std::string> values;
  std::string line;
  while (std::getline(in, line)) {
    size_t open = line.find('"');
    size_t close = line.rfind('"');
    values.push_back(open < close ? line.substr(open + 1, close - open - 1) : "");
  }
  return values;
}

int NginxOrigin::Requests() const {
  std::ifstream in(dir_.path() + "/access.log");
  int n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

bool WaitForUnixSocket(const std::string& path, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  return false;
}

bool WaitForTcp(uint16_t port, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  return false;
}

std::string BuildDir() {
  const char* d = std::getenv("DF_BUILD_DIR");
  return d ? d : ".";
}

uint32_t DaemonFinishedPieces(const std::string& sock, const std::string& task_id) {
  namespace dv1 = df::dfdaemon::v1;
  auto stub = dv1::DfdaemonDownload::NewStub(
      grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  dv1::StatTaskRequest req;
  req.set_task_id(task_id);
  dv1::StatTaskResponse resp;
  return stub->StatTask(&ctx, req, &resp).ok() ? resp.finished_pieces() : 0;
}

std::vector<std::string> DaemonArgv(const std::string& bin_dir, const std::string& name,
                                    const std::string& work_dir, uint16_t scheduler_port,
                                    const std::string& announce_interval) {
  return {bin_dir + "/daemon/dfdaemon",
          "--hostname",
          name,
          "--ip",
          "127.0.0.1",
          "--sock",
          work_dir + "/" + name + ".sock",
          "--data-dir",
          work_dir + "/" + name,
          "--grpc-port",
          "0",
          "--piece-port",
          "0",
          "--metrics-port",
          "0",
          "--proxy-port",
          "0",
          "--scheduler",
          "127.0.0.1:" + std::to_string(scheduler_port),
          "--announce-interval",
          announce_interval};
}

std::vector<std::string> TestPki::Flags() const {
  return {"--tls-cert", cert_file, "--tls-key", key_file, "--tls-ca", ca_file};
}

TestPki MakeTestPki(const std::string& dir, const std::string& name) {
  TestPki pki;
  const std::string base = dir + "/" + name;
  pki.ca_file = base + "-ca.crt";
  pki.cert_file = base + ".crt";
  pki.key_file = base + ".key";
  const std::string ext_file = base + ".ext";
  {
    std::ofstream ext(ext_file);
    ext << "basicConstraints=CA:FALSE\n"
           "keyUsage=digitalSignature\n"
           "extendedKeyUsage=serverAuth,clientAuth\n"
           "subjectAltName=IP:127.0.0.1\n";
  }
  const std::vector<std::vector<std::string>> steps = {
      {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", base + "-ca.key", "-out", pki.ca_file, "-days", "1", "-subj",
       "/CN=" + name + "-ca"},
      {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", pki.key_file, "-out", base + ".csr", "-subj", "/CN=" + name},
      {"openssl", "x509", "-req", "-in", base + ".csr", "-CA", pki.ca_file, "-CAkey",
       base + "-ca.key", "-CAcreateserial", "-out", pki.cert_file, "-days", "1", "-extfile",
       ext_file},
  };
  for (const auto& argv : steps) {
    std::string out;
    if (Run(argv, &out, 30000) != 0) {
      pki.error = "openssl failed: " + out;
      return pki;
    }
  }
  ::chmod(pki.key_file.c_str(), 0600);
  return pki;
}

}  // namespace df::bench
