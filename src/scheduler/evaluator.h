// Parent selection: an Evaluator filters out bad parents and ranks the rest for one child.
//
// The scheduler does the structural filtering (same task, not the child itself, no DAG cycle,
// a reachable host, a state that can serve) and samples at most filter_parent_limit candidates;
// the evaluator gets plain data about each candidate and decides policy: which are bad, and in
// which order the good ones are offered. Implementations:
//   "default"  rule based: free upload capacity, finished pieces, upload success rate, host
//              type, IDC and location affinity (default_evaluator.h).
//   "latency"  default + probed RTT and probe failures (latency_evaluator.h).
//   "ml"       predicted pair bandwidth from an inference service (ml_evaluator.h); it never
//              blocks a decision: it answers from a cache and falls back to "default".
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "common/status.h"

namespace prometheus {
class Registry;
}

namespace df::scheduler {

enum class PeerState {
  kPending,       // registered, nothing decided yet
  kRunning,       // downloading from parents (or waiting for them)
  kBackToSource,  // downloading from the origin
  kSucceeded,     // holds the whole task and keeps serving it
  kFailed,
  kLeft,  // stream closed without finishing, or its host left
};
const char* PeerStateName(PeerState state);

// What an evaluator knows about one candidate parent. Plain data, copied per decision.
struct ParentInfo {
  std::string peer_id;
  std::string host_id;  // with ChildInfo::host_id, the (child host, parent host) pair
  PeerState state = PeerState::kRunning;
  uint32_t finished_pieces = 0;
  bool is_seed = false;  // its host is HOST_TYPE_SEED
  std::string idc;
  std::string location;  // "country|region|zone"
  // 0 = the host did not say; the evaluator assumes kDefaultConcurrentUploadLimit.
  uint32_t concurrent_upload_limit = 0;
  // max(uploads the host reported, children the scheduler gave the host's peers).
  uint32_t concurrent_uploads = 0;
  // Announced upload capacity of the parent's host and the part already reserved for children,
  // bytes/s; capacity 0 = unknown.
  uint64_t upload_capacity = 0;
  uint64_t upload_allotted = 0;
  // Pieces the parent's host served, as reported by children (scheduler-observed).
  uint64_t upload_success = 0;
  uint64_t upload_failure = 0;
  // Costs of the pieces this parent served, oldest first (see CostHistory).
  std::vector<uint64_t> piece_costs_ns;
  // Probed RTT between the child's host and this parent's host (moving average of the kept
  // samples, either direction), ns; 0 = never probed.
  int64_t rtt_ns = 0;
  // Failed probes of this parent's host since its last successful one (distinct probers).
  uint32_t probe_failures = 0;
};

// What an evaluator knows about the child it schedules for.
struct ChildInfo {
  std::string peer_id;
  std::string host_id;
  std::string idc;
  std::string location;
  uint64_t download_capacity = 0;  // bytes/s the child can receive; 0 = unknown
  // Parents the child reported bad (RescheduleRequest.bad_parent_ids, permanent PieceFailed).
  std::unordered_set<std::string> bad_parent_ids;
};

struct TaskView {
  uint32_t total_pieces = 0;  // 0 = unknown
};

struct ScoredParent {
  size_t index = 0;  // into the candidates passed to Evaluate
  double score = 0;  // higher is better; in [0, 1] for the default evaluator
  // Bandwidth the evaluator expects from this parent to the child, bytes/s; 0 = no estimate.
  // The selector books at most this on a parent whose host has no capacity evidence.
  double predicted_bytes_per_sec = 0;
};

struct DownloadRow;  // dataset_writer.h
class NetworkTopology;

// Groups of hosts that an evaluator found close to each other (racks nobody announced; see
// host_groups.h): host id -> group name. `version` changes whenever the grouping does.
struct InferredGroups {
  uint64_t version = 0;
  std::unordered_map<std::string, std::string> group_of;
};

// Thread-safe: Evaluate may be called concurrently (implementations are stateless or
// synchronise internally) and must not block on I/O.
class Evaluator {
 public:
  virtual ~Evaluator() = default;

  virtual std::string_view name() const = 0;

  // Drops the bad candidates and returns the others best first. Never fails: an evaluator that
  // cannot score (e.g. no model) falls back to a simpler rule.
  virtual std::vector<ScoredParent> Evaluate(const ChildInfo& child,
                                             const std::vector<ParentInfo>& candidates,
                                             const TaskView& task) const = 0;

  // Evaluators that learn from outcomes say so; the Scheduler then passes every plausible piece
  // record to ObserveTransfer (under its mutex: it must only take leaf locks).
  virtual bool observes_transfers() const { return false; }
  virtual void ObserveTransfer(const DownloadRow& /*row*/) {}
  // The probe graph, when the scheduler has one (borrowed; null: none).
  virtual void SetTopology(const NetworkTopology* /*topology*/) {}
  // The host groups it inferred, for hosts that announce no idc; null: it infers none. The
  // Scheduler applies a new version in its background round (Host::inferred_group).
  virtual std::shared_ptr<const InferredGroups> inferred_groups() const { return nullptr; }
};

// What NewEvaluator needs beyond a name (only "ml" reads it).
struct EvaluatorOptions {
  std::string inference;  // HOST:PORT of the KServe v2 service; "ml" requires it
  std::string inference_model = "bandwidth";
  uint64_t inference_deadline_ms = 20;
  uint64_t prediction_ttl_ms = 30'000;
  bool infer_groups = true;                  // "ml": infer host groups from its predictions
  prometheus::Registry* registry = nullptr;  // for the evaluator's own metrics; may be null
};

// The evaluator named `name`; InvalidArgument naming the known ones for an unknown name, or when
// "ml" has no inference address.
Result<std::unique_ptr<Evaluator>> NewEvaluator(std::string_view name,
                                                const EvaluatorOptions& options = {});
bool IsKnownEvaluator(std::string_view name);
std::string KnownEvaluatorNames();  // "default, latency, ml"

}  // namespace df::scheduler
