// Shared by the OCI end-to-end tests (oci_mirror_test, oci_preheat_test): Debian's
// docker-registry on a free port, a test image of random tar.gz layers pushed with skopeo, and
// dfdaemons with their registry mirror on free ports. Test-only code: each test binary includes it
// once.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <sstream>
#include <thread>

#include "bench/harness.h"
#include "common/digest.h"
#include "common/piece.h"

namespace df {
namespace {

using bench::Process;
using bench::TempDir;

constexpr const char* kRegistryBin = "/usr/bin/docker-registry";
constexpr const char* kSkopeoBin = "/usr/bin/skopeo";
constexpr uint64_t kKiB = 1024;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string Bin(const std::string& rel) { return bench::BuildDir() + "/src/" + rel; }

// docker-registry serving filesystem storage under `dir` on a free loopback port; its access log
// (Apache combined format, on stdout) says what reached it.
class DockerRegistry {
 public:
  // `htpasswd`: a bcrypt htpasswd file; the registry then wants basic auth for everything.
  // `auth_yaml`: an `auth:` section of the registry's configuration instead (token auth).
  // `tls_cert`, `tls_key`: PEM files; the registry then speaks HTTPS only.
  explicit DockerRegistry(const std::string& dir, const std::string& htpasswd = "",
                          const std::string& auth_yaml = "", const std::string& tls_cert = "",
                          const std::string& tls_key = "")
      : dir_(dir), port_(bench::FreePort()) {
    std::filesystem::create_directories(dir);
    std::string config =
        "version: 0.1\nlog:\n  level: info\n  formatter: text\n"
        "  accesslog:\n    disabled: false\n"
        "storage:\n  filesystem:\n    rootdirectory: " +
        dir + "/storage\n" + "http:\n  addr: 127.0.0.1:" + std::to_string(port_) +
        "\n  secret: oci-mirror-test\n";
    if (!tls_cert.empty()) {
      config += "  tls:\n    certificate: " + tls_cert + "\n    key: " + tls_key + "\n";
    }
    if (!htpasswd.empty()) {
      config += "auth:\n  htpasswd:\n    realm: test-realm\n    path: " + htpasswd + "\n";
    }
    config += auth_yaml;
    WriteFile(dir + "/config.yml", config);
    proc_ = Process::Start({kRegistryBin, "serve", dir + "/config.yml"}, dir + "/registry.log");
    ok_ = bench::WaitForTcp(port_, 10000);
  }
  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }
  std::string Host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Url() const { return "http://" + Host(); }
  // GET requests for the blob `digest` that reached the registry.
  int BlobGets(const std::string& digest) const {
    std::istringstream log(ReadFile(dir_ + "/registry.log"));
    int n = 0;
    for (std::string line; std::getline(log, line);) {
      if (line.find("\"GET /v2/") != std::string::npos &&
          line.find("/blobs/" + digest + " ") != std::string::npos) {
        ++n;
      }
    }
    return n;
  }
  // Bytes the registry sent in answers to GET requests for the blob `digest` (the size field
  // of the access log's combined format): every ranged GET of every piece counted.
  uint64_t BlobBytesServed(const std::string& digest) const {
    std::istringstream log(ReadFile(dir_ + "/registry.log"));
    uint64_t bytes = 0;
    for (std::string line; std::getline(log, line);) {
      const size_t request = line.find("\"GET /v2/");
      if (request == std::string::npos ||
          line.find("/blobs/" + digest + " ") == std::string::npos) {
        continue;
      }
      std::istringstream rest(line.substr(line.find('"', request + 1) + 1));
      int status = 0;
      uint64_t size = 0;
      if (rest >> status >> size) bytes += size;
    }
    return bytes;
  }
  // GET requests whose path contains `fragment` (followed by a space: the end of the path).
  int Gets(const std::string& fragment) const {
    std::istringstream log(ReadFile(dir_ + "/registry.log"));
    int n = 0;
    for (std::string line; std::getline(log, line);) {
      if (line.find("\"GET /v2/") != std::string::npos &&
          line.find(fragment + " ") != std::string::npos) {
        ++n;
      }
    }
    return n;
  }
  // Where the registry keeps the blob's bytes.
  std::string BlobDataPath(const std::string& digest) const {
    const std::string hex = digest.substr(7);
    return dir_ + "/storage/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex +
           "/data";
  }

 private:
  std::string dir_;
  uint16_t port_;
  Process proc_;
  bool ok_ = false;
};

constexpr const char* kUser = "alice";
constexpr const char* kPassword = "s3cret";

std::string Base64(const std::string& in, bool url) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  if (url) {
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (char& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  }
  return out;
}

// A registry token service (docker's token auth) for one user: it answers a GET with the right
// Basic credentials with a JWT (RS256, its certificate in x5c) granting every scope asked for;
// anything else gets 401. The registry trusts the certificate (`rootcertbundle`).
class TokenRealm {
 public:
  explicit TokenRealm(const std::string& dir) : dir_(dir), port_(bench::FreePort()) {
    ok_ = bench::Run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                      dir + "/token.key", "-out", dir + "/token.crt", "-days", "1", "-subj",
                      "/CN=test-token-issuer"},
                     nullptr) == 0 &&
          bench::Run({"openssl", "x509", "-in", dir + "/token.crt", "-outform", "DER", "-out",
                      dir + "/token.der"},
                     nullptr) == 0;
    x5c_ = Base64(ReadFile(dir + "/token.der"), false);
    server_.Get("/token",
                [this](const httplib::Request& req, httplib::Response& res) { Issue(req, res); });
    thread_ = std::thread([this] { server_.listen("127.0.0.1", port_); });
    ok_ = ok_ && bench::WaitForTcp(port_, 5000);
  }
  ~TokenRealm() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  bool ok() const { return ok_; }
  int tokens_issued() const { return issued_; }
  std::string RegistryAuthYaml() const {
    return "auth:\n  token:\n    realm: http://127.0.0.1:" + std::to_string(port_) +
           "/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: " +
           dir_ + "/token.crt\n";
  }

 private:
  void Issue(const httplib::Request& req, httplib::Response& res) {
    if (req.get_header_value("Authorization") !=
        "Basic " + Base64(std::string(kUser) + ":" + kPassword, false)) {
      res.status = 401;
      return;
    }
    std::string access;
    for (auto [it, end] = req.params.equal_range("scope"); it != end; ++it) {
      // repository:<name>:<actions>
      const std::string& scope = it->second;
      const size_t a = scope.find(':'), b = scope.rfind(':');
      if (a == std::string::npos || a == b) continue;
      std::string actions;
      for (char c : scope.substr(b + 1))
        actions += c == ',' ? std::string("\",\"") : std::string(1, c);
      actions = "\"" + actions + "\"";
      access += std::string(access.empty() ? "" : ",") + "{\"type\":\"" + scope.substr(0, a) +
                "\",\"name\":\"" + scope.substr(a + 1, b - a - 1) + "\",\"actions\":[" + actions +
                "]}";
    }
    const long now = static_cast<long>(std::time(nullptr));
    const std::string header = "{\"typ\":\"JWT\",\"alg\":\"RS256\",\"x5c\":[\"" + x5c_ + "\"]}";
    const std::string claims =
        "{\"iss\":\"test-issuer\",\"sub\":\"alice\",\"aud\":\"test-registry\",\"exp\":" +
        std::to_string(now + 600) + ",\"nbf\":" + std::to_string(now - 60) +
        ",\"iat\":" + std::to_string(now) + ",\"jti\":\"" + std::to_string(++issued_) +
        "\",\"access\":[" + access + "]}";
    const std::string input = Base64(header, true) + "." + Base64(claims, true);
    const std::string token = input + "." + Base64(Sign(input), true);
    res.set_content("{\"token\":\"" + token + "\"}", "application/json");
  }

  std::string Sign(const std::string& input) const {
    FILE* f = std::fopen((dir_ + "/token.key").c_str(), "r");
    if (!f) return "";
    EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    std::string sig;
    size_t len = 0;
    if (key && EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
        EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                       input.size()) == 1) {
      sig.resize(len);
      EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size());
      sig.resize(len);
    }
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return sig;
  }

  std::string dir_;
  uint16_t port_;
  std::string x5c_;
  httplib::Server server_;
  std::thread thread_;
  std::atomic<int> issued_{0};
  bool ok_ = false;
};

struct Blob {
  std::string digest;  // sha256:HEX
  std::string path;    // the bytes, in the oci layout
  uint64_t size = 0;
};

// An OCI image layout with random tar.gz layers of `sizes` bytes of content, tagged "1".
struct TestImage {
  std::string layout;
  std::vector<Blob> layers;
  Blob config;
};

Blob WriteBlob(const std::string& layout, const std::string& bytes) {
  Sha256 sha;
  sha.Update(bytes.data(), bytes.size());
  Blob b;
  b.digest = "sha256:" + sha.FinalHex();
  b.path = layout + "/blobs/sha256/" + b.digest.substr(7);
  b.size = bytes.size();
  WriteFile(b.path, bytes);
  return b;
}

std::string Descriptor(const std::string& media_type, const Blob& b) {
  return "{\"mediaType\":\"" + media_type + "\",\"digest\":\"" + b.digest +
         "\",\"size\":" + std::to_string(b.size) + "}";
}

TestImage MakeImage(const std::string& dir, uint32_t seed, const std::vector<uint64_t>& sizes) {
  TestImage image;
  image.layout = dir + "/layout";
  std::filesystem::create_directories(image.layout + "/blobs/sha256");
  std::string diff_ids, layers;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string d = dir + "/layer" + std::to_string(i);
    std::filesystem::create_directories(d);
    bench::MakeFile(d + "/data.bin", sizes[i], seed * 16 + static_cast<uint32_t>(i));
    EXPECT_EQ(bench::Run({"tar", "-C", d, "-cf", d + ".tar", "data.bin"}, nullptr), 0);
    diff_ids += std::string(i ? "," : "") + "\"sha256:" + Sha256File(d + ".tar").value() + "\"";
    EXPECT_EQ(bench::Run({"gzip", "-n", "-f", d + ".tar"}, nullptr), 0);
    Blob layer = WriteBlob(image.layout, ReadFile(d + ".tar.gz"));
    layers += std::string(i ? "," : "") +
              Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer);
    image.layers.push_back(layer);
  }
  image.config = WriteBlob(image.layout,
                           "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{},"
                           "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[" +
                               diff_ids + "]}}");
  Blob manifest =
      WriteBlob(image.layout,
                "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
                "\"config\":" +
                    Descriptor("application/vnd.oci.image.config.v1+json", image.config) +
                    ",\"layers\":[" + layers + "]}");
  WriteFile(image.layout + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  WriteFile(image.layout + "/index.json",
            "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/"
            "vnd.oci.image.manifest.v1+json\",\"digest\":\"" +
                manifest.digest + "\",\"size\":" + std::to_string(manifest.size) +
                ",\"annotations\":{\"org.opencontainers.image.ref.name\":\"1\"}}]}");
  return image;
}

// skopeo with its own registries.conf (empty unless given) so the host's config plays no part.
int Skopeo(const std::string& dir, std::vector<std::string> args, std::string* out,
           const std::string& registries_conf = "") {
  std::string conf = registries_conf;
  if (conf.empty()) {
    conf = dir + "/empty-registries.conf";
    WriteFile(conf, "");
  }
  std::vector<std::string> argv = {kSkopeoBin, "--registries-conf", conf, "--insecure-policy"};
  argv.insert(argv.end(), args.begin(), args.end());
  return bench::Run(argv, out, 120000);
}

// A dfdaemon with its mirror on a free port; `registry` is its default upstream.
struct MirrorDaemon {
  uint16_t proxy_port = 0;
  uint16_t metrics_port = 0;
  Process proc;
  std::string Host() const { return "127.0.0.1:" + std::to_string(proxy_port); }
  double Requests(const std::string& kind) const {
    double v = bench::ScrapeMetric(metrics_port,
                                   "df_daemon_proxy_requests_total\\{kind=\"" + kind + "\"\\}");
    return v < 0 ? 0 : v;
  }
};

// Sets `flag`'s value in `argv` (appends the flag when absent).
void SetFlag(std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) {
      argv[i + 1] = value;
      return;
    }
  }
  argv.push_back(flag);
  argv.push_back(value);
}

class OciMirrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kRegistryBin, X_OK) != 0 || ::access(kSkopeoBin, X_OK) != 0) {
      GTEST_SKIP() << "needs docker-registry and skopeo (scripts/install-deps.sh)";
    }
  }

  // A daemon called `name` mirroring `registry`; with `scheduler_port` 0, no scheduler (every
  // task goes back to source itself).
  std::unique_ptr<MirrorDaemon> StartMirror(const std::string& name, const std::string& registry,
                                            uint16_t scheduler_port = 0,
                                            const std::vector<std::string>& extra = {}) {
    auto d = std::make_unique<MirrorDaemon>();
    d->proxy_port = bench::FreePort();
    d->metrics_port = bench::FreePort();
    std::vector<std::string> argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", name, dir_.path(), scheduler_port);
    if (scheduler_port == 0) {  // drop --scheduler and --announce-interval
      auto it = std::find(argv.begin(), argv.end(), "--scheduler");
      if (it != argv.end()) argv.erase(it, argv.end());
    }
    SetFlag(argv, "--proxy-port", std::to_string(d->proxy_port));
    SetFlag(argv, "--metrics-port", std::to_string(d->metrics_port));
    SetFlag(argv, "--registry-mirror", registry);
    argv.insert(argv.end(), extra.begin(), extra.end());
    d->proc = Process::Start(argv, dir_.path() + "/" + name + ".log");
    EXPECT_TRUE(bench::WaitForTcp(d->proxy_port, 10000)) << name << " did not start its mirror";
    return d;
  }

  // A dfscheduler and a seed peer on free ports, stopped with the fixture; returns the
  // scheduler's port, for StartMirror.
  uint16_t StartSchedulerAndSeed() {
    const uint16_t port = bench::FreePort();
    swarm_.push_back(Process::Start(
        {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:" + std::to_string(port), "--metrics",
         "127.0.0.1:" + std::to_string(bench::FreePort()), "--log-level", "warn"},
        dir_.path() + "/dfscheduler.log"));
    EXPECT_TRUE(bench::WaitForTcp(port, 10000)) << "dfscheduler did not start";
    std::vector<std::string> seed_argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", "seed", dir_.path(), port);
    seed_argv.push_back("--seed");
    swarm_.push_back(Process::Start(seed_argv, dir_.path() + "/seed.log"));
    return port;
  }

  // Pulls test/img:1 from `host` (the mirror itself as the registry) into a dir: layout.
  int Pull(const std::string& host, const std::string& out, std::string* log,
           const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"copy", "--src-tls-verify=false"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("docker://" + host + "/test/img:1");
    args.push_back("dir:" + out);
    return Skopeo(dir_.path(), args, log);
  }

  int Push(const TestImage& image, const DockerRegistry& registry,
           const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"copy", "--dest-tls-verify=false"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("oci:" + image.layout + ":1");
    args.push_back("docker://" + registry.Host() + "/test/img:1");
    std::string out;
    int rc = Skopeo(dir_.path(), args, &out);
    EXPECT_EQ(rc, 0) << out;
    return rc;
  }

  // Every layer and the config in the dir: layout `out` is byte-identical to the pushed one.
  static void ExpectSameBlobs(const TestImage& image, const std::string& out) {
    std::vector<Blob> blobs = image.layers;
    blobs.push_back(image.config);
    for (const Blob& b : blobs) {
      const std::string got = out + "/" + b.digest.substr(7);
      ASSERT_TRUE(std::filesystem::exists(got)) << got;
      EXPECT_EQ(ReadFile(got), ReadFile(b.path)) << b.digest;
    }
  }

  TempDir dir_;
  std::vector<Process> swarm_;  // StartSchedulerAndSeed's; stopped before dir_ is removed
};

}  // namespace
}  // namespace df
