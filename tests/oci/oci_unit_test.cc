// The registry mirror's parsers and the runtime configurations, as specifications.
#include <gtest/gtest.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/config.h"
#include "daemon/intercept_ca.h"
#include "daemon/mirror_front.h"
#include "daemon/registry_mirror.h"
#include "daemon/runtime_config.h"

namespace df {
namespace {

const std::string kHex(64, 'a');

TEST(RegistryUpstream, AcceptsHttpAndHttpsHostsAndNormalisesThem) {
  EXPECT_EQ(ParseRegistryUpstream("https://index.docker.io").value(), "https://index.docker.io");
  EXPECT_EQ(ParseRegistryUpstream("HTTP://Registry.Local:5000/").value(),
            "http://registry.local:5000");
  EXPECT_EQ(ParseRegistryUpstream("https://[::1]:5000").value(), "https://[::1]:5000");
}

TEST(RegistryUpstream, RefusesAnythingButSchemeHostAndPort) {
  for (const char* bad :
       {"index.docker.io", "ftp://example.com", "file:///etc", "https://", "https://:5000",
        "https://user:pw@example.com", "https://example.com/v2", "https://example.com?x=1",
        "https://example.com#f", "https://example.com:0", "https://example.com:65536",
        "https://example.com:5x", "https://exa mple.com", "https://example.com\r\nX: y",
        "gopher://example.com"}) {
    EXPECT_FALSE(ParseRegistryUpstream(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseRegistryUpstream("https://" + std::string(600, 'a')).ok());
}

TEST(RegistryUpstream, ContainerdNsIsARegistryHostServedOverHttps) {
  EXPECT_EQ(UpstreamFromNs("docker.io").value(), "https://index.docker.io");
  EXPECT_EQ(UpstreamFromNs("ghcr.io").value(), "https://ghcr.io");
  EXPECT_EQ(UpstreamFromNs("127.0.0.1:5000").value(), "https://127.0.0.1:5000");
  for (const char* bad : {"", "http://ghcr.io", "ghcr.io/x", "a b", "ghcr.io:", "@ghcr.io"}) {
    EXPECT_FALSE(UpstreamFromNs(bad).ok()) << bad;
  }
}

TEST(BlobPath, NamesAndDigestsOfBlobGets) {
  auto b = ParseBlobPath("/v2/library/busybox/blobs/sha256:" + kHex);
  ASSERT_TRUE(b && b->ok());
  EXPECT_EQ(b->value().name, "library/busybox");
  EXPECT_EQ(b->value().digest, "sha256:" + kHex);
  b = ParseBlobPath("/v2/a__b/c-d--e/f.g_h/blobs/sha256:" + kHex);
  ASSERT_TRUE(b && b->ok());
  EXPECT_EQ(b->value().name, "a__b/c-d--e/f.g_h");
}

TEST(BlobPath, OtherRegistryPathsAreNotBlobs) {
  EXPECT_FALSE(ParseBlobPath("/v2/"));
  EXPECT_FALSE(ParseBlobPath("/v2/library/busybox/manifests/latest"));
  EXPECT_FALSE(ParseBlobPath("/v2/library/busybox/blobs/uploads/1234"));
  EXPECT_FALSE(ParseBlobPath("/v3/x/blobs/sha256:" + kHex));
}

TEST(BlobPath, MalformedBlobPathsAreErrors) {
  for (const std::string& bad :
       {std::string("/v2/x/blobs/sha256:zz"), "/v2/x/blobs/sha256:" + kHex.substr(1),
        "/v2/x/blobs/sha256:" + std::string(64, 'A'), "/v2/x/blobs/sha512:" + kHex + kHex,
        std::string("/v2/x/blobs/"), "/v2/X/blobs/sha256:" + kHex, "/v2/a..b/blobs/sha256:" + kHex,
        "/v2/-a/blobs/sha256:" + kHex, "/v2/a//b/blobs/sha256:" + kHex, "/v2//blobs/sha256:" + kHex,
        "/v2/a._b/blobs/sha256:" + kHex,
        "/v2/" + std::string(256, 'a') + "/blobs/sha256:" + kHex}) {
    auto b = ParseBlobPath(bad);
    ASSERT_TRUE(b) << bad;
    EXPECT_FALSE(b->ok()) << bad;
  }
}

struct RangeCase {
  const char* header;
  uint64_t size;
  const char* want;  // "first-last", "416", or "all"
};

TEST(Range, OneByteRangeResolvedAgainstTheBlobSize) {
  const RangeCase cases[] = {
      {"", 100, "all"},
      {"bytes=0-9", 100, "0-9"},
      {"bytes=90-", 100, "90-99"},
      {"bytes=90-200", 100, "90-99"},
      {"bytes=-10", 100, "90-99"},
      {"bytes=-200", 100, "0-99"},
      {"BYTES=1-1", 100, "1-1"},
      {"bytes=100-", 100, "416"},
      {"bytes=100-200", 100, "416"},
      {"bytes=-0", 100, "416"},
      {"bytes=0-", 0, "416"},
      {"bytes=0-1,5-6", 100, "all"},
      {"bytes=5-1", 100, "all"},
      {"items=0-1", 100, "all"},
      {"bytes=x-1", 100, "all"},
      {"bytes=", 100, "all"},
      {"bytes=99999999999999999999-", 100, "all"},
  };
  for (const RangeCase& c : cases) {
    auto r = ResolveRange(c.header, c.size);
    std::string got =
        !r         ? "all"
        : !r->ok() ? "416"
                   : std::to_string(r->value().first) + "-" + std::to_string(r->value().last);
    EXPECT_EQ(got, c.want) << c.header << " of " << c.size;
  }
}

TEST(UpstreamHeaders, ForwardsCredentialsAndDropsHopAndDragonflyHeaders) {
  std::multimap<std::string, std::string> in = {{"Authorization", "Bearer t"},
                                                {"Host", "127.0.0.1:4001"},
                                                {"Connection", "keep-alive"},
                                                {"Range", "bytes=0-1"},
                                                {"X-Dragonfly-Registry", "https://ghcr.io"},
                                                {"REMOTE_ADDR", "127.0.0.1"},
                                                {"Accept", "a"},
                                                {"Accept", "b"},
                                                {"User-Agent", "containerd"}};
  auto out = UpstreamHeaders(in);
  EXPECT_EQ(out,
            (std::map<std::string, std::string>{
                {"Accept", "a, b"}, {"Authorization", "Bearer t"}, {"User-Agent", "containerd"}}));
}

TEST(RuntimeConfig, ContainerdHostsTomlSendsTheRegistryHeader) {
  RuntimeConfigRequest req;
  req.runtime = "containerd";
  req.registry = "ghcr.io";
  const std::string out = RenderRuntimeConfig(req).value();
  EXPECT_NE(out.find("ghcr.io/hosts.toml"), std::string::npos) << out;
  EXPECT_NE(out.find("server = \"https://ghcr.io\""), std::string::npos) << out;
  EXPECT_NE(out.find("[host.\"http://127.0.0.1:4001\"]\n  capabilities = [\"pull\", \"resolve\"]"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("[host.\"http://127.0.0.1:4001\".header]\n    X-Dragonfly-Registry = "
                     "\"https://ghcr.io\""),
            std::string::npos)
      << out;
}

TEST(RuntimeConfig, ContainerdDefaultLeavesTheRegistryToNs) {
  RuntimeConfigRequest req;
  req.runtime = "containerd";
  req.registry = "_default";
  const std::string out = RenderRuntimeConfig(req).value();
  EXPECT_EQ(out.find("server ="), std::string::npos) << out;
  EXPECT_EQ(out.find("X-Dragonfly-Registry"), std::string::npos) << out;
  EXPECT_NE(out.find("capabilities = [\"pull\", \"resolve\"]"), std::string::npos) << out;
}

TEST(RuntimeConfig, PodmanRegistriesConfAndDockerDaemonJson) {
  RuntimeConfigRequest req;
  req.runtime = "podman";
  req.registry = "http://10.0.0.5:5000";
  req.mirror = "http://10.0.0.7:4001";
  const std::string podman = RenderRuntimeConfig(req).value();
  EXPECT_NE(podman.find("[[registry]]\nlocation = \"10.0.0.5:5000\"\ninsecure = true\n"),
            std::string::npos)
      << podman;
  EXPECT_NE(podman.find("[[registry.mirror]]\nlocation = \"10.0.0.7:4001\"\ninsecure = true\n"),
            std::string::npos)
      << podman;
  req.runtime = "docker";
  EXPECT_EQ(RenderRuntimeConfig(req).value(),
            "{\n  \"registry-mirrors\": [\"http://10.0.0.7:4001\"]\n}\n");
}

TEST(RuntimeConfig, RefusesUnknownRuntimesRegistriesAndMirrors) {
  RuntimeConfigRequest req;
  req.runtime = "rkt";
  EXPECT_FALSE(RenderRuntimeConfig(req).ok());
  req.runtime = "containerd";
  req.registry = "ftp://x";
  EXPECT_FALSE(RenderRuntimeConfig(req).ok());
  req.registry = "docker.io";
  req.mirror = "https://127.0.0.1:4001";  // the mirror speaks plain HTTP
  EXPECT_FALSE(RenderRuntimeConfig(req).ok());
}

TEST(MirrorConfig, ProxyPortAndRegistryMirrorFromTheFileAreValidated) {
  DaemonConfig c;
  EXPECT_EQ(c.proxy_port, 4001);
  ASSERT_TRUE(LoadDaemonConfigFromString("proxy_port: 0\nregistry_mirror: HTTP://Reg.Local:5000/\n",
                                         "test.yaml", &c)
                  .ok());
  c.ip = "127.0.0.1";
  ASSERT_TRUE(ValidateDaemonConfig(&c).ok());
  EXPECT_EQ(c.proxy_port, 0);
  EXPECT_EQ(c.registry_mirror, "http://reg.local:5000");
  c.registry_mirror = "reg.local:5000";
  EXPECT_FALSE(ValidateDaemonConfig(&c).ok());
  EXPECT_FALSE(LoadDaemonConfigFromString("proxy_port: 70000\n", "test.yaml", &c).ok());
}

// A mirror request chooses the registry the daemon fetches from: by default only this node
// reaches it, whatever address the daemon's other ports use.
TEST(MirrorConfig, TheMirrorListensOnLoopbackUnlessToldOtherwise) {
  DaemonConfig c;
  c.ip = "10.0.0.7";
  ASSERT_TRUE(ValidateDaemonConfig(&c).ok());
  EXPECT_EQ(c.proxy_ip, "127.0.0.1");
  EXPECT_EQ(c.listen_ip, "10.0.0.7");
  ASSERT_TRUE(LoadDaemonConfigFromString("proxy_ip: 10.0.0.7\n", "test.yaml", &c).ok());
  EXPECT_EQ(c.proxy_ip, "10.0.0.7");
  c.proxy_ip = "";
  Status s = ValidateDaemonConfig(&c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("proxy_ip"), std::string::npos) << s.ToString();
}

TEST(ProxyRules, RegexesChooseWhichPathsGoP2P) {
  auto rules =
      ProxyRules::Compile({"/manifests/sha256:[0-9a-f]{64}$", "^/v2/models/.+/blobs/"}).value();
  EXPECT_TRUE(rules.Matches("/v2/test/img/manifests/sha256:" + kHex));
  EXPECT_FALSE(rules.Matches("/v2/test/img/manifests/latest"));
  EXPECT_FALSE(rules.Matches("/v2/test/img/manifests/sha256:" + kHex + "/x"));
  EXPECT_TRUE(rules.Matches("/v2/models/llm/blobs/x"));
  EXPECT_FALSE(rules.Matches("/v3/models/llm/blobs/x"));
  EXPECT_FALSE(ProxyRules().Matches("/v2/"));
  EXPECT_TRUE(ProxyRules::Compile({}).value().empty());
  // Linear time: a pattern that backtracking engines take exponential time on is instant here.
  auto nested = ProxyRules::Compile({"^(a+)+$"}).value();
  EXPECT_FALSE(nested.Matches(std::string(5000, 'a') + "b"));
}

TEST(ProxyRules, BadRulesAreClearErrorsAtLoad) {
  auto bad = ProxyRules::Compile({"ok", "blobs/(sha256"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("proxy_rules[1]"), std::string::npos)
      << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("missing )"), std::string::npos) << bad.status().ToString();
  EXPECT_FALSE(ProxyRules::Compile({""}).ok());
  EXPECT_FALSE(ProxyRules::Compile({std::string(kMaxProxyRuleBytes + 1, 'a')}).ok());
  EXPECT_FALSE(ProxyRules::Compile(std::vector<std::string>(kMaxProxyRules + 1, "a")).ok());

  DaemonConfig c;
  c.ip = "127.0.0.1";
  ASSERT_TRUE(LoadDaemonConfigFromString("proxy_rules:\n  - '/manifests/sha256:'\n  - '[z-a]'\n",
                                         "test.yaml", &c)
                  .ok());
  ASSERT_EQ(c.proxy_rules.size(), 2u);
  Status s = ValidateDaemonConfig(&c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("proxy_rules[1]: bad regular expression '[z-a]'"), std::string::npos)
      << s.ToString();
  c.proxy_rules.pop_back();
  EXPECT_TRUE(ValidateDaemonConfig(&c).ok());
}

TEST(ForwardProxy, AbsoluteFormTargetsNameTheirUpstream) {
  auto split = SplitAbsoluteTarget("http://Registry:5000/v2/a/blobs/sha256:" + kHex + "?ns=x");
  ASSERT_TRUE(split.ok()) << split.status().ToString();
  EXPECT_EQ(split.value().first, "http://registry:5000");
  EXPECT_EQ(split.value().second, "/v2/a/blobs/sha256:" + kHex + "?ns=x");
  EXPECT_EQ(SplitAbsoluteTarget("https://ghcr.io").value().second, "/");
  for (const char* bad : {"/v2/", "ftp://h/v2/", "file:///etc/passwd", "http://u:p@h/v2/",
                          "http://h:0/v2/", "http:///v2/", "http://h?x/v2/", "gopher://h/"}) {
    EXPECT_FALSE(SplitAbsoluteTarget(bad).ok()) << bad;
  }
}

TEST(ForwardProxy, HostPortOfConnectTargetsAndListEntries) {
  EXPECT_EQ(ParseHostPort("Registry.Local:5000", 0).value(), "registry.local:5000");
  EXPECT_EQ(ParseHostPort("[::1]:443", 0).value(), "[::1]:443");
  EXPECT_EQ(ParseHostPort("ghcr.io", 443).value(), "ghcr.io:443");
  EXPECT_FALSE(ParseHostPort("ghcr.io", 0).ok());  // a CONNECT target names its port
  for (const char* bad : {"", ":443", "h:0", "h:65536", "h:x", "u@h:1", "h/x:1", "http://h:1",
                          "h :1", "h:1\r\nX: y"}) {
    EXPECT_FALSE(ParseHostPort(bad, 443).ok()) << bad;
  }
}

TEST(ForwardProxy, ConnectHeadsAreParsedStrictly) {
  EXPECT_EQ(ParseConnectHead("CONNECT reg:5000 HTTP/1.1\r\nHost: reg:5000\r\n\r\n").value(),
            "reg:5000");
  EXPECT_EQ(ParseConnectHead("CONNECT [::1]:443 HTTP/1.0\r\n\r\n").value(), "[::1]:443");
  for (const char* bad :
       {"CONNECT reg:5000 HTTP/1.1\r\n", "CONNECT reg HTTP/1.1\r\n\r\n", "CONNECT reg:5000\r\n\r\n",
        "CONNECT reg:5000 HTTP/2\r\n\r\n", "CONNECT  reg:5000 HTTP/1.1\r\n\r\n",
        "GET reg:5000 HTTP/1.1\r\n\r\n", "CONNECT reg:5000 HTTP/1.1\r\nno colon\r\n\r\n",
        "CONNECT reg:5000 HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "CONNECT http://reg:5000 HTTP/1.1\r\n\r\n", "CONNECT u@reg:5000 HTTP/1.1\r\n\r\n"}) {
    EXPECT_FALSE(ParseConnectHead(bad).ok()) << bad;
  }
}

// No CONNECT target is reachable unless the operator listed it; interception needs the CA.
TEST(ForwardProxy, OnlyListedHostsAreTunnelledOrIntercepted) {
  DaemonConfig c;
  c.ip = "127.0.0.1";
  ASSERT_TRUE(ValidateDaemonConfig(&c).ok());
  EXPECT_EQ(ConnectPolicyFor(c, "ghcr.io:443"), ConnectPolicy::kRefused);
  ASSERT_TRUE(LoadDaemonConfigFromString(
                  "proxy_connect_hosts: [Auth.Docker.IO, 'reg:5000']\n"
                  "proxy_intercept_hosts: registry-1.docker.io\n"
                  "proxy_ca_cert: /ca.crt\nproxy_ca_key: /ca.key\nproxy_max_tunnels: 8\n"
                  "origin_ca_file: /extra.pem\n",
                  "test.yaml", &c)
                  .ok());
  ASSERT_TRUE(ValidateDaemonConfig(&c).ok());
  EXPECT_EQ(c.proxy_connect_hosts, (std::vector<std::string>{"auth.docker.io:443", "reg:5000"}));
  EXPECT_EQ(c.proxy_max_tunnels, 8u);
  EXPECT_EQ(c.origin_ca_file, "/extra.pem");
  EXPECT_EQ(ConnectPolicyFor(c, "auth.docker.io:443"), ConnectPolicy::kTunnel);
  EXPECT_EQ(ConnectPolicyFor(c, "reg:5000"), ConnectPolicy::kTunnel);
  EXPECT_EQ(ConnectPolicyFor(c, "reg:5001"), ConnectPolicy::kRefused);
  EXPECT_EQ(ConnectPolicyFor(c, "registry-1.docker.io:443"), ConnectPolicy::kIntercept);

  DaemonConfig bad = c;
  bad.proxy_ca_key.clear();
  EXPECT_NE(ValidateDaemonConfig(&bad).message().find("together"), std::string::npos);
  bad.proxy_ca_cert.clear();
  EXPECT_NE(ValidateDaemonConfig(&bad).message().find("proxy_intercept_hosts"), std::string::npos);
  bad = c;
  bad.proxy_connect_hosts = {"http://x"};
  EXPECT_NE(ValidateDaemonConfig(&bad).message().find("proxy_connect_hosts"), std::string::npos);
  bad = c;
  bad.proxy_max_tunnels = 0;
  EXPECT_FALSE(ValidateDaemonConfig(&bad).ok());
}

class InterceptCaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("intercept-ca-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout " +
        Path("ca.key") + " -out " + Path("ca.crt") + " -days 2 -subj /CN=test-proxy-ca 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    ::chmod(Path("ca.key").c_str(), 0600);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Whether `pem` verifies against the CA for TLS server use with `host`.
  bool Verifies(const std::string& pem, const std::string& host, bool ip) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    X509_STORE* store = X509_STORE_new();
    X509_STORE_load_file(store, Path("ca.crt").c_str());
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, nullptr);
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
    if (ip) {
      X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    }
    const bool ok = leaf && X509_verify_cert(ctx) == 1;
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(leaf);
    return ok;
  }

  std::filesystem::path dir_;
};

TEST_F(InterceptCaTest, LeavesAreSignedByTheCaForTheirHostOnly) {
  auto ca = InterceptCa::Load(Path("ca.crt"), Path("ca.key"));
  ASSERT_TRUE(ca.ok()) << ca.status().ToString();
  auto pem = ca.value()->LeafPem("registry.local");
  ASSERT_TRUE(pem.ok());
  EXPECT_TRUE(Verifies(pem.value(), "registry.local", false));
  EXPECT_FALSE(Verifies(pem.value(), "other.local", false));
  EXPECT_TRUE(Verifies(ca.value()->LeafPem("127.0.0.1").value(), "127.0.0.1", true));
  EXPECT_TRUE(Verifies(ca.value()->LeafPem("[::1]").value(), "::1", true));
  auto a = ca.value()->ServerContext("registry.local");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value(), ca.value()->ServerContext("registry.local").value());  // cached
  EXPECT_NE(a.value(), ca.value()->ServerContext("other.local").value());
}

TEST_F(InterceptCaTest, BadCaFilesAreClearErrors) {
  ::chmod(Path("ca.key").c_str(), 0644);
  EXPECT_EQ(InterceptCa::Load(Path("ca.crt"), Path("ca.key")).status().code(),
            StatusCode::kPermissionDenied);
  ::chmod(Path("ca.key").c_str(), 0600);
  EXPECT_FALSE(InterceptCa::Load(Path("missing.crt"), Path("ca.key")).ok());
  EXPECT_FALSE(InterceptCa::Load(Path("ca.key"), Path("ca.key")).ok());  // not a certificate
  std::ofstream(Path("other.key")) << "not a key";
  ::chmod(Path("other.key").c_str(), 0600);
  EXPECT_FALSE(InterceptCa::Load(Path("ca.crt"), Path("other.key")).ok());
  const std::string cmd = "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 -out " +
                          Path("wrong.key") + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  ::chmod(Path("wrong.key").c_str(), 0600);
  auto wrong = InterceptCa::Load(Path("ca.crt"), Path("wrong.key"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("is not the key of"), std::string::npos);
}

}  // namespace
}  // namespace df
