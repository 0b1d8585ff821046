// The Store contract (scheduler/store.h) as one conformance suite run against every
// implementation: MemoryStore, and RedisStore on a real redis-server that the suite starts on a
// free loopback port. Then what only Redis has: several stores on one Redis, Redis dying and
// coming back, values someone else wrote badly, and Dragonfly's probe key layout.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "scheduler/memory_store.h"
#include "scheduler/redis_store.h"
#include "scheduler/store.h"

namespace df::scheduler {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

v1::Host MakeHost(const std::string& id, const std::string& idc = "idc-a") {
  v1::Host h;
  h.set_id(id);
  h.set_hostname("name-" + id);
  h.set_ip("127.0.0.1");
  h.set_piece_port(4005);
  h.set_idc(idc);
  h.set_upload_rate_limit_bytes_per_sec(125'000'000);
  return h;
}

BandwidthRecord Record(const std::string& child, const std::string& parent, uint64_t bytes) {
  return {child, parent, bytes, /*cost_ns=*/1'000'000 + bytes, /*unix_ms=*/1'700'000'000'000};
}

// A raw hiredis connection, to plant and read keys behind the store's back.
class RawRedis {
 public:
  explicit RawRedis(uint16_t port) : ctx_(redisConnect("127.0.0.1", port)) {}
  ~RawRedis() {
    if (ctx_) redisFree(ctx_);
  }
  bool ok() const { return ctx_ != nullptr && ctx_->err == 0; }
  // The reply as text: a string, "(integer) N", "(nil)", "(error) ...", or "[a,b]" for arrays.
  std::string Run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) return "(connection error)";
    std::string out = Text(r);
    freeReplyObject(r);
    return out;
  }

 private:
  static std::string Text(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_STRING:
      case REDIS_REPLY_STATUS:
        return std::string(r->str, r->len);
      case REDIS_REPLY_INTEGER:
        return "(integer) " + std::to_string(r->integer);
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_ERROR:
        return "(error) " + std::string(r->str, r->len);
      case REDIS_REPLY_ARRAY: {
        std::string out = "[";
        for (size_t i = 0; i < r->elements; ++i) out += (i ? "," : "") + Text(r->element[i]);
        return out + "]";
      }
    }
    return "(unknown)";
  }
  redisContext* ctx_;
};

// ---- Backends of the conformance suite ----

struct MemoryBackend {
  static void SetUpSuite() {}
  static void TearDownSuite() {}
  static Result<std::unique_ptr<Store>> Make() { return NewStore("memory"); }
};

// One redis-server for the whole suite, flushed before each test.
struct RedisBackend {
  static inline std::unique_ptr<bench::RedisServer> server;
  static void SetUpSuite() { server = std::make_unique<bench::RedisServer>(); }
  static void TearDownSuite() { server.reset(); }
  static Result<std::unique_ptr<Store>> Make() {
    if (!server || !server->ok()) return Unavailable("redis-server did not start (installed?)");
    RawRedis raw(server->port());
    if (raw.Run({"FLUSHALL"}) != "OK") return Unavailable("FLUSHALL failed");
    return NewStore(server->Url());
  }
};

template <typename Backend>
class StoreConformance : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { Backend::SetUpSuite(); }
  static void TearDownTestSuite() { Backend::TearDownSuite(); }
  void SetUp() override {
    auto store = Backend::Make();
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }

  std::vector<ProbeEdge> Probes(const std::string& src = "") {
    auto edges = store_->ListProbes(src);
    EXPECT_TRUE(edges.ok()) << edges.status().ToString();
    return edges.ok() ? *edges : std::vector<ProbeEdge>{};
  }
  std::vector<std::string> HostIds() {
    auto hosts = store_->ListHosts();
    EXPECT_TRUE(hosts.ok()) << hosts.status().ToString();
    std::vector<std::string> ids;
    for (const auto& h : hosts.ok() ? *hosts : std::vector<StoredHost>{})
      ids.push_back(h.info.id());
    std::sort(ids.begin(), ids.end());
    return ids;
  }
  static std::vector<std::string> EdgeNames(const std::vector<ProbeEdge>& edges) {
    std::vector<std::string> names;
    for (const auto& e : edges) names.push_back(e.src_host_id + ">" + e.dst_host_id);
    std::sort(names.begin(), names.end());
    return names;
  }

  std::unique_ptr<Store> store_;
};

struct BackendNames {
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, MemoryBackend> ? "Memory" : "Redis";
  }
};
using Backends = ::testing::Types<MemoryBackend, RedisBackend>;
TYPED_TEST_SUITE(StoreConformance, Backends, BackendNames);

TYPED_TEST(StoreConformance, PingsWhenUp) { EXPECT_TRUE(this->store_->Ping().ok()); }

TYPED_TEST(StoreConformance, PutHostAddsAndReplacesById) {
  ASSERT_TRUE(this->store_->PutHost(MakeHost("a"), 100).ok());
  ASSERT_TRUE(this->store_->PutHost(MakeHost("b"), 200).ok());
  ASSERT_TRUE(this->store_->PutHost(MakeHost("a", "idc-z"), 300).ok());

  auto hosts = this->store_->ListHosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 2u);
  for (const auto& h : *hosts) {
    if (h.info.id() == "a") {
      EXPECT_EQ(h.info.idc(), "idc-z");
      EXPECT_EQ(h.updated_unix_ms, 300);
      EXPECT_EQ(h.info.hostname(), "name-a");
      EXPECT_EQ(h.info.upload_rate_limit_bytes_per_sec(), 125'000'000u);
    } else {
      EXPECT_EQ(h.info.id(), "b");
      EXPECT_EQ(h.updated_unix_ms, 200);
    }
  }
}

TYPED_TEST(StoreConformance, AddProbeKeepsTheLastQueueLengthSamplesAndTheirMovingAverage) {
  auto& s = *this->store_;
  for (int i = 1; i <= 7; ++i) {
    ASSERT_TRUE(s.AddProbe("a", "b", {i * 1'000'000LL, 1'700'000'000'000LL + i}, 5).ok());
  }
  auto edges = this->Probes();
  ASSERT_EQ(edges.size(), 1u);
  const ProbeEdge& e = edges[0];
  EXPECT_EQ(e.src_host_id, "a");
  EXPECT_EQ(e.dst_host_id, "b");
  ASSERT_EQ(e.samples.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {  // samples 3..7, oldest first
    EXPECT_EQ(e.samples[i].rtt_ns, static_cast<int64_t>(i + 3) * 1'000'000);
    EXPECT_EQ(e.samples[i].created_unix_ms, 1'700'000'000'000LL + static_cast<int64_t>(i) + 3);
  }
  // 3 ms, then each later sample weighs 0.9 against 0.1 for the average so far (Dragonfly's
  // rule): 3.9, 4.89, 5.889, 6.8889 ms. The plain mean would be 5 ms.
  EXPECT_EQ(e.average_rtt_ns, 6'888'900);
  EXPECT_EQ(e.created_unix_ms, 1'700'000'000'001LL);  // the first sample ever
  EXPECT_EQ(e.updated_unix_ms, 1'700'000'000'007LL);  // the last one
}

TYPED_TEST(StoreConformance, AverageTruncatesLikeIntegerDivision) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.AddProbe("a", "b", {1'000, 1}, 5).ok());
  ASSERT_TRUE(s.AddProbe("a", "b", {1'001, 2}, 5).ok());
  auto edges = this->Probes();
  ASSERT_EQ(edges.size(), 1u);
  EXPECT_EQ(edges[0].average_rtt_ns, 1'000);
}

TYPED_TEST(StoreConformance, QueueLengthOneKeepsOnlyTheNewestSample) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.AddProbe("a", "b", {10, 1}, 1).ok());
  ASSERT_TRUE(s.AddProbe("a", "b", {30, 2}, 1).ok());
  auto edges = this->Probes();
  ASSERT_EQ(edges.size(), 1u);
  ASSERT_EQ(edges[0].samples.size(), 1u);
  EXPECT_EQ(edges[0].average_rtt_ns, 30);
}

TYPED_TEST(StoreConformance, ListProbesFiltersBySource) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.AddProbe("a", "b", {1, 1}, 5).ok());
  ASSERT_TRUE(s.AddProbe("a", "c", {2, 1}, 5).ok());
  ASSERT_TRUE(s.AddProbe("b", "a", {3, 1}, 5).ok());
  using V = std::vector<std::string>;
  EXPECT_EQ(this->EdgeNames(this->Probes()), (V{"a>b", "a>c", "b>a"}));
  EXPECT_EQ(this->EdgeNames(this->Probes("a")), (V{"a>b", "a>c"}));
  EXPECT_EQ(this->EdgeNames(this->Probes("b")), (V{"b>a"}));
  EXPECT_TRUE(this->Probes("nobody").empty());
}

TYPED_TEST(StoreConformance, ProbedCountsAccumulateInOrderWithZeroForUnknown) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.AddProbedCount("a", 2).ok());
  ASSERT_TRUE(s.AddProbedCount("b", 1).ok());
  ASSERT_TRUE(s.AddProbedCount("a", 3).ok());
  auto counts = s.ProbedCounts({"b", "nobody", "a"});
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(*counts, (std::vector<uint64_t>{1, 0, 5}));
  auto none = s.ProbedCounts({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TYPED_TEST(StoreConformance, DeleteHostRemovesEverythingOfTheHostAndNothingElse) {
  auto& s = *this->store_;
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(s.PutHost(MakeHost(id), 1).ok());
  ASSERT_TRUE(s.AddProbe("a", "b", {1, 1}, 5).ok());  // from a
  ASSERT_TRUE(s.AddProbe("c", "a", {1, 1}, 5).ok());  // to a
  ASSERT_TRUE(s.AddProbe("b", "c", {1, 1}, 5).ok());  // not a's
  ASSERT_TRUE(s.AddProbedCount("a", 4).ok());
  ASSERT_TRUE(s.AddProbedCount("b", 1).ok());
  ASSERT_TRUE(s.PutCapacities({{"a", 10, 20, 1}, {"b", 30, 40, 1}}).ok());
  ASSERT_TRUE(
      s.PutPairEstimates({{"a", "b", 1.5, 1, 1}, {"b", "a", 2, 1, 1}, {"b", "c", 3, 1, 1}}).ok());

  ASSERT_TRUE(s.DeleteHost("a").ok());

  using V = std::vector<std::string>;
  EXPECT_EQ(this->HostIds(), (V{"b", "c"}));
  EXPECT_EQ(this->EdgeNames(this->Probes()), (V{"b>c"}));
  EXPECT_TRUE(this->Probes("c").empty());
  EXPECT_EQ(s.ProbedCounts({"a", "b"}).value(), (std::vector<uint64_t>{0, 1}));
  auto caps = s.ListCapacities();
  ASSERT_TRUE(caps.ok());
  ASSERT_EQ(caps->size(), 1u);
  EXPECT_EQ((*caps)[0].host_id, "b");
  auto pairs = s.ListPairEstimates();
  ASSERT_TRUE(pairs.ok());
  ASSERT_EQ(pairs->size(), 1u);
  EXPECT_EQ((*pairs)[0].child_host_id, "b");
  EXPECT_EQ((*pairs)[0].parent_host_id, "c");

  EXPECT_TRUE(s.DeleteHost("a").ok());  // again: unknown is Ok
  EXPECT_TRUE(s.DeleteHost("never-seen").ok());
}

TYPED_TEST(StoreConformance, DeletedHostStartsAfreshWhenItComesBack) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.AddProbe("a", "b", {100, 1}, 5).ok());
  ASSERT_TRUE(s.DeleteHost("b").ok());
  ASSERT_TRUE(s.AddProbe("a", "b", {300, 9}, 5).ok());
  auto edges = this->Probes("a");
  ASSERT_EQ(edges.size(), 1u);
  EXPECT_EQ(edges[0].samples.size(), 1u);
  EXPECT_EQ(edges[0].average_rtt_ns, 300);
  EXPECT_EQ(edges[0].created_unix_ms, 9);
}

TYPED_TEST(StoreConformance, LatestCapacityReplacesTheOlder) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.PutCapacities({{"a", 10, 20, 1}, {"b", 30, 40, 2}}).ok());
  ASSERT_TRUE(s.PutCapacities({{"a", 11, 0, 3}}).ok());
  auto caps = s.ListCapacities();
  ASSERT_TRUE(caps.ok());
  ASSERT_EQ(caps->size(), 2u);
  for (const auto& c : *caps) {
    if (c.host_id == "a") {
      EXPECT_EQ(c.upload_bytes_per_sec, 11u);
      EXPECT_EQ(c.download_bytes_per_sec, 0u);
      EXPECT_EQ(c.updated_unix_ms, 3);
    } else {
      EXPECT_EQ(c.host_id, "b");
      EXPECT_EQ(c.upload_bytes_per_sec, 30u);
      EXPECT_EQ(c.download_bytes_per_sec, 40u);
    }
  }
}

TYPED_TEST(StoreConformance, LatestPairEstimateReplacesTheOlderPerDirection) {
  auto& s = *this->store_;
  ASSERT_TRUE(s.PutPairEstimates({{"a", "b", 1.25e8, 3, 1}, {"b", "a", 7.5, 1, 1}}).ok());
  ASSERT_TRUE(s.PutPairEstimates({{"a", "b", 0.1, 4, 2}}).ok());
  auto pairs = s.ListPairEstimates();
  ASSERT_TRUE(pairs.ok());
  ASSERT_EQ(pairs->size(), 2u);
  for (const auto& p : *pairs) {
    if (p.child_host_id == "a") {
      EXPECT_EQ(p.parent_host_id, "b");
      EXPECT_EQ(p.bytes_per_sec, 0.1);  // exact: stored as the shortest round-trip decimal
      EXPECT_EQ(p.records, 4u);
      EXPECT_EQ(p.updated_unix_ms, 2);
    } else {
      EXPECT_EQ(p.parent_host_id, "a");
      EXPECT_EQ(p.bytes_per_sec, 7.5);
    }
  }
}

TYPED_TEST(StoreConformance, RecordsKeepTheNewestMaxRecords) {
  auto& s = *this->store_;
  std::vector<BandwidthRecord> batch;
  for (uint64_t i = 0; i < 6; ++i) batch.push_back(Record("c", "p", i));
  ASSERT_TRUE(s.AppendRecords(batch, 8).ok());
  ASSERT_TRUE(
      s.AppendRecords({Record("c2", "p2", 6), Record("c2", "p2", 7), Record("c", "p", 8)}, 8).ok());
  auto all = s.ListRecords(100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 8u);  // 0 and 1 dropped
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ((*all)[i].bytes, i + 1);
  EXPECT_EQ((*all)[5].child_host_id, "c2");
  EXPECT_EQ((*all)[5].parent_host_id, "p2");
  EXPECT_EQ((*all)[5].cost_ns, 1'000'006u);
  EXPECT_EQ((*all)[5].unix_ms, 1'700'000'000'000);

  auto last3 = s.ListRecords(3);
  ASSERT_TRUE(last3.ok());
  ASSERT_EQ(last3->size(), 3u);
  EXPECT_EQ((*last3)[0].bytes, 6u);
  EXPECT_EQ((*last3)[2].bytes, 8u);  // newest last
  auto none = s.ListRecords(0);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TYPED_TEST(StoreConformance, EmptyBatchesAndEmptyStoreAreOk) {
  auto& s = *this->store_;
  EXPECT_TRUE(s.PutCapacities({}).ok());
  EXPECT_TRUE(s.PutPairEstimates({}).ok());
  EXPECT_TRUE(s.AppendRecords({}, 10).ok());
  EXPECT_TRUE(this->HostIds().empty());
  EXPECT_TRUE(this->Probes().empty());
  EXPECT_TRUE(s.ListCapacities()->empty());
  EXPECT_TRUE(s.ListPairEstimates()->empty());
  EXPECT_TRUE(s.ListRecords(10)->empty());
}

// Thread-safe: every method from any thread. Four writers on one edge leave a consistent edge.
TYPED_TEST(StoreConformance, ConcurrentProbesOnOneEdgeLeaveItConsistent) {
  auto& s = *this->store_;
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&s, t] {
      for (int i = 0; i < 50; ++i) {
        EXPECT_TRUE(s.AddProbe("a", "b", {1000 * (t + 1), i}, 5).ok());
        EXPECT_TRUE(s.AddProbedCount("b", 1).ok());
      }
    });
  }
  for (auto& w : writers) w.join();
  auto edges = this->Probes();
  ASSERT_EQ(edges.size(), 1u);
  ASSERT_EQ(edges[0].samples.size(), 5u);
  // The average is of the samples that were kept, in their order, whoever wrote them.
  EXPECT_EQ(edges[0].average_rtt_ns, MovingAverageRtt(edges[0].samples));
  EXPECT_EQ(s.ProbedCounts({"b"}).value()[0], 200u);
}

// ---- Redis only ----

TEST(RedisUrl, ParsesHostPortDbAndPassword) {
  auto o = ParseRedisUrl("redis://10.0.0.7:6380/3");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->host, "10.0.0.7");
  EXPECT_EQ(o->port, 6380);
  EXPECT_EQ(o->db, 3);
  EXPECT_EQ(o->password, "");

  o = ParseRedisUrl("redis://:s3cr@t/x@redis.local:7000/1");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->password, "s3cr@t/x");
  EXPECT_EQ(o->host, "redis.local");
  EXPECT_EQ(o->port, 7000);
  EXPECT_EQ(o->db, 1);

  o = ParseRedisUrl("redis://[::1]:6379");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->host, "::1");
  EXPECT_EQ(o->db, 0);

  o = ParseRedisUrl("redis://localhost");
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->port, 6379);

  auto store = NewStore("redis://127.0.0.1:1/0");  // nothing listens: still returned
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->name(), "redis");
  EXPECT_EQ((*store)->Ping().code(), StatusCode::kUnavailable);
}

TEST(RedisUrl, MalformedUrlsAreInvalidArgument) {
  for (const char* url :
       {"redis://", "redis://:6379", "redis://host:", "redis://host:0", "redis://host:65536",
        "redis://host:port", "redis://host:6379/db", "redis://host:6379/-1", "redis://pw@host:1",
        "redis://:@host:1", "redis://[::1:6379", "redis://[::1]x", "rediss://host:6379",
        "http://host:6379", "redis:/host"}) {
    auto store = NewStore(url);
    ASSERT_FALSE(store.ok()) << url;
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument) << url;
  }
  auto bad = NewStore("redis://host:port");
  EXPECT_NE(bad.status().message().find("malformed Redis URL 'redis://host:port'"),
            std::string::npos)
      << bad.status().message();
}

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()) << "redis-server did not start"; }
  std::unique_ptr<Store> Open(int db = 0) {
    auto store = NewStore(server_.Url(db));
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(*store) : nullptr;
  }

  bench::RedisServer server_;
};

// Two schedulers on one Redis read each other's writes at once: there is no cache in between.
TEST_F(RedisStoreTest, TwoStoresSeeEachOthersWritesImmediately) {
  auto a = Open(), b = Open();
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->PutHost(MakeHost("h1"), 1).ok());
  ASSERT_TRUE(a->AddProbe("h1", "h2", {5000, 1}, 5).ok());
  ASSERT_TRUE(b->AddProbe("h1", "h2", {7000, 2}, 5).ok());
  ASSERT_TRUE(a->AppendRecords({Record("h1", "h2", 1)}, 100).ok());
  ASSERT_TRUE(b->AppendRecords({Record("h2", "h1", 2)}, 100).ok());
  ASSERT_TRUE(b->AddProbedCount("h2", 2).ok());

  auto hosts = b->ListHosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  auto edges = a->ListProbes("h1");
  ASSERT_TRUE(edges.ok());
  ASSERT_EQ(edges->size(), 1u);
  EXPECT_EQ((*edges)[0].samples.size(), 2u);
  EXPECT_EQ((*edges)[0].average_rtt_ns, 6800);  // 0.1 x 5000 + 0.9 x 7000
  EXPECT_EQ(a->ListRecords(10)->size(), 2u);    // one dataset from both
  EXPECT_EQ(a->ProbedCounts({"h2"}).value()[0], 2u);

  ASSERT_TRUE(b->DeleteHost("h1").ok());
  EXPECT_TRUE(a->ListHosts()->empty());
  EXPECT_TRUE(a->ListProbes("")->empty());
}

TEST_F(RedisStoreTest, DatabasesAreSeparate) {
  auto db0 = Open(0), db1 = Open(1);
  ASSERT_TRUE(db0 && db1);
  ASSERT_TRUE(db1->PutHost(MakeHost("h1"), 1).ok());
  EXPECT_TRUE(db0->ListHosts()->empty());
  EXPECT_EQ(db1->ListHosts()->size(), 1u);
}

template <typename F>
milliseconds Timed(F&& f) {
  auto start = Clock::now();
  f();
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
}

// Waits until `store` answers again (reconnects are rate-limited, so this takes one interval).
bool WaitUntilUp(Store& store, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (store.Ping().ok()) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return false;
}

TEST_F(RedisStoreTest, KilledRedisIsUnavailableFastAndTheSameStoreRecoversAfterRestart) {
  auto store = Open();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->AddProbe("a", "b", {1000, 1}, 5).ok());

  server_.process().Kill(SIGKILL);
  server_.process().Wait(5000);

  // Every kind of call: Unavailable, each within well under a second, and never a crash.
  milliseconds worst{0};
  for (int i = 0; i < 5; ++i) {
    Status st;
    worst = std::max(worst, Timed([&] { st = store->AddProbe("a", "b", {2000, 2}, 5); }));
    EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
    Result<std::vector<ProbeEdge>> edges = Status(Unavailable("unset"));
    worst = std::max(worst, Timed([&] { edges = store->ListProbes(""); }));
    EXPECT_EQ(edges.status().code(), StatusCode::kUnavailable);
    worst = std::max(worst, Timed([&] { st = store->AppendRecords({Record("a", "b", 1)}, 9); }));
    EXPECT_EQ(st.code(), StatusCode::kUnavailable);
    std::this_thread::sleep_for(milliseconds(150));  // spans reconnect attempts
  }
  EXPECT_LT(worst, milliseconds(1000));
  std::printf("[ measure  ] slowest call with Redis killed: %lld ms\n",
              static_cast<long long>(worst.count()));

  ASSERT_TRUE(server_.Start());  // same port, empty (no persistence)
  ASSERT_TRUE(WaitUntilUp(*store, milliseconds(3000)));
  ASSERT_TRUE(store->AddProbe("a", "b", {3000, 3}, 5).ok());  // scripts are loaded again
  auto edges = store->ListProbes("a");
  ASSERT_TRUE(edges.ok()) << edges.status().ToString();
  ASSERT_EQ(edges->size(), 1u);
  EXPECT_EQ((*edges)[0].average_rtt_ns, 3000);
}

// A Redis that hangs (stopped, not dead) costs a caller one command timeout, not forever.
TEST_F(RedisStoreTest, HungRedisCostsOneTimeout) {
  auto store = Open();
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->Ping().ok());
  server_.process().Kill(SIGSTOP);
  Status st;
  auto took = Timed([&] { st = store->PutHost(MakeHost("a"), 1); });
  auto again = Timed([&] { (void)store->Ping(); });  // within the reconnect interval: at once
  server_.process().Kill(SIGCONT);
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_LT(took, milliseconds(1000));
  EXPECT_LT(again, milliseconds(100));
  std::printf("[ measure  ] call against a stopped Redis: %lld ms, next call %lld ms\n",
              static_cast<long long>(took.count()), static_cast<long long>(again.count()));
  EXPECT_TRUE(WaitUntilUp(*store, milliseconds(3000)));
}

TEST_F(RedisStoreTest, PasswordIsSentAndAWrongOneIsUnavailable) {
  server_.set_extra_args({"--requirepass", "s3cret"});
  ASSERT_TRUE(server_.Start());
  auto good = NewStore("redis://:s3cret@127.0.0.1:" + std::to_string(server_.port()) + "/2");
  auto bad = NewStore("redis://:wrong@127.0.0.1:" + std::to_string(server_.port()) + "/2");
  auto none = NewStore(server_.Url(2));
  ASSERT_TRUE(good.ok() && bad.ok() && none.ok());
  EXPECT_TRUE((*good)->PutHost(MakeHost("a"), 1).ok());
  EXPECT_EQ((*good)->ListHosts()->size(), 1u);
  EXPECT_EQ((*bad)->Ping().code(), StatusCode::kUnavailable);
  EXPECT_FALSE((*none)->ListHosts().ok());
}

TEST_F(RedisStoreTest, MalformedValuesAreSkippedNotFatal) {
  auto store = Open();
  ASSERT_TRUE(store);
  RawRedis raw(server_.port());
  ASSERT_TRUE(raw.ok());
  ASSERT_TRUE(store->PutHost(MakeHost("good"), 1).ok());
  ASSERT_TRUE(store->AddProbe("good", "x", {100, 1}, 5).ok());
  ASSERT_TRUE(store->AppendRecords({Record("c", "p", 1)}, 10).ok());
  ASSERT_TRUE(store->PutCapacities({{"good", 1, 2, 3}}).ok());
  ASSERT_TRUE(store->PutPairEstimates({{"good", "x", 5, 1, 1}}).ok());

  // A host whose timestamp is not a number, one that is not even a hash.
  raw.Run({"HSET", "scheduler:hosts:bad", "host", "x", "updatedAt", "yesterday"});
  raw.Run({"SET", "scheduler:hosts:wrongtype", "x"});
  raw.Run({"SADD", "scheduler:host-ids", "bad", "wrongtype", "gone"});
  // A sample that is not JSON, one without rtt, an edge whose average is not a number.
  raw.Run({"RPUSH", "scheduler:probes:good:x", "{not json", R"({"createdAt":"x"})"});
  raw.Run({"HSET", "scheduler:network-topology:good:y", "averageRTT", "fast", "updatedAt",
           "2024-01-01T00:00:00Z"});
  raw.Run({"SADD", "scheduler:network-topology-ids:good", "y"});
  // Records, counts, capacities and estimates someone else wrote badly.
  raw.Run({"RPUSH", "scheduler:records", "garbage", R"({"childHostId":1})"});
  raw.Run({"SET", "scheduler:probed-count:z", "many"});
  raw.Run({"HSET", "scheduler:capacity:bad", "uploadBytesPerSec", "-5"});
  raw.Run({"SADD", "scheduler:capacity-ids", "bad"});
  raw.Run({"HSET", "scheduler:bandwidth:bad:x", "child", "bad", "parent", "x", "bytesPerSec", "nan",
           "records", "1", "updatedAt", "1"});
  raw.Run({"SADD", "scheduler:bandwidth-keys", "scheduler:bandwidth:bad:x"});

  auto hosts = store->ListHosts();
  ASSERT_TRUE(hosts.ok());
  ASSERT_EQ(hosts->size(), 1u);
  EXPECT_EQ((*hosts)[0].info.id(), "good");

  auto edges = store->ListProbes("good");
  ASSERT_TRUE(edges.ok());
  ASSERT_EQ(edges->size(), 1u);  // good>y skipped
  EXPECT_EQ((*edges)[0].samples.size(), 1u);
  // Writing on: the script's average skips the bad samples too.
  ASSERT_TRUE(store->AddProbe("good", "x", {300, 2}, 5).ok());
  EXPECT_EQ(store->ListProbes("good").value()[0].average_rtt_ns, 280);  // 0.1 x 100 + 0.9 x 300

  auto records = store->ListRecords(10);
  ASSERT_TRUE(records.ok());
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ(store->ProbedCounts({"z"}).value()[0], 0u);
  EXPECT_EQ(store->ListCapacities()->size(), 1u);
  EXPECT_EQ(store->ListPairEstimates()->size(), 1u);

  // An index of the wrong type reads as empty; a write onto a key of the wrong type is an error.
  raw.Run({"DEL", "scheduler:host-ids"});
  raw.Run({"SET", "scheduler:host-ids", "oops"});
  auto none = store->ListHosts();
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(store->PutHost(MakeHost("h"), 1).code(), StatusCode::kInternal);
  EXPECT_EQ(store->AddProbedCount("z", 1).code(), StatusCode::kInternal);
  EXPECT_TRUE(store->Ping().ok());  // the connection survived all of it
  // DeleteHost reports the wrong-type index, but still deletes everything else of the host.
  EXPECT_EQ(store->DeleteHost("good").code(), StatusCode::kInternal);
  EXPECT_EQ(raw.Run({"EXISTS", "scheduler:hosts:good", "scheduler:network-topology:good:x",
                     "scheduler:capacity:good", "scheduler:bandwidth:good:x"}),
            "(integer) 0");
  raw.Run({"DEL", "scheduler:host-ids"});
  EXPECT_TRUE(store->DeleteHost("bad").ok());
}

// Probe keys are Dragonfly's (pkg/redis in Dragonfly2): its tools read what we write, and we
// read what it writes (RFC 3339 with nanoseconds and an offset, samples with a host object).
TEST_F(RedisStoreTest, ProbeKeysAreDragonflys) {
  auto store = Open();
  ASSERT_TRUE(store);
  RawRedis raw(server_.port());
  ASSERT_TRUE(store->AddProbe("src", "dst", {1'500'000, 1'700'000'000'123}, 5).ok());
  ASSERT_TRUE(store->AddProbe("src", "dst", {2'500'000, 1'700'000'001'000}, 5).ok());
  ASSERT_TRUE(store->AddProbedCount("dst", 3).ok());

  EXPECT_EQ(raw.Run({"TYPE", "scheduler:network-topology:src:dst"}), "hash");
  EXPECT_EQ(raw.Run({"HGET", "scheduler:network-topology:src:dst", "averageRTT"}), "2400000");
  EXPECT_EQ(raw.Run({"HGET", "scheduler:network-topology:src:dst", "createdAt"}),
            "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(raw.Run({"HGET", "scheduler:network-topology:src:dst", "updatedAt"}),
            "2023-11-14T22:13:21.000Z");
  EXPECT_EQ(raw.Run({"LRANGE", "scheduler:probes:src:dst", "0", "-1"}),
            R"([{"createdAt":"2023-11-14T22:13:20.123Z","rtt":1500000},)"
            R"({"createdAt":"2023-11-14T22:13:21.000Z","rtt":2500000}])");
  EXPECT_EQ(raw.Run({"GET", "scheduler:probed-count:dst"}), "3");

  // As Dragonfly writes an edge.
  raw.Run({"HSET", "scheduler:network-topology:df:peer", "averageRTT", "42000", "createdAt",
           "2023-11-15T06:13:20.123456789+08:00", "updatedAt", "2023-11-14T22:13:21.5Z"});
  raw.Run({"RPUSH", "scheduler:probes:df:peer",
           R"({"host":{"id":"peer"},"rtt":42000,"createdAt":"2023-11-14T22:13:21.5Z"})"});
  raw.Run({"SADD", "scheduler:network-topology-ids:df", "peer"});
  auto edges = store->ListProbes("df");
  ASSERT_TRUE(edges.ok());
  ASSERT_EQ(edges->size(), 1u);
  EXPECT_EQ((*edges)[0].average_rtt_ns, 42000);
  EXPECT_EQ((*edges)[0].created_unix_ms, 1'700'000'000'123);
  EXPECT_EQ((*edges)[0].updated_unix_ms, 1'700'000'001'500);
  ASSERT_EQ((*edges)[0].samples.size(), 1u);
  EXPECT_EQ((*edges)[0].samples[0].created_unix_ms, 1'700'000'001'500);

  // DeleteHost leaves no key of the host behind, in either direction.
  ASSERT_TRUE(store->AddProbe("dst", "src", {1, 1}, 5).ok());
  ASSERT_TRUE(store->DeleteHost("dst").ok());
  EXPECT_EQ(raw.Run({"KEYS", "*dst*"}), "[]");  // fine in a test: KEYS only on a tiny Redis
  EXPECT_EQ(raw.Run({"SMEMBERS", "scheduler:network-topology-ids:src"}), "[]");
}

}  // namespace
}  // namespace df::scheduler
