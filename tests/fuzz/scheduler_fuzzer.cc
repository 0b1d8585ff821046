// Fuzz target: the scheduler's message handling (src/scheduler/scheduler.h), driven in-process
// the way the gRPC service drives it. A fresh Scheduler per input (no background thread: the
// calls are the ones the service makes), configured from the first four bytes, then a sequence
// of operations:
//
//   [op u8][a u8][b u8][length u16 LE][length bytes of protobuf]
//
//   op % 6 = 0 AnnounceHost(Host)  1 LeaveHost  2 RegisterPeer(AnnouncePeerRequest)
//            3 HandlePeerMessage(AnnouncePeerRequest) on a registered stream
//            4 StreamClosed on a registered stream  5 CollectGarbage
//
// `a` picks hosts, peers and streams from small sets so that operations meet each other; bits of
// `b` turn off the fix-ups that make a message plausible (host and peer ids from the sets, a URL
// and the task id computed from the spec, parent ids of known peers), so raw messages get
// through too.
//
// Invariants, checked after every operation: each task's DAG has no cycle and no peer is its own
// parent; no peer has more than candidate_parent_limit parents and all are peers of the task;
// task counters stay within the number of peers; a task reports a seed only while a peer that
// registered from a host announced as a seed can serve. On every response: candidate lists
// hold 1..limit distinct other peers; task sizes fit kMaxPieceCount; digests are empty or 32 bytes,
// at most 4096.
#include <google/protobuf/stubs/logging.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/task_info.h"
#include "common/task_spec.h"
#include "fuzz_input.h"
#include "scheduler/evaluator.h"
#include "scheduler/metrics.h"
#include "scheduler/scheduler.h"

namespace sched = df::scheduler;
namespace v1 = df::scheduler::v1;

namespace {

constexpr const char* kHosts[] = {"h0", "h1", "h2", "h3"};
constexpr const char* kPeers[] = {"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"};
constexpr const char* kUrls[] = {"http://origin/a", "https://origin/b?sig=1&x=2"};
constexpr size_t kMaxSlots = 16;
constexpr int kMaxOps = 48;

bool IsKnownPeer(const std::string& id) {
  for (const char* p : kPeers) {
    if (id == p) return true;
  }
  return false;
}

// Records nothing but checks every response the scheduler sends on one stream.
class CheckingStream : public sched::PeerStream {
 public:
  CheckingStream(std::string peer_id, uint32_t parent_limit)
      : peer_id_(std::move(peer_id)), parent_limit_(parent_limit) {}

  bool Send(const v1::AnnouncePeerResponse& r) override {
    if (closed_) return false;
    if (r.has_normal_task()) CheckNormal(r.normal_task());
    if (r.has_piece_digests()) {
      DF_FUZZ_CHECK(r.piece_digests().sha256_size() <= 4096);
      for (const auto& d : r.piece_digests().sha256()) DF_FUZZ_CHECK(d.empty() || d.size() == 32);
    }
    return true;
  }
  void Close() { closed_ = true; }

 private:
  void CheckNormal(const v1::NormalTaskResponse& n) const {
    DF_FUZZ_CHECK(n.candidate_parents_size() >= 1);
    DF_FUZZ_CHECK(static_cast<uint32_t>(n.candidate_parents_size()) <= parent_limit_);
    std::set<std::string> ids;
    for (const auto& c : n.candidate_parents()) {
      DF_FUZZ_CHECK(c.peer_id() != peer_id_);
      DF_FUZZ_CHECK(ids.insert(c.peer_id()).second);
    }
    if (n.has_task()) {
      const v1::TaskMetadata& t = n.task();
      DF_FUZZ_CHECK(t.content_length() >= 0 && t.total_pieces() <= df::kMaxPieceCount);
      DF_FUZZ_CHECK(df::IsValidPieceLength(t.piece_length()));
      DF_FUZZ_CHECK(uint64_t{t.total_pieces()} * t.piece_length() >=
                    static_cast<uint64_t>(t.content_length()));
    }
  }

  const std::string peer_id_;
  const uint32_t parent_limit_;
  bool closed_ = false;
};

// Completes every trigger at once, with success or failure (or the scheduler has none).
class InlineSeedTrigger : public sched::SeedTrigger {
 public:
  explicit InlineSeedTrigger(bool succeed) : succeed_(succeed) {}
  void Trigger(const v1::Host&, const v1::TaskInfo& task, DoneCallback done) override {
    done(task.task_id(), succeed_ ? df::Status::Ok() : df::Unavailable("fuzz: seed unreachable"));
  }

 private:
  const bool succeed_;
};

struct Slot {
  sched::PeerKey key;
  std::shared_ptr<CheckingStream> stream;
};

class Harness {
 public:
  explicit Harness(df::fuzz::FuzzInput& in) : config_(Config(in)) {
    static auto* registry = new prometheus::Registry();
    static auto* metrics = new sched::SchedulerMetrics(*registry);
    std::unique_ptr<sched::SeedTrigger> trigger;
    uint8_t mode = in.U8() % 3;
    if (mode > 0) trigger = std::make_unique<InlineSeedTrigger>(mode == 1);
    scheduler_ = std::make_unique<sched::Scheduler>(config_, sched::NewEvaluator("default").value(),
                                                    std::move(trigger), metrics);
  }

  void Run(df::fuzz::FuzzInput& in) {
    for (int i = 0; i < kMaxOps && in.remaining() >= 5; ++i) {
      uint8_t op = in.U8(), a = in.U8(), b = in.U8();
      std::string_view payload = in.Bytes(in.U16());
      switch (op % 6) {
        case 0:
          AnnounceHost(payload, a, b);
          break;
        case 1:
          (void)scheduler_->LeaveHost(kHosts[a & 3], (b & 2) ? "10.0.0.1" : "");
          break;
        case 2:
          Register(payload, a, b);
          break;
        case 3:
          Message(payload, a, b);
          break;
        case 4:
          Close(a);
          break;
        default:
          scheduler_->CollectGarbage();
      }
      CheckModel();
    }
  }

 private:
  static sched::SchedulerConfig Config(df::fuzz::FuzzInput& in) {
    sched::SchedulerConfig c;
    uint8_t b0 = in.U8(), b1 = in.U8(), b2 = in.U8();
    c.candidate_parent_limit = 1 + (b0 & 3);
    c.filter_parent_limit = c.candidate_parent_limit + ((b0 >> 2) & 7);
    c.back_to_source_limit = (b0 >> 5) & 3;
    c.cross_idc_children_limit = b1 & 3;
    c.weak_child_seed_delay_ms = (b1 & 4) ? 0 : 1000;
    c.seed_trigger_attempts = (b1 >> 3) & 3;
    c.max_tasks = 1 + ((b1 >> 5) & 3);
    c.max_hosts = 1 + (b2 & 7);
    // TTLs of zero make GC remove everything it may; otherwise it removes only what left.
    if ((b2 & 0x18) == 0x18) c.host_ttl_ms = 0;
    if (b2 & 0x20) c.peer_ttl_ms = 0;
    if (b2 & 0x40) c.task_ttl_ms = 0;
    return c;
  }

  void AnnounceHost(std::string_view payload, uint8_t a, uint8_t b) {
    v1::Host host;
    if (!host.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
    if (!(b & 1)) host.set_id(kHosts[a & 3]);
    if (b & 4) {
      host.set_ip("10.0.0." + std::to_string(a & 3));
      host.set_grpc_port(4000);
      host.set_piece_port(4005);
    }
    if (b & 8) host.set_type((b & 16) ? v1::HOST_TYPE_SEED : v1::HOST_TYPE_NORMAL);
    const std::string caller_ip = (b & 2) ? "10.0.0." + std::to_string((a >> 2) & 3) : "";
    if (scheduler_->AnnounceHost(host, caller_ip).ok()) {
      seed_hosts_[host.id()] = host.type() == v1::HOST_TYPE_SEED;
    }
  }

  void Register(std::string_view payload, uint8_t a, uint8_t b) {
    v1::AnnouncePeerRequest req;
    if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
    if (!(b & 1)) {
      v1::RegisterPeerRequest* reg = req.mutable_register_();
      reg->set_host_id(kHosts[a & 3]);
      reg->set_peer_id(kPeers[(a >> 2) & 7]);
      v1::TaskInfo* task = reg->mutable_task();
      if (!(b & 2)) task->set_url(kUrls[(a >> 5) & 1]);
      if (!(b & 4)) task->set_task_id(df::TaskSpecId(df::SpecOf(*task)));
    }
    std::string peer_id = req.register_().peer_id();
    auto stream = std::make_shared<CheckingStream>(peer_id.empty() ? req.peer_id() : peer_id,
                                                   config_.candidate_parent_limit);
    auto key = scheduler_->RegisterPeer(req, stream);
    if (!key.ok()) return;
    tasks_.insert(key->task_id);
    auto host = seed_hosts_.find(key->host_id);
    registered_as_seed_[{key->task_id, key->peer_id}] = host != seed_hosts_.end() && host->second;
    if (slots_.size() == kMaxSlots) slots_.erase(slots_.begin());
    slots_.push_back({key.value(), std::move(stream)});
  }

  void Message(std::string_view payload, uint8_t a, uint8_t b) {
    if (slots_.empty()) return;
    v1::AnnouncePeerRequest req;
    if (!req.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) return;
    if (!(b & 1)) {
      const char* parent = kPeers[(a >> 4) & 7];
      if (req.has_piece_finished()) {
        req.mutable_piece_finished()->set_parent_id((b & 2) ? "" : parent);
        std::string* sha = req.mutable_piece_finished()->mutable_sha256();
        if (!sha->empty()) sha->resize(32, 'x');
      }
      if (req.has_piece_failed()) req.mutable_piece_failed()->set_parent_id(parent);
      if (req.has_reschedule()) {
        for (auto& id : *req.mutable_reschedule()->mutable_bad_parent_ids()) id = parent;
      }
    }
    (void)scheduler_->HandlePeerMessage(slots_[a % slots_.size()].key, req);
  }

  void Close(uint8_t a) {
    if (slots_.empty()) return;
    auto it = slots_.begin() + a % slots_.size();
    scheduler_->StreamClosed(it->key, it->stream.get());
    it->stream->Close();
    slots_.erase(it);
  }

  void CheckModel() const {
    for (const std::string& task_id : tasks_) {
      auto stat = scheduler_->StatTask(task_id);
      if (!stat.ok()) continue;  // collected
      DF_FUZZ_CHECK(stat->peer_count() <= std::size(kPeers));
      DF_FUZZ_CHECK(stat->finished_peer_count() <= std::size(kPeers));
      CheckDag(task_id, stat->has_seed());
    }
  }

  // Parents of every peer of the task: bounded, known, acyclic; and has_seed backed by a peer.
  void CheckDag(const std::string& task_id, bool has_seed) const {
    std::map<std::string, std::vector<std::string>> parents;
    bool seed_can_serve = false;
    for (const char* id : kPeers) {
      auto peer = scheduler_->GetPeer(task_id, id);
      if (!peer) continue;
      DF_FUZZ_CHECK(peer->parents.size() <= config_.candidate_parent_limit);
      for (const auto& p : peer->parents) {
        DF_FUZZ_CHECK(p != id && IsKnownPeer(p));
        DF_FUZZ_CHECK(scheduler_->GetPeer(task_id, p).has_value());
      }
      parents[id] = peer->parents;
      auto seed = registered_as_seed_.find({task_id, id});
      if (seed != registered_as_seed_.end() && seed->second && sched::CanServe(peer->state)) {
        seed_can_serve = true;
      }
    }
    DF_FUZZ_CHECK(!has_seed || seed_can_serve);
    // Depth-first search for a cycle over at most 8 vertices.
    std::map<std::string, int> color;  // 0 new, 1 on the stack, 2 done
    auto visit = [&](auto& self, const std::string& v) -> void {
      color[v] = 1;
      for (const auto& p : parents[v]) {
        DF_FUZZ_CHECK(color[p] != 1);
        if (color[p] == 0) self(self, p);
      }
      color[v] = 2;
    };
    for (const auto& [v, unused] : parents) {
      if (color[v] == 0) visit(visit, v);
    }
  }

  const sched::SchedulerConfig config_;
  std::vector<Slot> slots_;  // open streams, oldest first
  std::unique_ptr<sched::Scheduler> scheduler_;
  std::set<std::string> tasks_;
  std::map<std::string, bool> seed_hosts_;  // host -> announced as a seed, last time
  // (task, peer) -> its host was announced as a seed when it registered (a peer is a seed peer
  // for its whole life, whatever its host announces later).
  std::map<std::pair<std::string, std::string>, bool> registered_as_seed_;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(
      nullptr);  // invalid UTF-8 in a string field is just a failed parse
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  df::fuzz::FuzzInput in(data, size);
  Harness harness(in);
  harness.Run(in);
  return 0;
}
