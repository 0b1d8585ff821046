// Specifications of the task-spec authority (common/task_spec.h): which URLs are fetched, which
// ids are believed and which layouts a peer accepts from others.
#include "common/task_spec.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "common/auth.h"
#include "common/ids.h"

namespace df {
namespace {

TEST(TaskSpec, OnlyHttpAndHttpsAreFetchedByDefault) {
  UrlPolicy none;
  EXPECT_TRUE(ValidateUrl("http://origin/f", none).ok());
  EXPECT_TRUE(ValidateUrl("https://user@origin:8443/f?x=1", none).ok());
  EXPECT_FALSE(ValidateUrl("file:///etc/shadow", none).ok());
  EXPECT_FALSE(ValidateUrl("gopher://origin/f", none).ok());
  EXPECT_FALSE(ValidateUrl("ftp://origin/f", none).ok());
  EXPECT_FALSE(ValidateUrl("http:///no-host", none).ok());
  EXPECT_FALSE(ValidateUrl("http://:80/no-host", none).ok());
  EXPECT_FALSE(ValidateUrl("http://origin/a b", none).ok());
  EXPECT_FALSE(ValidateUrl(std::string("http://origin/\r\nX: y"), none).ok());
  EXPECT_FALSE(ValidateUrl("", none).ok());
  EXPECT_FALSE(ValidateUrl("http://o/" + std::string(kMaxUrlBytes, 'a'), none).ok());
}

TEST(TaskSpec, FileUrlsOnlyUnderAllowedDirectoriesAfterResolvingLinks) {
  namespace fs = std::filesystem;
  fs::path root = fs::path(::testing::TempDir()) / ("spec-" + std::to_string(::getpid()));
  fs::create_directories(root / "allowed");
  fs::create_directories(root / "secret");
  {
    std::FILE* f = std::fopen((root / "allowed/data").c_str(), "w");
    std::fclose(f);
  }
  {
    std::FILE* f = std::fopen((root / "secret/key").c_str(), "w");
    std::fclose(f);
  }
  fs::create_symlink(root / "secret/key", root / "allowed/link");
  UrlPolicy policy;
  policy.file_dirs = {(root / "allowed").string()};
  EXPECT_TRUE(ValidateUrl("file://" + (root / "allowed/data").string(), policy).ok());
  EXPECT_FALSE(ValidateUrl("file://" + (root / "secret/key").string(), policy).ok());
  EXPECT_FALSE(ValidateUrl("file://" + (root / "allowed/../secret/key").string(), policy).ok());
  EXPECT_FALSE(ValidateUrl("file://" + (root / "allowed/link").string(), policy).ok());
  EXPECT_FALSE(ValidateUrl("file://" + (root / "allowed/missing").string(), policy).ok());
  EXPECT_FALSE(ValidateUrl("file://relative/path", policy).ok());
  UrlPolicy scheduler;
  scheduler.allow_any_file = true;
  EXPECT_TRUE(ValidateUrl("file:///anywhere", scheduler).ok());
  fs::remove_all(root);
}

TEST(TaskSpec, TheIdIsRecomputedNeverTaken) {
  TaskSpec spec{"http://o/f?a=1&sig=2", "t", "app", 0, {"sig"}, "", false};
  std::string id = TaskSpecId(spec);
  EXPECT_EQ(id, TaskId(TaskIdInput{"http://o/f?a=1&sig=2", "t", "app", 0, {"sig"}}));
  EXPECT_TRUE(CheckTaskId(spec, id).ok());
  EXPECT_EQ(CheckTaskId(spec, std::string(64, 'a')).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(CheckTaskId(spec, "").code(), StatusCode::kPermissionDenied);
  TaskSpec blob{"http://r/v2/x/blobs/sha256:" + std::string(64, 'b'),
                "",
                "",
                0,
                {},
                "sha256:" + std::string(64, 'B'),
                true};
  EXPECT_TRUE(ValidateTaskSpec(blob, UrlPolicy{}).ok());
  EXPECT_EQ(TaskSpecId(blob), std::string(64, 'b'));
}

TEST(TaskSpec, MalformedSpecsAreRejected) {
  UrlPolicy none;
  TaskSpec spec{"http://o/f", "", "", 0, {}, "", false};
  EXPECT_TRUE(ValidateTaskSpec(spec, none).ok());
  spec.piece_length = 3 * kMiB;
  EXPECT_FALSE(ValidateTaskSpec(spec, none).ok());
  spec.piece_length = 1;
  EXPECT_FALSE(ValidateTaskSpec(spec, none).ok());
  spec.piece_length = 0;
  spec.digest = "sha256:zz";
  EXPECT_FALSE(ValidateTaskSpec(spec, none).ok());
  spec.digest = "";
  spec.id_from_digest = true;
  EXPECT_FALSE(ValidateTaskSpec(spec, none).ok());
}

// Issue 14: a parent or the scheduler could set piece_length=1 (GBs of bookkeeping) or a piece
// count that wraps total_pieces() to 0 (the task was then "done").
TEST(TaskSpec, OnlyTheLayoutTheSpecImpliesIsAccepted) {
  EXPECT_TRUE(CheckLayout(0, 10 * kMiB, 1 * kMiB, 10).ok());
  EXPECT_TRUE(CheckLayout(kMiB, 10 * kMiB, kMiB).ok());
  EXPECT_TRUE(CheckLayout(0, 0, ChoosePieceLength(0), 0).ok());
  EXPECT_FALSE(CheckLayout(0, 10 * kMiB, 1).ok());
  EXPECT_FALSE(CheckLayout(0, 10 * kMiB, 4 * kMiB).ok()) << "the spec leaves it to the size rule";
  EXPECT_FALSE(CheckLayout(kMiB, 10 * kMiB, 4 * kMiB).ok());
  EXPECT_FALSE(CheckLayout(0, 10 * kMiB, 1 * kMiB, 7).ok());
  EXPECT_FALSE(CheckLayout(0, -1, 4 * kMiB).ok());
  // 2^32 pieces of 64 KiB would wrap a uint32_t count to 0; far beyond the cap anyway.
  EXPECT_FALSE(CheckLayout(64 * 1024, int64_t{1} << 48, 64 * 1024).ok());
  EXPECT_FALSE(CheckLayout(0, INT64_MAX, kMaxPieceLength).ok());
  auto big = ExpectedLayout(0, int64_t{1} << 40);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->piece_length, kMaxPieceLength);
}

TEST(AuthToken, ShortOrUnreadableOrExposedTokensAreRefused) {
  EXPECT_FALSE(AuthToken::FromString("short").ok());
  EXPECT_FALSE(AuthToken::FromString("0123456789abcdef with space").ok());
  EXPECT_TRUE(AuthToken::FromString("  0123456789abcdef\n").ok());
  std::string path = ::testing::TempDir() + "/token-" + std::to_string(::getpid());
  std::FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("0123456789abcdef0123\n", f);
  std::fclose(f);
  ::chmod(path.c_str(), 0644);
  EXPECT_EQ(AuthToken::LoadFile(path).status().code(), StatusCode::kPermissionDenied);
  ::chmod(path.c_str(), 0600);
  EXPECT_TRUE(AuthToken::LoadFile(path).ok());
  ::unlink(path.c_str());
  EXPECT_EQ(AuthToken::LoadFile(path).status().code(), StatusCode::kNotFound);
}

TEST(AuthToken, PeerIpOfGrpcPeers) {
  EXPECT_EQ(PeerIp("ipv4:10.1.2.3:4567"), "10.1.2.3");
  EXPECT_EQ(PeerIp("ipv6:[::1]:80"), "::1");
  EXPECT_EQ(PeerIp("ipv6:[::ffff:127.0.0.1]:80"), "127.0.0.1");
  EXPECT_EQ(PeerIp("unix:/tmp/x.sock"), "");
  EXPECT_EQ(PeerIp(""), "");
}

}  // namespace
}  // namespace df
