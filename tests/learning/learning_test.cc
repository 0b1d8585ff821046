// df_learning as a specification: the records dataset read back (RFC 4180, header-driven, bad
// rows counted), the host graph, the feature contract (shapes, determinism, no leakage), the
// history baseline and the synthetic generator.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/harness.h"
#include "learning/csv.h"
#include "learning/dataset.h"
#include "learning/evaluation.h"
#include "learning/features.h"
#include "learning/host_graph.h"
#include "learning/synthetic.h"
#ifdef DF_HAVE_SCHEDULER
#include "scheduler/dataset_writer.h"
#endif

namespace df::learning {
namespace {

std::vector<std::vector<std::string>> ParseCsv(const std::string& text, size_t chunk,
                                               uint64_t* bad = nullptr, CsvLimits limits = {}) {
  std::vector<std::vector<std::string>> rows;
  CsvReader reader([&](const std::vector<std::string>& f) { rows.push_back(f); }, limits);
  for (size_t i = 0; i < text.size(); i += chunk) reader.Feed(text.substr(i, chunk));
  reader.Finish();
  if (bad != nullptr) *bad = reader.bad_records();
  return rows;
}

using Rows = std::vector<std::vector<std::string>>;

TEST(CsvReader, ParsesQuotedFieldsWithCommasQuotesAndNewlinesInAnyChunking) {
  const std::string text = "a,\"b,1\",\"say \"\"hi\"\"\"\r\n\"multi\nline\",,x\nlast,row";
  const Rows want = {{"a", "b,1", "say \"hi\""}, {"multi\nline", "", "x"}, {"last", "row"}};
  for (size_t chunk : {1, 2, 3, 7, 1000}) EXPECT_EQ(ParseCsv(text, chunk), want) << chunk;
}

TEST(CsvReader, SkipsAndCountsBadRecordsThenContinues) {
  uint64_t bad = 0;
  const std::string text =
      "ok,1\n"
      "stray\"quote,2\n"
      "\"closed\"junk,3\n"
      "ok,4\n"
      "\"never closed,5\n";
  EXPECT_EQ(ParseCsv(text, 5, &bad), (Rows{{"ok", "1"}, {"ok", "4"}}));
  EXPECT_EQ(bad, 3u);
}

TEST(CsvReader, BoundsFieldsRecordsAndFieldCounts) {
  CsvLimits limits;
  limits.max_field_bytes = 8;
  limits.max_fields = 3;
  limits.max_record_bytes = 32;
  uint64_t bad = 0;
  const std::string text =
      "123456789,a\n"
      "a,b,c,d\n"
      "\"" +
      std::string(100, 'x') + "\",\"a\nb\"\n" + "fine,row\n";
  EXPECT_EQ(ParseCsv(text, 4, &bad, limits), (Rows{{"fine", "row"}}));
  EXPECT_EQ(bad, 3u);
}

HostRecord Host(const std::string& id, const std::string& ip, const std::string& idc) {
  HostRecord h;
  h.id = id;
  h.ip = ip;
  h.idc = idc;
  h.location = "cn|r|" + idc;
  h.announced_upload_bytes_per_sec = 125'000'000;
  h.learned_upload_bytes_per_sec = 100'000'000;
  h.learned_download_bytes_per_sec = 90'000'000;
  return h;
}

Status FeedAll(FileKind kind, Dataset* d, const std::string& text, size_t chunk = 13) {
  DatasetFileReader reader(kind, d);
  for (size_t i = 0; i < text.size(); i += chunk)
    DF_RETURN_IF_ERROR(reader.Feed(text.substr(i, chunk)));
  return reader.Finish();
}

#ifdef DF_HAVE_SCHEDULER
// The reader parses exactly what the scheduler's DatasetWriter writes, hostile ids included.
TEST(DatasetFileReader, ReadsTheSchedulersOwnDownloadLines) {
  scheduler::DownloadRow row;
  row.unix_ms = 1234;
  row.task_id = "t";
  row.child = {"child,\"evil\"\nid", "10.0.0.1", "rack-a", "cn|r|z", false, 1, 2, 3, 4};
  row.parent = {"parent", "10.0.0.2", "rack-b", "cn|r|y", true, 5, 6, 7, 8};
  row.piece_length_bytes = 4 << 20;
  row.cost_ns = 40'000'000;
  std::string text = std::string(scheduler::DownloadCsvHeader()) + "\n" +
                     scheduler::DownloadCsvLine(row) + scheduler::DownloadCsvLine(row);
  EXPECT_EQ(scheduler::DownloadCsvHeader(), DownloadCsvHeader());
  EXPECT_EQ(scheduler::NetworkTopologyCsvHeader(), NetworkTopologyCsvHeader());
  Dataset d;
  ASSERT_TRUE(FeedAll(FileKind::kDownload, &d, text, 5).ok());
  EXPECT_EQ(d.stats().download_rows, 2u);
  EXPECT_EQ(d.stats().bad_rows, 0u);
  ASSERT_EQ(d.hosts().size(), 2u);
  const HostRecord& child = d.hosts().at("child,\"evil\"\nid");
  EXPECT_EQ(child.idc, "rack-a");
  EXPECT_EQ(child.learned_download_bytes_per_sec, 4u);
  EXPECT_TRUE(d.hosts().at("parent").seed);
  const TransferRecord& t = d.transfers().at({"child,\"evil\"\nid", "parent"});
  EXPECT_EQ(t.pieces, 2u);
  EXPECT_NEAR(t.bandwidth_bytes_per_sec(), (4 << 20) / 0.04, 1);
}
#endif

TEST(DatasetFileReader, HeaderDrivenBadRowsCountedNeverFatal) {
  // Reordered columns, an extra one, and bad rows of every kind.
  const std::string text =
      "cost_ns,extra,parent_host_id,child_host_id,piece_length_bytes,time_unix_ms\n"
      "1000000,x,p,c,1000,5\n"
      "0,x,p,c,1000,5\n"           // cost 0
      "1000000,x,p,p,1000,5\n"     // a host with itself
      "12abc,x,p,c,1000,5\n"       // not a number
      "1000000,x,p\n"              // short
      "1000000,x,,c,1000,5\n"      // empty id
      "1,x,p,c,1000000000000,5\n"  // 10^21 B/s
      "2000000,x,p,c,1000,7\n";
  Dataset d;
  ASSERT_TRUE(FeedAll(FileKind::kDownload, &d, text).ok());
  EXPECT_EQ(d.stats().download_rows, 2u);
  EXPECT_EQ(d.stats().bad_rows, 6u);
  EXPECT_NEAR(d.transfers().at({"c", "p"}).bandwidth_bytes_per_sec(), 2000 / 3e-3, 1e-6);
}

TEST(DatasetFileReader, RefusesAHeaderWithoutRequiredColumns) {
  Dataset d;
  Status s = FeedAll(FileKind::kDownload, &d, "time_unix_ms,child_host_id\n1,c\n");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  Status t = FeedAll(FileKind::kNetworkTopology, &d, "\x01\x02garbage\xff\n");
  EXPECT_EQ(t.code(), StatusCode::kInvalidArgument);
}

TEST(Dataset, BoundsRowsAndHosts) {
  DatasetLimits limits;
  limits.max_rows = 3;
  limits.max_hosts = 3;
  Dataset d(limits);
  EXPECT_TRUE(d.AddDownload(Host("a", "", ""), Host("b", "", ""), 1, 1, 0));
  EXPECT_FALSE(d.AddDownload(Host("c", "", ""), Host("d", "", ""), 1, 1, 0));  // 4 hosts
  EXPECT_TRUE(d.AddDownload(Host("c", "", ""), Host("a", "", ""), 1, 1, 0));
  EXPECT_TRUE(d.AddDownload(Host("c", "", ""), Host("b", "", ""), 1, 1, 0));
  EXPECT_FALSE(d.AddDownload(Host("a", "", ""), Host("b", "", ""), 1, 1, 0));  // 4 rows
  EXPECT_EQ(d.hosts().size(), 3u);
  EXPECT_EQ(d.stats().dropped_rows, 2u);
}

TEST(Dataset, ReadsADirectoryOfLiveAndRotatedFiles) {
  bench::TempDir dir;
  SyntheticOptions o;
  o.idcs = 1;
  o.racks_per_idc = 2;
  o.hosts_per_rack = 5;
  ASSERT_TRUE(WriteSyntheticDir(o, dir.path()).ok());
  // A rotated copy counts too (its pieces add up); other files are ignored.
  std::filesystem::copy_file(dir.path() + "/download.csv", dir.path() + "/download-1.csv");
  std::ofstream(dir.path() + "/notes.txt") << "ignored";
  auto d = ReadDatasetDir(dir.path());
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  const auto synthetic = GenerateSynthetic(o);
  EXPECT_EQ((*d)->hosts().size(), 10u);
  EXPECT_EQ((*d)->transfers().size(), synthetic.transfers);
  EXPECT_EQ((*d)->stats().download_rows, 2 * synthetic.transfers * o.pieces_per_pair);
  EXPECT_EQ((*d)->stats().bad_rows, 0u);
  EXPECT_GT((*d)->probes().size(), 0u);
  EXPECT_EQ(ReadDatasetDir(dir.path() + "/missing").status().code(), StatusCode::kNotFound);
}

// A small graph: c downloads from p (the pair), both exchange with others, a probe c-p.
Dataset SmallDataset(uint64_t pair_cost_ns) {
  Dataset d;
  auto c = Host("c", "10.0.0.1", "r1"), p = Host("p", "10.0.0.2", "r1");
  auto x = Host("x", "10.0.1.1", "r2"), y = Host("y", "10.0.1.2", "r2");
  EXPECT_TRUE(d.AddDownload(c, p, 1'000'000, pair_cost_ns, 1));  // the label
  EXPECT_TRUE(d.AddDownload(c, x, 1'000'000, 20'000'000, 1));
  EXPECT_TRUE(d.AddDownload(x, p, 1'000'000, 30'000'000, 1));
  EXPECT_TRUE(d.AddDownload(y, p, 1'000'000, 40'000'000, 1));
  EXPECT_TRUE(d.AddDownload(y, c, 1'000'000, 50'000'000, 1));
  EXPECT_TRUE(d.AddProbe(c, p, 100'000, 3, 1));
  EXPECT_TRUE(d.AddProbe(x, y, 200'000, 3, 1));
  return d;
}

InputBatch Inputs(const Dataset& d, const std::string& child, const std::string& parent,
                  uint64_t seed = kDefaultSamplingSeed) {
  HostGraph g = HostGraph::Build(d);
  FeatureBuilder fb(g, seed);
  InputBatch b;
  fb.Append(*g.Find(child), *g.Find(parent), &b);
  return b;
}

TEST(FeatureBuilder, ShapesFollowTheContract) {
  EXPECT_EQ(InputShape(0), (std::vector<int64_t>{2, kHostFeatures}));
  EXPECT_EQ(InputShape(4), (std::vector<int64_t>{2, kHop1, kHop2, kHostFeatures}));
  EXPECT_EQ(InputShape(7), (std::vector<int64_t>{kEdgeFeatures}));
  Dataset d = SmallDataset(10'000'000);
  InputBatch b = Inputs(d, "c", "p");
  HostGraph g = HostGraph::Build(d);
  FeatureBuilder fb(g);
  fb.Append(*g.Find("x"), *g.Find("y"), &b);
  EXPECT_EQ(b.batch, 2);
  for (int i = 0; i < kNumInputs; ++i) EXPECT_EQ(b.data[i].size(), 2u * InputSize(i)) << i;
  // c's neighbours without p: x and y; masks say so, padding is zero.
  const float* mask = b.data[3].data();
  EXPECT_EQ(mask[0] + mask[1] + mask[2], 2.0f);
  EXPECT_EQ(mask[2], 0.0f);
  const float* hop1 = b.data[1].data();
  for (int f = 0; f < kHostFeatures; ++f) EXPECT_EQ(hop1[2 * kHostFeatures + f], 0.0f);
  EXPECT_EQ(hop1[kHostFeatures - 1], 1.0f);  // the real-host slot
  // Pair edge: probed, same idc, same location, same /24, transfers hidden.
  const float* pair = b.data[7].data();
  EXPECT_EQ(pair[0], 1.0f);
  EXPECT_EQ(pair[2], 1.0f);
  EXPECT_EQ(pair[3], 1.0f);
  EXPECT_EQ(pair[4], 1.0f);
  EXPECT_EQ(pair[5] + pair[6] + pair[7] + pair[8], 0.0f);
  EXPECT_EQ(pair[9], 1.0f);  // b is the other end
  EXPECT_EQ(pair[kEdgeFeatures - 1], 1.0f);
  // c's neighbours x and y sit in another rack than p (the other end): slots 9 and 10 are 0;
  // p's neighbours x and y, seen from p's tree, are not in c's rack either.
  const float* edges = b.data[2].data();
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(edges[j * kEdgeFeatures + 9], 0.0f);
    EXPECT_EQ(edges[j * kEdgeFeatures + 10], 0.0f);
    EXPECT_EQ(edges[j * kEdgeFeatures + kEdgeFeatures - 1], 1.0f);
  }
}

TEST(FeatureBuilder, DeterministicForASeed) {
  auto o = SyntheticOptions();
  o.idcs = 1;
  o.racks_per_idc = 3;
  o.hosts_per_rack = 20;
  const auto s = GenerateSynthetic(o);
  Dataset d;
  ASSERT_TRUE(FeedAll(FileKind::kDownload, &d, s.download_csv, 4096).ok());
  ASSERT_TRUE(FeedAll(FileKind::kNetworkTopology, &d, s.topology_csv, 4096).ok());
  const auto& [child, parent] = d.transfers().begin()->first;
  InputBatch a = Inputs(d, child, parent), b = Inputs(d, child, parent);
  for (int i = 0; i < kNumInputs; ++i) EXPECT_EQ(a.data[i], b.data[i]);
  InputBatch other = Inputs(d, child, parent, 99);
  bool differs = false;
  for (int i = 0; i < kNumInputs; ++i) differs |= a.data[i] != other.data[i];
  EXPECT_TRUE(differs) << "another seed samples other neighbours";
}

TEST(FeatureBuilder, NoLeakageOfThePairsOwnBandwidth) {
  // Only the pair's label differs between the two datasets: every input must be identical.
  InputBatch fast = Inputs(SmallDataset(1'000'000), "c", "p");
  InputBatch slow = Inputs(SmallDataset(900'000'000), "c", "p");
  for (int i = 0; i < kNumInputs; ++i) EXPECT_EQ(fast.data[i], slow.data[i]) << kInputNames[i];
  // Whereas the inputs of another pair that sees c -> p do change.
  EXPECT_NE(Inputs(SmallDataset(1'000'000), "y", "p").data[1],
            Inputs(SmallDataset(900'000'000), "y", "p").data[1]);
}

TEST(HoldOut, SplitIsByUnorderedPairAndStable) {
  int held = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string a = "a" + std::to_string(i), b = "b" + std::to_string(i);
    EXPECT_EQ(IsHeldOutPair(a, b, 7, 0.2), IsHeldOutPair(b, a, 7, 0.2));
    held += IsHeldOutPair(a, b, 7, 0.2);
  }
  EXPECT_GT(held, 150);
  EXPECT_LT(held, 250);
}

TEST(HistoryBaseline, PairThenHostsThenGlobal) {
  Dataset d = SmallDataset(10'000'000);
  HostGraph g = HostGraph::Build(d);
  HistoryBaseline h(g);
  auto at = [&](const char* c, const char* p) { return h.Predict(*g.Find(c), *g.Find(p)); };
  EXPECT_NEAR(at("c", "p"), 1e8, 1);                               // seen
  EXPECT_NEAR(at("x", "c"), std::min(1e6 / 0.03, 1e6 / 0.05), 1);  // x's download, c's upload
  HostGraph held = HostGraph::Build(d, [](const std::string&, const std::string&) { return true; });
  EXPECT_EQ(HistoryBaseline(held).Predict(*held.Find("c"), *held.Find("p")), 0.0);
}

TEST(ComputeErrors, MapeMaeRmse) {
  const std::vector<double> predicted = {110, 90, 200}, actual = {100, 100, 100};
  ErrorMetrics m = ComputeErrors(predicted, actual);
  EXPECT_NEAR(m.mape, (0.1 + 0.1 + 1.0) / 3, 1e-12);
  EXPECT_NEAR(m.mae, 40, 1e-12);
  EXPECT_NEAR(m.rmse, std::sqrt((100 + 100 + 10000) / 3.0), 1e-9);
}

TEST(Synthetic, ThousandHostsWithStructure) {
  const auto s = GenerateSynthetic(SyntheticOptions());
  EXPECT_GE(s.hosts, 1000u);
  Dataset d;
  ASSERT_TRUE(FeedAll(FileKind::kDownload, &d, s.download_csv, 1 << 20).ok());
  EXPECT_EQ(d.stats().bad_rows, 0u);
  EXPECT_EQ(d.transfers().size(), s.transfers);
  // Cross-rack transfers are slower than in-rack ones on average (thin uplinks).
  double in = 0, cross = 0;
  int n_in = 0, n_cross = 0;
  for (const auto& [pair, t] : d.transfers()) {
    const bool same = d.hosts().at(pair.first).idc == d.hosts().at(pair.second).idc;
    (same ? in : cross) += std::log(t.bandwidth_bytes_per_sec());
    ++(same ? n_in : n_cross);
  }
  EXPECT_GT(in / n_in, cross / n_cross);
}

}  // namespace
}  // namespace df::learning
