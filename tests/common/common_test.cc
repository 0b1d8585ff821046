// Specifications of the common library: ids, piece math, CRC32C, sizes, digests.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>

#include <string>
#include <vector>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/ids.h"
#include "common/malloc_tuning.h"
#include "common/piece.h"
#include "common/units.h"

namespace df {
namespace {

TEST(Crc32c, MatchesPublishedVectors) {
  // RFC 3720 (iSCSI) appendix B.4 and the classic "123456789" check value.
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  std::string ones(32, '\xff');
  EXPECT_EQ(Crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  std::string inc(32, 0);
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(inc.data(), inc.size()), 0x46DD794Eu);
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(Crc32c, ExtendEqualsWhole) {
  std::string s = "The quick brown fox jumps over the lazy dog, many times over and over";
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    uint32_t c = Crc32cExtend(Crc32c(s.data(), cut), s.data() + cut, s.size() - cut);
    ASSERT_EQ(c, Crc32c(s.data(), s.size())) << cut;
  }
}

// The table implementation, byte by byte: the reference the fast path is checked against.
uint32_t Crc32cReference(uint32_t crc, const uint8_t* p, size_t n) {
  crc = ~crc;
  while (n--) {
    crc ^= *p++;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}

// Long inputs take the three-stripe path (blocks of 6 KiB joined by shift tables): every length
// around the block boundaries, every misalignment and a few starting CRCs give the reference's
// answer, whole and extended in two parts.
TEST(Crc32c, LongInputsMatchTheBytewiseReference) {
  std::vector<uint8_t> data(64 * 1024 + 64);
  uint64_t x = 0x9E3779B97F4A7C15u;
  for (uint8_t& b : data) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = static_cast<uint8_t>(x);
  }
  std::vector<size_t> lengths = {0,    1,     7,     8,     6143,  6144, 6145,
                                 6151, 12287, 12288, 12289, 20000, 65536};
  for (size_t len : lengths) {
    for (size_t offset : {0, 1, 3, 8}) {
      for (uint32_t start : {0u, 0xFFFFFFFFu, 0x12345678u}) {
        const uint8_t* p = data.data() + offset;
        const uint32_t want = Crc32cReference(start, p, len);
        ASSERT_EQ(Crc32cExtend(start, p, len), want) << len << " " << offset << " " << start;
        const size_t cut = len / 3;
        ASSERT_EQ(Crc32cExtend(Crc32cExtend(start, p, cut), p + cut, len - cut), want)
            << len << " " << offset << " " << start;
      }
    }
  }
}

TEST(TaskId, DependsOnEveryField) {
  TaskIdInput a{"http://o/f", "", "", 0, {}};
  std::string base = TaskId(a);
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base, TaskId(a));
  TaskIdInput b = a;
  b.tag = "t";
  EXPECT_NE(TaskId(b), base);
  b = a;
  b.application = "app";
  EXPECT_NE(TaskId(b), base);
  b = a;
  b.piece_length = 4 * kMiB;
  EXPECT_NE(TaskId(b), base);
  // Field boundaries matter: ("ab","") differs from ("a","b").
  TaskIdInput c{"u", "ab", "", 0, {}}, d{"u", "a", "b", 0, {}};
  EXPECT_NE(TaskId(c), TaskId(d));
}

TEST(TaskId, FilteredQueryParamsDoNotChangeTheId) {
  TaskIdInput a{"http://o/f?a=1&sig=xyz&b=2", "", "", 0, {"sig"}};
  TaskIdInput b{"http://o/f?a=1&sig=other&b=2", "", "", 0, {"sig"}};
  EXPECT_EQ(TaskId(a), TaskId(b));
  EXPECT_EQ(FilterQueryParams("http://o/f?a=1&sig=xyz&b=2", {"sig"}), "http://o/f?a=1&b=2");
  EXPECT_EQ(FilterQueryParams("http://o/f?sig=1", {"sig"}), "http://o/f");
  EXPECT_EQ(FilterQueryParams("http://o/f", {"sig"}), "http://o/f");
}

// Found by fuzz_task_spec: "http://o/f?#x?sig=1" became "http://o/f#x?sig=1", which filtered
// again to "http://o/f#x": a '?' in the fragment was taken for the query.
TEST(TaskId, QuestionMarkInFragmentIsNotAQuery) {
  EXPECT_EQ(FilterQueryParams("http://o/f#x?sig=1", {"sig"}), "http://o/f#x?sig=1");
  EXPECT_EQ(FilterQueryParams("http://o/f?sig=1#x?sig=2", {"sig"}), "http://o/f#x?sig=2");
  EXPECT_EQ(FilterQueryParams("http://o/f?#x?sig=1", {"sig"}), "http://o/f#x?sig=1");
}

TEST(TaskId, FromOciDigest) {
  std::string hex(64, 'a');
  EXPECT_EQ(TaskIdFromDigest("sha256:" + hex), hex);
  EXPECT_EQ(TaskIdFromDigest("sha512:" + hex), "");
  EXPECT_EQ(TaskIdFromDigest("sha256:abc"), "");
}

TEST(PieceLength, PowerOfTwoBetween1And64MiB) {
  EXPECT_EQ(ChoosePieceLength(-1), 1 * kMiB);
  EXPECT_EQ(ChoosePieceLength(0), 1 * kMiB);
  EXPECT_EQ(ChoosePieceLength(100 * kMiB), 1 * kMiB);    // 0.2 MiB -> floor 1
  EXPECT_EQ(ChoosePieceLength(512 * kMiB), 1 * kMiB);    // 1.02 MiB
  EXPECT_EQ(ChoosePieceLength(1024 * kMiB), 2 * kMiB);   // 2.05 MiB
  EXPECT_EQ(ChoosePieceLength(2048 * kMiB), 4 * kMiB);   // 4.1 MiB
  EXPECT_EQ(ChoosePieceLength(4096 * kMiB), 8 * kMiB);   // 8.2 MiB
  EXPECT_EQ(ChoosePieceLength(8000 * kMiB), 16 * kMiB);  // 16 MiB
  EXPECT_EQ(ChoosePieceLength(100000 * kMiB), 64 * kMiB);
  EXPECT_EQ(ChoosePieceLength(1000000 * kMiB), 64 * kMiB);
  for (int64_t s = 1; s < (int64_t{1} << 42); s = s * 3 + 7) {
    uint64_t p = ChoosePieceLength(s);
    ASSERT_TRUE((p & (p - 1)) == 0) << s;
    ASSERT_GE(p, kMinPieceLength);
    ASSERT_LE(p, kMaxPieceLength);
  }
}

TEST(PieceLayout, LastPieceHasTheRemainder) {
  PieceLayout l{10 * kMiB + 5, 4 * kMiB};
  EXPECT_EQ(l.total_pieces(), 3u);
  EXPECT_EQ(l.offset(PieceNumber{2}), 8 * kMiB);
  EXPECT_EQ(l.length(PieceNumber{0}), 4 * kMiB);
  EXPECT_EQ(l.length(PieceNumber{2}), 2 * kMiB + 5);
  PieceLayout exact{8 * kMiB, 4 * kMiB};
  EXPECT_EQ(exact.total_pieces(), 2u);
  EXPECT_EQ(exact.length(PieceNumber{1}), 4 * kMiB);
  PieceLayout empty{0, 4 * kMiB};
  EXPECT_EQ(empty.total_pieces(), 0u);
}

TEST(PieceLength, Overrides) {
  EXPECT_TRUE(IsValidPieceLength(4 * kMiB));
  EXPECT_TRUE(IsValidPieceLength(64 * 1024));
  EXPECT_FALSE(IsValidPieceLength(3 * kMiB));
  EXPECT_FALSE(IsValidPieceLength(0));
  EXPECT_FALSE(IsValidPieceLength(2048 * kMiB));
}

// A size or a rate has at most 3 digits before the point, so a progress line keeps its width
// when a rate crosses a unit's end (1019.0 KiB/s once pushed the bar out of a 40-column line).
TEST(Units, FormatBytesKeepsThreeDigitsBeforeThePoint) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(999), "999 B");
  EXPECT_EQ(FormatBytes(1000), "1.0 KiB");
  EXPECT_EQ(FormatBytes(999.9 * 1024), "999.9 KiB");
  EXPECT_EQ(FormatBytes(1019.0 * 1024), "1.0 MiB");
  EXPECT_EQ(FormatBytes(12.0 * 1024 * 1024), "12.0 MiB");
  EXPECT_EQ(FormatBytes(1.5 * 1024 * 1024 * 1024), "1.5 GiB");
  EXPECT_EQ(FormatBytes(2048.0 * 1024 * 1024 * 1024 * 1024), "2048.0 TiB");  // the last unit
}

TEST(Units, ParsesSizesRatesAndDurations) {
  EXPECT_EQ(ParseSize("512MiB").value(), 512 * kMiB);
  EXPECT_EQ(ParseSize("1G").value(), 1024 * kMiB);
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("1.5k").value(), 1536u);
  EXPECT_FALSE(ParseSize("lots").ok());
  EXPECT_FALSE(ParseSize("12 parsecs").ok());
  EXPECT_FALSE(ParseSize("-5M").ok());
  EXPECT_EQ(ParseRateBytesPerSec("200mbit").value(), 25000000u);
  EXPECT_EQ(ParseRateBytesPerSec("1gbit").value(), 125000000u);
  EXPECT_FALSE(ParseRateBytesPerSec("200").ok());
  // Found by review, confirmed by fuzz_daemon_config under UBSan: converting 1.25e31 bytes/s to
  // uint64_t was undefined.
  EXPECT_FALSE(ParseRateBytesPerSec("99999999999999999999999gbit").ok());
  EXPECT_EQ(ParseRateBytesPerSec("8000000000000000000bit").value(), 1000000000000000000u);
  EXPECT_EQ(ParseDurationMs("30s").value(), 30000u);
  EXPECT_EQ(ParseDurationMs("250ms").value(), 250u);
  EXPECT_EQ(ParseDurationMs("2m").value(), 120000u);
  // Found by fuzz_scheduler_config: schedule_timeout=108008008008002 (seconds) overflowed the
  // nanoseconds of a steady_clock time point it was compared with.
  EXPECT_EQ(ParseDurationMs("876000h").value(), kMaxDurationMs);
  EXPECT_FALSE(ParseDurationMs("876001h").ok());
  EXPECT_FALSE(ParseDurationMs("108008008008002").ok());
  EXPECT_FALSE(ParseDurationMs(std::string(400, '9')).ok());
}

TEST(Digest, ParsesSha256AndRejectsTheRest) {
  std::string hex(64, 'A');
  auto d = ParseDigest("sha256:" + hex);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->hex, std::string(64, 'a'));
  EXPECT_FALSE(ParseDigest("md5:abc").ok());
  EXPECT_FALSE(ParseDigest("sha256:xyz").ok());
  EXPECT_FALSE(ParseDigest("nocolon").ok());
  Sha256 h;
  h.Update("abc", 3);
  EXPECT_EQ(h.FinalHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace df

namespace {

long MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// Allocates `blocks` blocks of 1 MiB, writes every page, frees them all; `rounds` times.
// Returns the minor page faults of every round after the first.
long FaultsOfReuse(int blocks, int rounds) {
  long later = 0;
  for (int round = 0; round < rounds; ++round) {
    const long before = MinorFaults();
    std::vector<char*> held;
    for (int i = 0; i < blocks; ++i) {
      auto* p = static_cast<char*>(std::malloc(1 << 20));
      std::memset(p, round + 1, 1 << 20);
      held.push_back(p);
    }
    for (char* p : held) std::free(p);
    if (round > 0) later += MinorFaults() - before;
  }
  return later;
}

}  // namespace

// dfinference's forward allocates and frees megabytes of tensors per call; with glibc's
// defaults the freed top of the heap was returned to the kernel and faulted in again every call.
// With the thresholds raised, blocks freed once are reused without a page fault: 20 rounds of
// 8 MiB would fault 2,048 pages each if they were unmapped or trimmed in between.
TEST(MallocTuning, FreedLargeBlocksAreReusedWithoutPageFaults) {
  ASSERT_TRUE(df::KeepLargeBuffersInHeap());
  const long faults = FaultsOfReuse(8, 20);
  EXPECT_LT(faults, 19 * 2048 / 10) << "pages faulted in again after the first round";
}

TEST(MallocTuning, ValuesGlibcCannotTakeAreRefused) {
  EXPECT_FALSE(df::KeepLargeBuffersInHeap(size_t{1} << 40, size_t{256} << 20));
  EXPECT_TRUE(df::KeepLargeBuffersInHeap());
}
