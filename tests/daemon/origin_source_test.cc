// OriginSource against a real nginx origin: a piece by a ranged GET lands in place with its
// checksums, the whole object streams piece by piece, a stop cuts a transfer, and an origin
// that cannot be reached is tried with backoff before it is an error.
#include "daemon/origin_source.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <vector>

#include "common/crc32c.h"
#include "common/digest.h"
#include "engine_fixture.h"

namespace df::testing {
namespace {

constexpr uint64_t kSize = 10 * kMiB + 123;  // three pieces of 4 MiB, the last one short

class OriginSourceTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineTest::SetUp();
    StartOrigin(kSize);
    TaskMeta meta{.task_id = "origin-source-test",
                  .content_length = static_cast<int64_t>(kSize),
                  .piece_length = kPiece};
    storage_ = store_->OpenTask(meta).value();
    layout_ = storage_->layout();
    std::ifstream in(origin_file(), std::ios::binary);
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
    ASSERT_EQ(bytes_.size(), kSize);
  }

  // The checksums piece `n` of the origin's file has.
  PieceChecksums Expected(PieceNumber n) const {
    const char* p = bytes_.data() + layout_.offset(n);
    const size_t len = layout_.length(n);
    Sha256 sha;
    sha.Update(p, len);
    return {Crc32c(p, len), sha.FinalBytes()};
  }
  // The bytes of piece `n` in the content file.
  std::string InPlace(PieceNumber n) const {
    std::string got(layout_.length(n), '\0');
    EXPECT_EQ(::pread(storage_->content_fd(), got.data(), got.size(),
                      static_cast<off_t>(layout_.offset(n))),
              static_cast<ssize_t>(got.size()));
    return got;
  }
  std::string Original(PieceNumber n) const {
    return std::string(bytes_.data() + layout_.offset(n), layout_.length(n));
  }

  std::shared_ptr<TaskStorage> storage_;
  PieceLayout layout_;
  std::vector<char> bytes_;
};

TEST_F(OriginSourceTest, StatGivesTheSizeAndRangeSupport) {
  OriginSource origin(&backends_, url(), {}, 10000);
  int backoffs = 0;
  auto info = origin.Stat([&](std::chrono::milliseconds) { return ++backoffs > 0; });
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->content_length, static_cast<int64_t>(kSize));
  EXPECT_TRUE(info->supports_range);
  EXPECT_EQ(backoffs, 0);
}

TEST_F(OriginSourceTest, APieceLandsInPlaceWithItsChecksums) {
  OriginSource origin(&backends_, url(), {}, 10000);
  for (uint32_t i : {2u, 0u}) {  // the short last piece, then the first
    const PieceNumber n{i};
    PieceChecksums sums;
    Status s = origin.FetchPiece(
        layout_, n, storage_->content_fd(), storage_.get(), [] { return true; }, &sums);
    ASSERT_TRUE(s.ok()) << s.ToString();
    const PieceChecksums want = Expected(n);
    EXPECT_EQ(sums.crc32c, want.crc32c) << i;
    EXPECT_EQ(sums.sha256, want.sha256) << i;
    EXPECT_TRUE(InPlace(n) == Original(n)) << i;
    // The receive advanced to the whole piece (the piece server forwards from it).
    auto view = storage_->CurrentReceive(n);
    EXPECT_EQ(view.state, TaskStorage::ReceiveView::kReceiving);
    EXPECT_EQ(view.bytes, layout_.length(n));
    storage_->AbandonReceive(n);
  }
  EXPECT_FALSE(storage_->HasPiece(PieceNumber{0}));  // committing is the caller's
}

TEST_F(OriginSourceTest, AStopCutsTheTransfer) {
  OriginSource origin(&backends_, url(), {}, 10000);
  PieceChecksums sums;
  Status s = origin.FetchPiece(
      layout_, PieceNumber{1}, storage_->content_fd(), storage_.get(), [] { return false; }, &sums);
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s.ToString();
  s = origin.StreamWhole(
      layout_, storage_->content_fd(), [] { return false; },
      [](PieceNumber, const PieceChecksums&) { return Status::Ok(); });
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s.ToString();
}

TEST_F(OriginSourceTest, TheWholeObjectStreamsPieceByPieceInOrder) {
  OriginSource origin(&backends_, url(), {}, 10000);
  std::vector<uint32_t> seen;
  Status s = origin.StreamWhole(
      layout_, storage_->content_fd(), [] { return true; },
      [&](PieceNumber n, const PieceChecksums& sums) {
        const PieceChecksums want = Expected(n);
        EXPECT_EQ(sums.crc32c, want.crc32c) << n.value;
        EXPECT_EQ(sums.sha256, want.sha256) << n.value;
        // The piece is in place when it is announced.
        EXPECT_TRUE(InPlace(n) == Original(n)) << n.value;
        seen.push_back(n.value);
        return Status::Ok();
      });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(seen, (std::vector<uint32_t>{0, 1, 2}));

  // An error of the caller's stops the stream with that error.
  s = origin.StreamWhole(
      layout_, storage_->content_fd(), [] { return true; },
      [](PieceNumber, const PieceChecksums&) { return IoError("disk full"); });
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
}

TEST_F(OriginSourceTest, AnObjectShorterThanTheLayoutIsAnErrorAndNoPieceIsAnnounced) {
  // The origin's object shrank since the layout was fixed: the backend refuses the answer
  // (its Content-Range names other bytes) before any byte reaches the content file.
  OriginSource origin(&backends_, url(), {}, 10000);
  PieceLayout longer{kSize + kMiB, kPiece};
  int announced = 0;
  Status s = origin.StreamWhole(
      longer, storage_->content_fd(), [] { return true; },
      [&](PieceNumber, const PieceChecksums&) {
        ++announced;
        return Status::Ok();
      });
  EXPECT_EQ(s.code(), StatusCode::kHttpError) << s.ToString();
  EXPECT_EQ(announced, 0);
}

TEST_F(OriginSourceTest, AnUnreachableOriginIsTriedWithBackoffThenAnError) {
  // Port 1 on loopback: nothing listens (connection refused = Unavailable).
  OriginSource origin(&backends_, "http://127.0.0.1:1/f.bin", {}, 2000);
  std::vector<std::chrono::milliseconds> waits;
  auto info = origin.Stat([&](std::chrono::milliseconds d) {
    waits.push_back(d);  // no sleep: the test only checks the schedule
    return true;
  });
  EXPECT_EQ(info.status().code(), StatusCode::kUnavailable) << info.status().ToString();
  using std::chrono::milliseconds;
  EXPECT_EQ(waits,
            (std::vector<milliseconds>{milliseconds(500), milliseconds(1000), milliseconds(2000)}));

  // A stop during the backoff ends it at once.
  int asked = 0;
  info = origin.Stat([&](std::chrono::milliseconds) { return ++asked < 0; });
  EXPECT_EQ(info.status().code(), StatusCode::kCancelled);
  EXPECT_EQ(asked, 1);
}

TEST_F(OriginSourceTest, AMissingObjectIsNotRetried) {
  OriginSource origin(&backends_, origin_->Url("missing.bin"), {}, 10000);
  int backoffs = 0;
  auto info = origin.Stat([&](std::chrono::milliseconds) { return ++backoffs > 0; });
  EXPECT_EQ(info.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(backoffs, 0);
}

}  // namespace
}  // namespace df::testing
