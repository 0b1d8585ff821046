// Preheat's image resolution (backend/oci_image.h): references, platforms, auth challenges and
// manifest documents, as specifications; the hosts preheat may contact, against an in-test HTTP
// registry on loopback. The rest of the network part is in oci_preheat_test.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <thread>

#include "backend/oci_image.h"

namespace df::oci {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');
const std::string kDigest2 = "sha256:" + std::string(64, 'b');

TEST(ImageReference, DockerHubShortNamesAndExplicitRegistries) {
  auto r = ParseImageReference("busybox").value();
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "library/busybox");
  EXPECT_EQ(r.tag, "latest");
  EXPECT_EQ(RegistryEndpoint(r, false), "https://index.docker.io");

  r = ParseImageReference("ghcr.io/org/app:v1.2-rc_3").value();
  EXPECT_EQ(r.registry, "ghcr.io");
  EXPECT_EQ(r.repository, "org/app");
  EXPECT_EQ(r.tag, "v1.2-rc_3");
  EXPECT_EQ(RegistryEndpoint(r, false), "https://ghcr.io");

  r = ParseImageReference("127.0.0.1:5000/test/img@" + kDigest).value();
  EXPECT_EQ(r.registry, "127.0.0.1:5000");
  EXPECT_EQ(r.repository, "test/img");
  EXPECT_EQ(r.ManifestReference(), kDigest);
  EXPECT_EQ(RegistryEndpoint(r, true), "http://127.0.0.1:5000");

  r = ParseImageReference("localhost/a/b__c/d-e.f:1").value();
  EXPECT_EQ(r.registry, "localhost");
  EXPECT_EQ(r.repository, "a/b__c/d-e.f");
  EXPECT_EQ(ParseImageReference("user/app").value().repository, "user/app");
}

TEST(ImageReference, RefusesUrlsAndMalformedNames) {
  for (const char* bad : {"",
                          "http://evil.example/x",
                          "https://ghcr.io/a:1",
                          "Upper/case",
                          "a//b",
                          "/a",
                          "a/",
                          "a/../b",
                          "a:",
                          "a:-tag",
                          "ghcr.io/a@sha256:abc",
                          "a@md5:",
                          "user@ghcr.io/a",
                          "ghcr.io:99999/a",
                          "ghcr.io:/a",
                          "a b",
                          "a\r\nb",
                          "ghcr.io/a?x=1",
                          "ghcr.io/a#f",
                          "-x.io/a"}) {
    EXPECT_FALSE(ParseImageReference(bad).ok()) << bad;
  }
  EXPECT_FALSE(ParseImageReference("a:" + std::string(129, 't')).ok());
  EXPECT_FALSE(ParseImageReference(std::string(2000, 'a')).ok());
}

TEST(Platform, OsArchAndOptionalVariant) {
  EXPECT_EQ(PlatformString(ParsePlatform("linux/amd64").value()), "linux/amd64");
  EXPECT_EQ(ParsePlatform("linux/arm64/v8").value().variant, "v8");
  for (const char* bad : {"", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "Linux/AMD64"}) {
    EXPECT_FALSE(ParsePlatform(bad).ok()) << bad;
  }
}

TEST(AuthChallenge, BearerWithQuotedParametersAndBasic) {
  auto c = ParseAuthChallenge(
               R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",)"
               R"(scope="repository:library/busybox:pull")")
               .value();
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.params["realm"], "https://auth.docker.io/token");
  EXPECT_EQ(c.params["service"], "registry.docker.io");
  EXPECT_EQ(c.params["scope"], "repository:library/busybox:pull");
  c = ParseAuthChallenge(R"(Basic realm="test \"realm\"")").value();
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_EQ(c.params["realm"], "test \"realm\"");
  EXPECT_EQ(ParseAuthChallenge("Bearer realm=plain, service = x").value().params["service"], "x");
  for (const char* bad : {"", "Bearer realm=\"open", "Bearer =x", "Bearer realm", "Bearer a=b c"}) {
    EXPECT_FALSE(ParseAuthChallenge(bad).ok()) << bad;
  }
}

std::string Desc(const std::string& digest, const std::string& extra = "") {
  return R"({"mediaType":"m","digest":")" + digest + R"(","size":10)" + extra + "}";
}

TEST(ManifestDocument, ManifestsAndIndexesByContentTypeOrShape) {
  const std::string manifest =
      R"({"schemaVersion":2,"config":)" + Desc(kDigest) + R"(,"layers":[)" + Desc(kDigest2) + "]}";
  auto m = ParseManifestDocument(manifest, "application/vnd.oci.image.manifest.v1+json").value();
  EXPECT_FALSE(m.is_index);
  EXPECT_EQ(m.config.digest, kDigest);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].size, 10);
  EXPECT_FALSE(ParseManifestDocument(manifest, "").value().is_index);

  const std::string index =
      R"({"schemaVersion":2,"manifests":[)" +
      Desc(kDigest, R"(,"platform":{"os":"linux","architecture":"arm64","variant":"v8"})") + "," +
      Desc(kDigest2, R"(,"platform":{"os":"linux","architecture":"amd64"})") + "]}";
  auto i = ParseManifestDocument(
               index, "application/vnd.docker.distribution.manifest.list.v2+json; charset=x")
               .value();
  ASSERT_TRUE(i.is_index);
  EXPECT_EQ(SelectPlatform(i.manifests, {"linux", "amd64", ""}).value().digest, kDigest2);
  EXPECT_EQ(SelectPlatform(i.manifests, {"linux", "arm64", ""}).value().digest, kDigest);
  EXPECT_EQ(SelectPlatform(i.manifests, {"linux", "arm64", "v8"}).value().digest, kDigest);
  auto none = SelectPlatform(i.manifests, {"linux", "s390x", ""});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("linux/arm64/v8"), std::string::npos);
  EXPECT_TRUE(ParseManifestDocument(index, "").value().is_index);
}

TEST(ManifestDocument, RefusesMalformedDocuments) {
  const std::string bad_digest = Desc("sha256:xyz");
  const std::string no_size = R"({"digest":")" + kDigest + R"("})";
  const std::string neg_size = R"({"digest":")" + kDigest + R"(","size":-1})";
  std::string many = R"({"config":)" + Desc(kDigest) + R"(,"layers":[)";
  for (size_t n = 0; n <= kMaxDescriptors; ++n) many += (n ? "," : "") + Desc(kDigest2);
  many += "]}";
  for (const std::string& doc : std::vector<std::string>{
           std::string("not json"), std::string("[]"), std::string(R"({"schemaVersion":1})"),
           R"({"config":)" + bad_digest + R"(,"layers":[]})",
           R"({"config":)" + no_size + R"(,"layers":[]})",
           R"({"config":)" + neg_size + R"(,"layers":[]})", R"({"config":)" + Desc(kDigest) + "}",
           R"({"layers":[]})", R"({"manifests":"x"})",
           R"({"mediaType":"application/x-other","layers":[]})", many}) {
    EXPECT_FALSE(ParseManifestDocument(doc, "").ok()) << doc.substr(0, 80);
  }
}

TEST(AllowedHosts, ACommaListOfHostsAndHostPorts) {
  auto hosts = ParseAllowedHosts("Registry.Example.com:5000, docker.io,auth.docker.io");
  ASSERT_TRUE(hosts.ok()) << hosts.status().ToString();
  EXPECT_EQ(hosts.value(),
            (std::vector<std::string>{"registry.example.com:5000", "docker.io", "auth.docker.io"}));
  EXPECT_TRUE(ParseAllowedHosts("").value().empty());
  for (const char* bad : {"a,,b", "http://a", "a/b", "a:b:c", " , ", "a b"}) {
    EXPECT_EQ(ParseAllowedHosts(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
  const std::vector<std::string> allowed = {"registry.example.com:5000", "docker.io"};
  EXPECT_TRUE(CheckAllowedHost(allowed, "https://registry.example.com:5000").ok());
  EXPECT_TRUE(CheckAllowedHost(allowed, "https://DOCKER.io").ok());
  EXPECT_TRUE(CheckAllowedHost(allowed, "https://docker.io:443").ok());  // a HOST: any port
  EXPECT_EQ(CheckAllowedHost(allowed, "https://registry.example.com:5001").code(),
            StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckAllowedHost(allowed, "http://169.254.169.254").code(),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(CheckAllowedHost({}, "http://anything:1").ok());  // no list: any host
}

// A registry on loopback whose manifests need a Bearer token from a realm on another address.
class ChallengingRegistry {
 public:
  ChallengingRegistry() {
    server_.Get(R"(/v2/.*)", [this](const httplib::Request&, httplib::Response& res) {
      ++manifest_gets_;
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"http://127.0.0.2:" +
                                             std::to_string(port_) + "/token\",service=\"x\"");
    });
    server_.Get("/token", [this](const httplib::Request&, httplib::Response& res) {
      ++token_gets_;
      res.set_content(R"({"token":"t"})", "application/json");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    // The realm's address: the same server, bound on 127.0.0.2 too.
    realm_server_.Get("/token", [this](const httplib::Request&, httplib::Response& res) {
      ++token_gets_;
      res.set_content(R"({"token":"t"})", "application/json");
    });
    realm_ok_ = realm_server_.bind_to_port("127.0.0.2", port_);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    // Bound sockets listen already: a request before the threads accept waits in the backlog.
    if (realm_ok_) realm_thread_ = std::thread([this] { realm_server_.listen_after_bind(); });
  }
  ~ChallengingRegistry() {
    server_.stop();
    realm_server_.stop();
    thread_.join();
    if (realm_thread_.joinable()) realm_thread_.join();
  }
  int port() const { return port_; }
  int manifest_gets() const { return manifest_gets_; }
  int token_gets() const { return token_gets_; }

 private:
  httplib::Server server_;
  httplib::Server realm_server_;
  int port_ = 0;
  bool realm_ok_ = false;
  std::atomic<int> manifest_gets_{0};
  std::atomic<int> token_gets_{0};
  std::thread thread_;
  std::thread realm_thread_;
};

TEST(AllowedHosts, ARegistryOrTokenRealmOutsideTheListIsNeverContacted) {
  ChallengingRegistry registry;
  ASSERT_GT(registry.port(), 0);
  auto ref = ParseImageReference("127.0.0.1:" + std::to_string(registry.port()) + "/team/app:1");
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  ResolveOptions options;
  options.plain_http = true;
  options.timeout_seconds = 5;

  // The registry itself is not allowed: refused before any request.
  options.allowed_hosts = {"registry.example.com"};
  auto image = ResolveImage(ref.value(), options);
  EXPECT_EQ(image.status().code(), StatusCode::kPermissionDenied) << image.status().ToString();
  EXPECT_EQ(registry.manifest_gets(), 0);

  // The registry is, its token realm (another address) is not: the challenge goes unanswered.
  options.allowed_hosts = {"127.0.0.1"};
  image = ResolveImage(ref.value(), options);
  EXPECT_EQ(image.status().code(), StatusCode::kPermissionDenied) << image.status().ToString();
  EXPECT_NE(image.status().message().find("127.0.0.2"), std::string::npos)
      << image.status().ToString();
  EXPECT_EQ(registry.manifest_gets(), 1);
  EXPECT_EQ(registry.token_gets(), 0);
}

// A registry whose manifests live elsewhere: on 127.0.0.1 it wants Basic credentials and sends
// `manifests/1` to a path of its own (relative Location), which sends it on to a "CDN" on
// 127.0.0.2 (absolute Location, another origin) that serves the manifest; `manifests/loop`
// redirects to itself, `manifests/ftp` to an ftp URL.
class RedirectingRegistry {
 public:
  RedirectingRegistry() {
    registry_.Get(R"(/v2/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      if (req.get_header_value("Authorization") != "Basic dTpw") {  // u:p
        res.status = 401;
        res.set_header("WWW-Authenticate", "Basic realm=\"r\"");
        return;
      }
      if (req.path == "/v2/team/app/manifests/1") {
        res.status = 307;
        res.set_header("Location", "/moved/manifest");
      } else if (req.path == "/v2/team/app/manifests/loop") {
        res.status = 302;
        res.set_header("Location", "/v2/team/app/manifests/loop");
      } else if (req.path == "/v2/team/app/manifests/ftp") {
        res.status = 301;
        res.set_header("Location", "ftp://127.0.0.2/manifest");
      } else {
        res.status = 404;
      }
    });
    registry_.Get("/moved/manifest", [this](const httplib::Request& req, httplib::Response& res) {
      moved_auth_ = req.get_header_value("Authorization");
      res.status = 302;
      res.set_header("Location", "http://127.0.0.2:" + std::to_string(port_) + "/cdn/m?sig=1");
    });
    port_ = registry_.bind_to_any_port("127.0.0.1");
    cdn_.Get("/cdn/m", [this](const httplib::Request& req, httplib::Response& res) {
      ++cdn_gets_;
      cdn_auth_ = req.get_header_value("Authorization");
      cdn_sig_ = req.get_param_value("sig");
      res.set_content(kManifest, "application/vnd.oci.image.manifest.v1+json");
    });
    cdn_ok_ = cdn_.bind_to_port("127.0.0.2", port_);
    registry_thread_ = std::thread([this] { registry_.listen_after_bind(); });
    if (cdn_ok_) cdn_thread_ = std::thread([this] { cdn_.listen_after_bind(); });
  }
  ~RedirectingRegistry() {
    registry_.stop();
    cdn_.stop();
    registry_thread_.join();
    if (cdn_thread_.joinable()) cdn_thread_.join();
  }
  bool ok() const { return port_ > 0 && cdn_ok_; }
  std::string Ref(const std::string& tag) const {
    return "127.0.0.1:" + std::to_string(port_) + "/team/app:" + tag;
  }
  int cdn_gets() const { return cdn_gets_; }
  std::string moved_auth_, cdn_auth_, cdn_sig_;

  static inline const std::string kManifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      kDigest +
      R"(","size":10},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar",)"
      R"("digest":")" +
      kDigest2 + R"(","size":20}]})";

 private:
  httplib::Server registry_;
  httplib::Server cdn_;
  int port_ = 0;
  bool cdn_ok_ = false;
  std::atomic<int> cdn_gets_{0};
  std::thread registry_thread_;
  std::thread cdn_thread_;
};

TEST(Redirects, AManifestIsFollowedToAnotherHostWithoutTheRegistrysCredentials) {
  RedirectingRegistry registry;
  ASSERT_TRUE(registry.ok());
  ResolveOptions options;
  options.plain_http = true;
  options.timeout_seconds = 5;
  options.credentials = {"u", "p"};

  auto ref = ParseImageReference(registry.Ref("1"));
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  auto image = ResolveImage(ref.value(), options);
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  ASSERT_EQ(image.value().blobs.size(), 2u);
  EXPECT_EQ(image.value().blobs[0].digest, kDigest);
  EXPECT_EQ(image.value().blobs[1].digest, kDigest2);
  // Blobs still come from the registry, with its credentials.
  EXPECT_EQ(image.value().endpoint, "http://" + ref.value().registry);
  EXPECT_EQ(image.value().blob_headers.at("Authorization"), "Basic dTpw");
  // The registry's own path got the credentials; the other host did not, but its query did.
  EXPECT_EQ(registry.moved_auth_, "Basic dTpw");
  EXPECT_EQ(registry.cdn_auth_, "");
  EXPECT_EQ(registry.cdn_sig_, "1");

  // A redirect loop ends with an error, as does a redirect to another scheme.
  image = ResolveImage(ParseImageReference(registry.Ref("loop")).value(), options);
  EXPECT_EQ(image.status().code(), StatusCode::kInvalidArgument) << image.status().ToString();
  EXPECT_NE(image.status().message().find("redirects"), std::string::npos);
  image = ResolveImage(ParseImageReference(registry.Ref("ftp")).value(), options);
  EXPECT_EQ(image.status().code(), StatusCode::kInvalidArgument) << image.status().ToString();
  EXPECT_NE(image.status().message().find("ftp://"), std::string::npos);

  // The allowed hosts hold for every hop: a Location outside them is refused without contacting
  // it.
  options.allowed_hosts = {"127.0.0.1"};
  const int cdn_before = registry.cdn_gets();
  image = ResolveImage(ref.value(), options);
  EXPECT_EQ(image.status().code(), StatusCode::kPermissionDenied) << image.status().ToString();
  EXPECT_NE(image.status().message().find("127.0.0.2"), std::string::npos);
  EXPECT_EQ(registry.cdn_gets(), cdn_before);
}

}  // namespace
}  // namespace df::oci
