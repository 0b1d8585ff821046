// Preheat's image resolution (backend/oci_image.h): references, platforms, auth challenges and
// manifest documents, as specifications. The network part is in oci_mirror_test (Preheat*).
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace df::oci
