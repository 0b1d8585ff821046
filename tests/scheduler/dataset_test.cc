// The records dataset (dataset_writer.h): piece reports through the real gRPC service become
// download.csv rows, the probe graph becomes networktopology.csv, files rotate and stay bounded,
// ids from the network survive CSV quoting, and a dir that cannot be written is a metric.
#include "scheduler/dataset_writer.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/ids.h"
#include "scheduler.grpc.pb.h"
#include "scheduler/config.h"
#include "scheduler/memory_store.h"
#include "scheduler/server.h"

namespace df::scheduler {
namespace {

namespace v1 = df::scheduler::v1;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Row = std::vector<std::string>;

// An RFC 4180 reader: quoted fields may hold commas, doubled quotes and newlines.
std::vector<Row> ParseCsv(const std::string& text) {
  std::vector<Row> rows;
  Row row;
  std::string field;
  bool quoted = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
    } else if (c == '\n') {
      row.push_back(std::move(field));
      field.clear();
      rows.push_back(std::move(row));
      row.clear();
    } else {
      field += c;
    }
  }
  EXPECT_TRUE(field.empty() && row.empty()) << "the file ends inside a row";
  return rows;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The rows of a CSV file as column name -> value maps (the header is checked to be first).
std::vector<std::map<std::string, std::string>> ReadTable(const fs::path& path,
                                                          std::string_view header) {
  auto rows = ParseCsv(ReadFile(path));
  std::vector<std::map<std::string, std::string>> table;
  if (rows.empty()) {
    ADD_FAILURE() << path << " is empty";
    return table;
  }
  const Row names = rows[0];
  EXPECT_EQ(ParseCsv(std::string(header) + "\n")[0], names) << path << ": header";
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].size(), names.size()) << path << ": row " << i;
    std::map<std::string, std::string> m;
    for (size_t c = 0; c < names.size() && c < rows[i].size(); ++c) m[names[c]] = rows[i][c];
    table.push_back(std::move(m));
  }
  return table;
}

double MetricValue(prometheus::Registry& registry, const std::string& name,
                   const std::string& label = "") {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      bool match = label.empty();
      for (const auto& l : m.label) match = match || l.value == label;
      if (match) return m.counter.value;
    }
  }
  return -1;
}

std::string TaskIdOf(const std::string& name) {
  return TaskId(TaskIdInput{"http://origin/" + name, "", "", 0, {}});
}

// A peer's AnnouncePeer stream; responses are read and discarded.
class PeerConn {
 public:
  PeerConn(v1::Scheduler::Stub* stub, std::string host_id, std::string peer_id)
      : host_id_(std::move(host_id)), peer_id_(std::move(peer_id)) {
    stream_ = stub->AnnouncePeer(&context_);
    reader_ = std::thread([this] {
      v1::AnnouncePeerResponse r;
      while (stream_->Read(&r)) {
      }
    });
  }
  ~PeerConn() {
    context_.TryCancel();
    reader_.join();
    (void)stream_->Finish();
  }

  void Register() {
    auto r = Request();
    auto* reg = r.mutable_register_();
    reg->set_host_id(host_id_);
    reg->set_peer_id(peer_id_);
    reg->mutable_task()->set_task_id(TaskIdOf("task-1"));
    reg->mutable_task()->set_url("http://origin/task-1");
    reg->mutable_task()->set_content_length(-1);
    ASSERT_TRUE(stream_->Write(r));
  }

  void PieceFinished(uint32_t number, const std::string& parent_id, uint64_t length,
                     uint64_t cost_ns) {
    auto r = Request();
    auto* p = r.mutable_piece_finished();
    p->set_piece_number(number);
    p->set_parent_id(parent_id);
    p->set_length(length);
    p->set_cost_ns(cost_ns);
    ASSERT_TRUE(stream_->Write(r));
  }

 private:
  v1::AnnouncePeerRequest Request() const {
    v1::AnnouncePeerRequest r;
    r.set_host_id(host_id_);
    r.set_task_id(TaskIdOf("task-1"));
    r.set_peer_id(peer_id_);
    return r;
  }

  std::string host_id_, peer_id_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>>
      stream_;
  std::thread reader_;
};

class DatasetGrpcTest : public ::testing::Test {
 protected:
  void StartScheduler(const std::string& dataset_dir) {
    SchedulerConfig config;
    config.listen = "127.0.0.1:0";
    config.metrics = "";
    config.gc_interval_ms = 3600'000;
    config.capacity_prior = 0;
    config.dataset_dir = dataset_dir;
    auto server = SchedulerServer::Start(config, registry_);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Scheduler::NewStub(channel_);
  }

  void AnnounceHost(const std::string& id, const std::string& ip, const std::string& idc,
                    const std::string& location, uint64_t up, uint64_t down,
                    v1::HostType type = v1::HOST_TYPE_NORMAL) {
    v1::AnnounceHostRequest req;
    v1::Host* h = req.mutable_host();
    h->set_id(id);
    h->set_hostname(id);
    h->set_ip(ip);
    h->set_idc(idc);
    h->set_location(location);
    h->set_grpc_port(4000);
    h->set_piece_port(4005);
    h->set_type(type);
    h->set_upload_rate_limit_bytes_per_sec(up);
    h->set_download_rate_limit_bytes_per_sec(down);
    grpc::ClientContext ctx;
    v1::AnnounceHostResponse resp;
    ASSERT_TRUE(stub_->AnnounceHost(&ctx, req, &resp).ok());
  }

  // Sends `n` pieces from peer-a (on `parent_host`) to peer-b (on `child_host`) and waits until
  // the scheduler has taken them in (its records count them).
  void ReportPieces(const std::string& parent_host, const std::string& child_host, uint32_t n) {
    PeerConn a(stub_.get(), parent_host, "peer-a");
    a.Register();
    PeerConn b(stub_.get(), child_host, "peer-b");
    b.Register();
    // The two streams are independent: a record naming peer-a before its register was handled
    // would be dropped (unknown parent), so wait until both are known.
    for (int i = 0; i < 500; ++i) {
      if (scheduler().GetPeer(TaskIdOf("task-1"), "peer-a") &&
          scheduler().GetPeer(TaskIdOf("task-1"), "peer-b")) {
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    for (uint32_t i = 0; i < n; ++i) b.PieceFinished(i, "peer-a", 1 << 20, 10'000'000 + i);
    for (int i = 0; i < 500; ++i) {
      if (scheduler().records().record_count() >= n) break;
      std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(scheduler().records().record_count(), n);
  }

  Scheduler& scheduler() { return server_->scheduler(); }

  bench::TempDir tmp_;
  prometheus::Registry registry_;
  std::unique_ptr<SchedulerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Scheduler::Stub> stub_;
};

TEST_F(DatasetGrpcTest, PieceReportsBecomeDownloadRowsWithBothHostsFeatures) {
  const std::string dir = tmp_.path() + "/dataset";
  StartScheduler(dir);
  // Ids come from the network: a comma, a quote and a newline must survive the CSV.
  const std::string parent = "seed \"one\", rack 2";
  const std::string child = "host,b\nsecond line";
  AnnounceHost(parent, "10.0.0.1", "idc-1", "cn|hz", 125'000'000, 250'000'000, v1::HOST_TYPE_SEED);
  AnnounceHost(child, "10.0.0.2", "idc-2", "cn|sh", 0, 12'500'000);
  ReportPieces(parent, child, 3);
  ASSERT_NE(scheduler().dataset(), nullptr);
  ASSERT_TRUE(scheduler().dataset()->Flush().ok());

  auto rows = ReadTable(dir + "/download.csv", DownloadCsvHeader());
  ASSERT_EQ(rows.size(), 3u);
  const auto& r = rows[0];
  EXPECT_EQ(r.at("task_id"), TaskIdOf("task-1"));
  EXPECT_EQ(r.at("child_host_id"), child);
  EXPECT_EQ(r.at("child_ip"), "10.0.0.2");
  EXPECT_EQ(r.at("child_idc"), "idc-2");
  EXPECT_EQ(r.at("child_location"), "cn|sh");
  EXPECT_EQ(r.at("child_host_type"), "normal");
  EXPECT_EQ(r.at("child_announced_upload_bytes_per_sec"), "0");
  EXPECT_EQ(r.at("child_announced_download_bytes_per_sec"), "12500000");
  EXPECT_EQ(r.at("child_learned_download_bytes_per_sec"), "12500000") << "the announced prior";
  EXPECT_EQ(r.at("parent_host_id"), parent);
  EXPECT_EQ(r.at("parent_ip"), "10.0.0.1");
  EXPECT_EQ(r.at("parent_idc"), "idc-1");
  EXPECT_EQ(r.at("parent_location"), "cn|hz");
  EXPECT_EQ(r.at("parent_host_type"), "seed");
  EXPECT_EQ(r.at("parent_announced_upload_bytes_per_sec"), "125000000");
  EXPECT_EQ(r.at("parent_announced_download_bytes_per_sec"), "250000000");
  EXPECT_EQ(r.at("parent_learned_upload_bytes_per_sec"), "125000000");
  EXPECT_EQ(r.at("piece_length_bytes"), "1048576");
  EXPECT_EQ(r.at("cost_ns"), "10000000");
  EXPECT_EQ(r.at("bandwidth_bytes_per_sec"), "104857600");
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  EXPECT_NEAR(static_cast<double>(std::stoll(r.at("time_unix_ms"))), static_cast<double>(now_ms),
              60'000.0);
  EXPECT_EQ(rows[2].at("cost_ns"), "10000002");
  EXPECT_EQ(MetricValue(registry_, "df_scheduler_dataset_rows_total", "download"), 3);
  EXPECT_EQ(MetricValue(registry_, "df_scheduler_dataset_errors_total"), 0);
}

TEST_F(DatasetGrpcTest, TheWriterThreadWritesWithoutBeingAsked) {
  const std::string dir = tmp_.path() + "/dataset";
  StartScheduler(dir);
  AnnounceHost("host-a", "10.0.0.1", "", "", 0, 0);
  AnnounceHost("host-b", "10.0.0.2", "", "", 0, 0);
  ReportPieces("host-a", "host-b", 2);
  bool written = false;
  for (int i = 0; i < 500 && !written; ++i) {
    written = MetricValue(registry_, "df_scheduler_dataset_rows_total", "download") == 2;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(written);
  EXPECT_EQ(ReadTable(dir + "/download.csv", DownloadCsvHeader()).size(), 2u);
}

TEST_F(DatasetGrpcTest, AnUnwritableDirIsAnErrorMetricNotACrash) {
  // A regular file where the dir should be: mkdir fails (even for root).
  const std::string blocker = tmp_.path() + "/not-a-dir";
  std::ofstream(blocker) << "x";
  const std::string dir = blocker + "/dataset";
  StartScheduler(dir);
  AnnounceHost("host-a", "10.0.0.1", "", "", 0, 0);
  AnnounceHost("host-b", "10.0.0.2", "", "", 0, 0);
  ReportPieces("host-a", "host-b", 2);
  (void)scheduler().dataset()->Flush();  // it, or the writer thread before it, fails
  EXPECT_GE(MetricValue(registry_, "df_scheduler_dataset_errors_total"), 1);
  EXPECT_EQ(MetricValue(registry_, "df_scheduler_dataset_rows_total", "download"), 0);
  EXPECT_TRUE(scheduler().StatTask(TaskIdOf("task-1")).ok()) << "scheduling goes on";

  // Once the dir can be made, rows written after that land.
  fs::remove(blocker);
  scheduler().dataset()->Add(DownloadRow{1, "t", {}, {}, 100, 1000});
  ASSERT_TRUE(scheduler().dataset()->Flush().ok());
  EXPECT_EQ(ReadTable(dir + "/download.csv", DownloadCsvHeader()).size(), 1u);
}

// ---------------------------------------------------------------------------------------------
// The writer alone, with a memory store.

class DatasetWriterTest : public ::testing::Test {
 protected:
  std::unique_ptr<DatasetWriter> Writer(DatasetWriter::Options options) {
    return std::make_unique<DatasetWriter>(std::move(options), &store_, metrics_);
  }
  double Metric(const std::string& name, const std::string& label = "") {
    return MetricValue(registry_, name, label);
  }

  static DownloadRow RowAt(int64_t unix_ms) {
    DownloadRow row;
    row.unix_ms = unix_ms;
    row.task_id = "task";
    row.child.id = "child";
    row.parent.id = "parent";
    row.piece_length_bytes = 4 << 20;
    row.cost_ns = 1'000'000;
    return row;
  }

  bench::TempDir tmp_;
  MemoryStore store_;
  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>& rows_ = prometheus::BuildCounter()
                                                       .Name("df_scheduler_dataset_rows_total")
                                                       .Help("rows")
                                                       .Register(registry_);
  DatasetWriter::Metrics metrics_{rows_.Add({{"file", "download"}}),
                                  rows_.Add({{"file", "networktopology"}}),
                                  prometheus::BuildCounter()
                                      .Name("df_scheduler_dataset_errors_total")
                                      .Help("errors")
                                      .Register(registry_)
                                      .Add({}),
                                  prometheus::BuildCounter()
                                      .Name("df_scheduler_dataset_dropped_rows_total")
                                      .Help("dropped")
                                      .Register(registry_)
                                      .Add({})};
};

TEST_F(DatasetWriterTest, RotationKeepsAtMostMaxFilesAndTheNewestRows) {
  DatasetWriter::Options options;
  options.dir = tmp_.path();
  options.max_file_size_bytes = 2'000;
  options.max_files = 3;
  auto writer = Writer(options);
  constexpr int kRows = 200;
  for (int i = 0; i < kRows; ++i) {
    writer->Add(RowAt(1'000 + i));
    if (i % 7 == 0) {
      ASSERT_TRUE(writer->Flush().ok());
    }
  }
  ASSERT_TRUE(writer->Flush().ok());

  std::vector<fs::path> rotated;
  for (const auto& e : fs::directory_iterator(tmp_.path())) {
    const std::string name = e.path().filename().string();
    if (name != "download.csv") rotated.push_back(e.path());
    EXPECT_LE(fs::file_size(e.path()), options.max_file_size_bytes) << name;
  }
  ASSERT_EQ(rotated.size(), 3u) << "max_files rotated files and the live one";
  std::sort(rotated.begin(), rotated.end());
  rotated.push_back(fs::path(tmp_.path()) / "download.csv");
  // Oldest file first, the rows are contiguous and end with the newest.
  std::vector<int64_t> times;
  for (const auto& path : rotated) {
    EXPECT_TRUE(path.filename().string().starts_with("download")) << path;
    for (const auto& row : ReadTable(path, DownloadCsvHeader())) {
      times.push_back(std::stoll(row.at("time_unix_ms")));
    }
  }
  ASSERT_FALSE(times.empty());
  EXPECT_EQ(times.back(), 1'000 + kRows - 1);
  for (size_t i = 1; i < times.size(); ++i) EXPECT_EQ(times[i], times[i - 1] + 1);
  EXPECT_LT(times.size(), static_cast<size_t>(kRows)) << "the oldest rows were deleted";
  EXPECT_EQ(Metric("df_scheduler_dataset_rows_total", "download"), kRows);
}

TEST_F(DatasetWriterTest, ARestartedWriterContinuesTheLiveFile) {
  DatasetWriter::Options options;
  options.dir = tmp_.path();
  {
    auto writer = Writer(options);
    writer->Add(RowAt(1));
    writer->Start();
  }  // Stop writes what is queued
  auto writer = Writer(options);
  writer->Add(RowAt(2));
  ASSERT_TRUE(writer->Flush().ok());
  auto rows = ReadTable(tmp_.path() + "/download.csv", DownloadCsvHeader());
  ASSERT_EQ(rows.size(), 2u) << "one header, both rows";
  EXPECT_EQ(rows[1].at("time_unix_ms"), "2");
}

TEST_F(DatasetWriterTest, AFullQueueDropsAndCounts) {
  DatasetWriter::Options options;
  options.dir = tmp_.path();
  options.max_queued_rows = 4;
  auto writer = Writer(options);
  int accepted = 0;
  for (int i = 0; i < 6; ++i) accepted += writer->Add(RowAt(i)) ? 1 : 0;
  EXPECT_EQ(accepted, 4);
  EXPECT_EQ(Metric("df_scheduler_dataset_dropped_rows_total"), 2);
  ASSERT_TRUE(writer->Flush().ok());
  EXPECT_EQ(ReadTable(tmp_.path() + "/download.csv", DownloadCsvHeader()).size(), 4u);
}

TEST_F(DatasetWriterTest, TopologySnapshotHasOneRowPerProbedEdgeWithHostFeatures) {
  v1::Host a;
  a.set_id("host \"a\", 1");
  a.set_ip("10.0.0.1");
  a.set_idc("idc-1");
  a.set_location("cn|hz");
  v1::Host b;
  b.set_id("host-b");
  b.set_ip("10.0.0.2");
  b.set_idc("idc-2");
  ASSERT_TRUE(store_.PutHost(a, 1).ok());
  ASSERT_TRUE(store_.PutHost(b, 1).ok());
  ASSERT_TRUE(store_.AddProbe(a.id(), b.id(), {1'000'000, 10}, 5).ok());
  ASSERT_TRUE(store_.AddProbe(a.id(), b.id(), {3'000'000, 20}, 5).ok());
  ASSERT_TRUE(store_.AddProbe(b.id(), a.id(), {500'000, 30}, 5).ok());

  DatasetWriter::Options options;
  options.dir = tmp_.path();
  auto writer = Writer(options);
  ASSERT_TRUE(writer->WriteTopology().ok());
  auto rows = ReadTable(tmp_.path() + "/networktopology.csv", NetworkTopologyCsvHeader());
  ASSERT_EQ(rows.size(), 2u);
  std::sort(rows.begin(), rows.end(),
            [](const auto& x, const auto& y) { return x.at("src_host_id") < y.at("src_host_id"); });
  const auto& ab = rows[0];
  EXPECT_EQ(ab.at("src_host_id"), a.id());
  EXPECT_EQ(ab.at("src_ip"), "10.0.0.1");
  EXPECT_EQ(ab.at("src_idc"), "idc-1");
  EXPECT_EQ(ab.at("src_location"), "cn|hz");
  EXPECT_EQ(ab.at("dst_host_id"), "host-b");
  EXPECT_EQ(ab.at("dst_ip"), "10.0.0.2");
  EXPECT_EQ(ab.at("dst_idc"), "idc-2");
  EXPECT_EQ(ab.at("average_rtt_ns"), "2800000");  // 0.1 x 1 ms + 0.9 x 3 ms
  EXPECT_EQ(ab.at("samples"), "2");
  EXPECT_EQ(ab.at("created_unix_ms"), "10");
  EXPECT_EQ(ab.at("updated_unix_ms"), "20");
  EXPECT_EQ(rows[1].at("average_rtt_ns"), "500000");
  EXPECT_EQ(Metric("df_scheduler_dataset_rows_total", "networktopology"), 2);
}

TEST_F(DatasetWriterTest, TheThreadWritesTheTopologyEveryInterval) {
  v1::Host a;
  a.set_id("a");
  ASSERT_TRUE(store_.PutHost(a, 1).ok());
  ASSERT_TRUE(store_.AddProbe("a", "b", {1'000, 1}, 5).ok());
  DatasetWriter::Options options;
  options.dir = tmp_.path();
  options.topology_interval = 50ms;
  options.flush_interval = 10ms;
  auto writer = Writer(options);
  writer->Start();
  for (int i = 0; i < 500 && Metric("df_scheduler_dataset_rows_total", "networktopology") < 3;
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  writer->Stop();
  EXPECT_GE(ReadTable(tmp_.path() + "/networktopology.csv", NetworkTopologyCsvHeader()).size(), 3u);
}

TEST(CsvFieldTest, QuotesOnlyWhatNeedsIt) {
  EXPECT_EQ(CsvField("plain|text"), "plain|text");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(ParseCsv(CsvField("x,\"y\"\r\nz") + "\n")[0], (Row{"x,\"y\"\r\nz"}));
}

TEST(DatasetConfigTest, OptionsParseWithUnits) {
  SchedulerConfig c;
  EXPECT_TRUE(c.dataset_dir.empty()) << "off by default";
  ASSERT_TRUE(SetOption(c, "dataset-dir", "/var/lib/df/dataset").ok());
  ASSERT_TRUE(SetOption(c, "dataset_max_file_size", "1MiB").ok());
  ASSERT_TRUE(SetOption(c, "dataset-max-files", "3").ok());
  ASSERT_TRUE(SetOption(c, "dataset-topology-interval", "30s").ok());
  EXPECT_EQ(c.dataset_dir, "/var/lib/df/dataset");
  EXPECT_EQ(c.dataset_max_file_size, 1u << 20);
  EXPECT_EQ(c.dataset_max_files, 3u);
  EXPECT_EQ(c.dataset_topology_interval_ms, 30'000u);
  EXPECT_FALSE(SetOption(c, "dataset_max_file_size", "10").ok()) << "too small to hold a row";
}

}  // namespace
}  // namespace df::scheduler
