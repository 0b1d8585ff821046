// scheduler_bench: register-to-first-parents latency of the scheduler with many concurrent
// announcing peers (issue 3: p99 <= 5 ms with 1,000 peers on a 2-core machine).
//
// Starts a SchedulerServer in this process (or uses --target), announces a seed host and one host
// per peer, registers a seed peer for the task (it goes back to source, so every later peer has
// a candidate), then opens --peers AnnouncePeer streams at once (gRPC callback API, spread over
// --channels TCP connections) and keeps them all open. Registers are sent over --spread-ms
// (0 = all at once); the latency of each is the time from sending register to receiving its
// first NormalTaskResponse. Optionally every registered peer then reports a piece every
// --piece-interval-ms, so that registers compete with piece traffic as in a real swarm.
// Baseline, same run, same server: sequential unary StatTask calls.
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/version.h"
#include "scheduler.grpc.pb.h"
#include "common/ids.h"
#include "scheduler/server.h"

namespace {

namespace v1 = df::scheduler::v1;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr double kTargetP99Ms = 5.0;
constexpr char kTaskUrl[] = "http://origin/bench.bin";
// The scheduler accepts only the real id of a task's spec.
const std::string& BenchTaskId() {
  static const std::string id = df::TaskId(df::TaskIdInput{kTaskUrl, "", "", 0, {}});
  return id;
}

struct Options {
  int peers = 1000;
  int channels = 16;
  int spread_ms = 1000;
  int piece_interval_ms = 0;
  int baseline_calls = 2000;
  std::string target;                 // empty = in-process scheduler
  uint64_t push_interval_ms = 200;    // in-process scheduler's push interval
  std::string evaluator = "default";  // in-process scheduler's evaluator
  std::string inference;              // and its inference service (evaluator ml)
};

v1::AnnouncePeerRequest Message(const std::string& host_id, const std::string& peer_id) {
  v1::AnnouncePeerRequest r;
  r.set_host_id(host_id);
  r.set_task_id(BenchTaskId());
  r.set_peer_id(peer_id);
  return r;
}

v1::AnnouncePeerRequest Register(const std::string& host_id, const std::string& peer_id) {
  auto r = Message(host_id, peer_id);
  auto* reg = r.mutable_register_();
  reg->set_host_id(host_id);
  reg->set_peer_id(peer_id);
  reg->mutable_task()->set_task_id(BenchTaskId());
  reg->mutable_task()->set_url(kTaskUrl);
  reg->mutable_task()->set_content_length(-1);
  return r;
}

// Signals when a count of events reached a target.
class Latch {
 public:
  explicit Latch(int count) : count_(count) {}
  void CountDown() {
    std::lock_guard lock(mu_);
    if (--count_ <= 0) cv_.notify_all();
  }
  bool Wait(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return count_ <= 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_;
};

// One announcing peer: an open AnnouncePeer stream driven by gRPC's callback threads.
class BenchPeer final
    : public grpc::ClientBidiReactor<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse> {
 public:
  BenchPeer(v1::Scheduler::Stub* stub, std::string host_id, std::string peer_id,
            Latch* first_response, Latch* done)
      : host_id_(std::move(host_id)),
        peer_id_(std::move(peer_id)),
        first_response_(*first_response),
        done_(*done) {
    stub->async()->AnnouncePeer(&context_, this);
    StartRead(&response_);
    StartCall();
  }

  // Sends register and starts the clock. Called once, from the driver thread.
  void SendRegister() {
    request_ = Register(host_id_, peer_id_);
    writing_ = true;
    sent_at_ = Clock::now();
    StartWrite(&request_);
  }

  // Reports one piece unless a write is in flight. Any thread, after the first response.
  void MaybeReportPiece(uint32_t number, const std::string& parent_id) {
    if (!got_first_.load() || closing_.load() || writing_.exchange(true)) return;
    request_ = Message(host_id_, peer_id_);
    auto* p = request_.mutable_piece_finished();
    p->set_piece_number(number);
    p->set_parent_id(parent_id);
    p->set_length(4 << 20);
    p->set_cost_ns(20'000'000);
    StartWrite(&request_);
  }

  // Half-closes once no write is in flight.
  void Close() {
    closing_ = true;
    while (writing_.exchange(true)) std::this_thread::sleep_for(1ms);
    StartWritesDone();
  }

  void OnWriteDone(bool) override { writing_ = false; }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ends; OnDone follows
    if (!got_first_.load()) {
      latency_ = Clock::now() - sent_at_;
      normal_ = response_.has_normal_task() && response_.normal_task().candidate_parents_size() > 0;
      if (normal_) parent_id_ = response_.normal_task().candidate_parents(0).peer_id();
      got_first_ = true;
      first_response_.CountDown();
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.CountDown();
  }

  bool got_first() const { return got_first_.load(); }
  bool normal() const { return normal_; }
  Clock::duration latency() const { return latency_; }
  const std::string& parent_id() const { return parent_id_; }

 private:
  const std::string host_id_;
  const std::string peer_id_;
  Latch& first_response_;
  Latch& done_;
  grpc::ClientContext context_;
  v1::AnnouncePeerRequest request_;
  v1::AnnouncePeerResponse response_;
  std::atomic<bool> writing_{false};
  std::atomic<bool> closing_{false};
  std::atomic<bool> got_first_{false};
  Clock::time_point sent_at_;
  Clock::duration latency_{};
  bool normal_ = false;
  std::string parent_id_;
  grpc::Status status_;
};

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

bool AnnounceHost(v1::Scheduler::Stub* stub, const std::string& id, v1::HostType type, int i) {
  v1::AnnounceHostRequest req;
  v1::Host* h = req.mutable_host();
  h->set_id(id);
  h->set_hostname(id);
  h->set_ip("127.0.0." + std::to_string(1 + i % 250));
  h->set_grpc_port(4000);
  h->set_piece_port(4005);
  h->set_type(type);
  h->set_idc("idc" + std::to_string(i % 4));
  h->set_location("cn|r" + std::to_string(i % 3) + "|z" + std::to_string(i % 7));
  h->set_concurrent_upload_limit(type == v1::HOST_TYPE_SEED ? 200 : 16);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  v1::AnnounceHostResponse resp;
  return stub->AnnounceHost(&ctx, req, &resp).ok();
}

// Registers the seed peer with a sync stream and waits for its NeedBackToSource; the stream
// stays open (returned) so that the seed stays a candidate.
struct SeedStream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AnnouncePeerRequest, v1::AnnouncePeerResponse>>
      stream;
};
std::unique_ptr<SeedStream> RegisterSeed(v1::Scheduler::Stub* stub) {
  auto seed = std::make_unique<SeedStream>();
  seed->stream = stub->AnnouncePeer(&seed->context);
  v1::AnnouncePeerResponse r;
  if (!seed->stream->Write(Register("bench-seed-host", "bench-seed-peer")) ||
      !seed->stream->Read(&r) || !r.has_need_back_to_source()) {
    return nullptr;
  }
  return seed;
}

struct UnaryStats {
  double p50_ms = 0;
  double p99_ms = 0;
};

UnaryStats MeasureStatTask(v1::Scheduler::Stub* stub, int calls) {
  std::vector<double> ms;
  for (int i = 0; i < calls; ++i) {
    grpc::ClientContext ctx;
    v1::StatTaskRequest req;
    req.set_task_id(BenchTaskId());
    v1::StatTaskResponse resp;
    auto start = Clock::now();
    if (stub->StatTask(&ctx, req, &resp).ok()) ms.push_back(Ms(Clock::now() - start));
  }
  return {Percentile(ms, 50), Percentile(ms, 99)};
}

// A PeerStream that drops responses: for timing the scheduler's decisions without gRPC.
class NullStream final : public df::scheduler::PeerStream {
 public:
  bool Send(const v1::AnnouncePeerResponse&) override { return true; }
};

// Decision cost alone: Scheduler::RegisterPeer for every peer, back to back, same model as the
// gRPC run (seed peer first, one host per peer).
void MeasureDecisionCost(const Options& opt) {
  prometheus::Registry registry;
  df::scheduler::SchedulerMetrics metrics(registry);
  df::scheduler::Scheduler scheduler(df::scheduler::SchedulerConfig{},
                                     std::move(df::scheduler::NewEvaluator("default")).value(),
                                     nullptr, &metrics);
  scheduler.Start();
  auto host = [](const std::string& id, v1::HostType type) {
    v1::Host h;
    h.set_id(id);
    h.set_ip("127.0.0.1");
    h.set_grpc_port(4000);
    h.set_piece_port(4005);
    h.set_type(type);
    h.set_concurrent_upload_limit(16);
    return h;
  };
  (void)scheduler.AnnounceHost(host("bench-seed-host", v1::HOST_TYPE_SEED));
  (void)scheduler.RegisterPeer(Register("bench-seed-host", "bench-seed-peer"),
                               std::make_shared<NullStream>());
  std::vector<double> us;
  for (int i = 0; i < opt.peers; ++i) {
    std::string host_id = "bench-host-" + std::to_string(i);
    (void)scheduler.AnnounceHost(host(host_id, v1::HOST_TYPE_NORMAL));
    auto request = Register(host_id, "bench-peer-" + std::to_string(i));
    auto start = Clock::now();
    (void)scheduler.RegisterPeer(request, std::make_shared<NullStream>());
    us.push_back(Ms(Clock::now() - start) * 1000);
  }
  std::printf(
      "decision cost without gRPC (Scheduler::RegisterPeer, %d peers): p50=%.1fus "
      "p99=%.1fus max=%.1fus\n",
      opt.peers, Percentile(us, 50), Percentile(us, 99), Percentile(us, 100));
}

int Run(const Options& opt) {
  prometheus::Registry registry;
  std::unique_ptr<df::scheduler::SchedulerServer> server;
  std::string address = opt.target;
  if (address.empty()) {
    df::scheduler::SchedulerConfig config;
    config.listen = "127.0.0.1:0";
    config.metrics = "";
    config.push_interval_ms = opt.push_interval_ms;
    config.evaluator = opt.evaluator;
    config.inference = opt.inference;
    auto started = df::scheduler::SchedulerServer::Start(config, registry);
    if (!started.ok()) {
      std::fprintf(stderr, "scheduler_bench: %s\n", started.status().message().c_str());
      return 1;
    }
    server = std::move(started).value();
    address = "127.0.0.1:" + std::to_string(server->port());
  }

  std::vector<std::unique_ptr<v1::Scheduler::Stub>> stubs;
  for (int i = 0; i < opt.channels; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("df.bench.connection", i);  // distinct args: a TCP connection per channel
    stubs.push_back(v1::Scheduler::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }
  v1::Scheduler::Stub* control = stubs[0].get();
  if (!AnnounceHost(control, "bench-seed-host", v1::HOST_TYPE_SEED, 0)) {
    std::fprintf(stderr, "scheduler_bench: cannot reach the scheduler at %s\n", address.c_str());
    return 1;
  }
  for (int i = 0; i < opt.peers; ++i) {
    AnnounceHost(stubs[i % opt.channels].get(), "bench-host-" + std::to_string(i),
                 v1::HOST_TYPE_NORMAL, i + 1);
  }
  auto seed = RegisterSeed(control);
  if (!seed) {
    std::fprintf(stderr, "scheduler_bench: the seed peer was not sent back to source\n");
    return 1;
  }

  // Open every stream first: the peers are concurrently connected before any registers.
  Latch first_responses(opt.peers);
  Latch done(opt.peers);
  std::vector<std::unique_ptr<BenchPeer>> peers;
  for (int i = 0; i < opt.peers; ++i) {
    peers.push_back(std::make_unique<BenchPeer>(
        stubs[i % opt.channels].get(), "bench-host-" + std::to_string(i),
        "bench-peer-" + std::to_string(i), &first_responses, &done));
  }
  std::this_thread::sleep_for(500ms);

  std::atomic<bool> reporting{opt.piece_interval_ms > 0};
  std::thread reporter;
  if (reporting) {
    // Paced evenly (a slice of the peers every millisecond), as independent peers would be.
    reporter = std::thread([&] {
      const size_t per_ms =
          std::max<size_t>(1, peers.size() / static_cast<size_t>(opt.piece_interval_ms));
      size_t next = 0;
      uint32_t piece = 0;
      auto tick = Clock::now();
      while (reporting) {
        for (size_t i = 0; i < per_ms; ++i, ++next) {
          if (next == peers.size()) {
            next = 0;
            ++piece;
          }
          peers[next]->MaybeReportPiece(piece, peers[next]->parent_id());
        }
        tick += 1ms;
        std::this_thread::sleep_until(tick);
      }
    });
  }

  // Registers at uniformly spread times, in random order.
  std::vector<int> order(opt.peers);
  for (int i = 0; i < opt.peers; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(7));
  const auto start = Clock::now();
  for (int k = 0; k < opt.peers; ++k) {
    auto at = start + std::chrono::microseconds(static_cast<int64_t>(opt.spread_ms) * 1000 * k /
                                                std::max(1, opt.peers));
    std::this_thread::sleep_until(at);
    peers[order[k]]->SendRegister();
  }
  const bool all_answered = first_responses.Wait(30s);
  const auto wall = Clock::now() - start;

  // Baseline in the same run, on the same loaded server, with every stream still open.
  UnaryStats baseline = MeasureStatTask(control, opt.baseline_calls);

  reporting = false;
  if (reporter.joinable()) reporter.join();
  std::vector<double> latency_ms;
  int normal = 0;
  for (auto& p : peers) {
    if (!p->got_first()) continue;
    latency_ms.push_back(Ms(p->latency()));
    normal += p->normal() ? 1 : 0;
  }
  for (auto& p : peers) p->Close();
  const auto close_start = Clock::now();
  const bool all_closed = done.Wait(10s);
  const double close_ms = Ms(Clock::now() - close_start);
  seed->stream->WritesDone();
  seed->stream->Finish();

  const double p50 = Percentile(latency_ms, 50);
  const double p90 = Percentile(latency_ms, 90);
  const double p99 = Percentile(latency_ms, 99);
  const double max = Percentile(latency_ms, 100);
  std::printf(
      "scheduler_bench: peers=%d channels=%d spread_ms=%d piece_interval_ms=%d "
      "scheduler=%s evaluator=%s\n",
      opt.peers, opt.channels, opt.spread_ms, opt.piece_interval_ms,
      opt.target.empty() ? "in-process" : opt.target.c_str(), opt.evaluator.c_str());
  std::printf(
      "register->first parents: answered=%zu/%d with_parents=%d wall=%.0fms "
      "p50=%.3fms p90=%.3fms p99=%.3fms max=%.3fms\n",
      latency_ms.size(), opt.peers, normal, Ms(wall), p50, p90, p99, max);
  std::printf("baseline StatTask unary (same server, same run): p50=%.3fms p99=%.3fms\n",
              baseline.p50_ms, baseline.p99_ms);
  std::printf("all %d streams closed: %s in %.0fms (every peer Left; children rescheduled)\n",
              opt.peers, all_closed ? "yes" : "NO", close_ms);
  std::printf(
      "ratios: p99/target(%.1fms)=%.2f  register p50/StatTask p50=%.2f  "
      "register p99/StatTask p99=%.2f  -> %s\n",
      kTargetP99Ms, p99 / kTargetP99Ms, baseline.p50_ms > 0 ? p50 / baseline.p50_ms : 0,
      baseline.p99_ms > 0 ? p99 / baseline.p99_ms : 0,
      all_answered && p99 <= kTargetP99Ms ? "PASS" : "FAIL");
  for (const auto& family : registry.Collect()) {
    if (family.name != "df_scheduler_schedule_latency_seconds" || family.metric.empty()) continue;
    const auto& h = family.metric[0].histogram;
    std::printf("server-side decision time (in-process only): mean=%.3fms over %llu registers\n",
                h.sample_count ? h.sample_sum * 1e3 / static_cast<double>(h.sample_count) : 0.0,
                static_cast<unsigned long long>(h.sample_count));
  }
  MeasureDecisionCost(opt);
  return all_answered && normal == opt.peers ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"scheduler_bench: register-to-first-parents latency with many announcing peers"};
  app.set_version_flag("--version", df::VersionLine("scheduler_bench"));
  Options opt;
  app.add_option("--peers", opt.peers, "concurrent announcing peers")->check(CLI::Range(1, 100000));
  app.add_option("--channels", opt.channels, "TCP connections the peers share")
      ->check(CLI::Range(1, 1000));
  app.add_option("--spread-ms", opt.spread_ms, "registers are spread over this window (0 = burst)")
      ->check(CLI::Range(0, 600000));
  app.add_option("--piece-interval-ms", opt.piece_interval_ms,
                 "each registered peer reports a piece this often (0 = off)")
      ->check(CLI::Range(0, 600000));
  app.add_option("--baseline-calls", opt.baseline_calls, "StatTask calls for the baseline")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--push-interval-ms", opt.push_interval_ms,
                 "in-process scheduler: minimum time between parent pushes to one peer");
  app.add_option("--target", opt.target, "address of a running dfscheduler (default: in-process)");
  app.add_option("--evaluator", opt.evaluator, "in-process scheduler: default, latency or ml");
  app.add_option("--inference", opt.inference,
                 "in-process scheduler: KServe v2 HOST:PORT for --evaluator ml");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "scheduler_bench: %s (see --help)\n", e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  return Run(opt);
}
