// Configuration of dfscheduler: one struct, filled from defaults, then a YAML file, then flags.
//
// Every option has one name used everywhere: the YAML key is snake_case ("schedule_timeout") and
// the flag is the same name in kebab-case ("--schedule-timeout"). Values are parsed from strings
// by SetOption for both sources, so a value means the same thing in a file and on the command
// line. Durations accept "500ms", "10s", "2m", "1h" or bare seconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace df::scheduler {

struct SchedulerConfig {
  std::string listen = "0.0.0.0:8002";   // gRPC address of the Scheduler service
  std::string metrics = "0.0.0.0:8003";  // /metrics and /healthz; "" disables
  std::string evaluator = "default";     // parent-selection algorithm (see evaluator.h)
  std::string log_level = "info";
  // A file holding the cluster's shared token (docs/security.md): every RPC must carry it, and
  // seed triggers send it. Empty: RPCs are not authenticated.
  std::string auth_token_file;
  // Mutual TLS (docs/security.md, "Mutual TLS"): this scheduler's certificate chain, its key and
  // the cluster's CA, all PEM. All three set: the gRPC server requires client certificates of the
  // CA and seed triggers present this certificate. All empty: no TLS. Anything else is an error.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // Resource caps: a register for a new task, or an announce of a new host, beyond these gets
  // RESOURCE_EXHAUSTED instead of growing the scheduler's memory without bound.
  uint32_t max_tasks = 100'000;
  uint32_t max_hosts = 100'000;
  // The shape of a task's parent graph (docs/scheduler.md, "Parent graph"):
  //   "dag"  - acyclic: a peer never serves one of its ancestors; each child books upload on its
  //            parents (capacity accounting), so equal links make chains that forward cut-through;
  //   "mesh" - peers serve each other both ways, BitTorrent-like: each child gets up to
  //            candidate_parent_limit parents without booking, and the daemons' rarest-first
  //            picker decides what flows where, so every uplink serves whoever lacks its pieces.
  std::string parent_graph = "dag";
  // In a mesh, a seed peer is a parent of at most this many children of a task: the downloading
  // peers with the widest upload capacity (learned, else announced, else the prior). What a
  // seed uploads is what nobody else has yet, and a child passes it on only as fast as its own
  // uplink goes, so it goes to the uplinks that spread it fastest (0 = any child may take it).
  uint32_t mesh_seed_children = 4;
  // At most this many parents in one NormalTaskResponse.
  uint32_t candidate_parent_limit = 8;
  // At most this many structurally valid candidates are sampled and given to the evaluator, so
  // that one scheduling decision costs O(filter_parent_limit), not O(peers of the task).
  uint32_t filter_parent_limit = 40;
  // Per task, at most this many children outside its IDC are served by the peers of one IDC
  // (0 = no limit). Links between IDCs are thinner than inside one: with 1, each byte enters an
  // IDC once and then travels inside it, and IDCs chain to each other instead of all pulling
  // from the first. Only applies to hosts that announce an IDC.
  uint32_t cross_idc_children_limit = 1;
  // A child whose announced uplink is below the bandwidth it books (its downlink, or the fair
  // share of upload when that is lower) does not get a
  // seed peer as parent for this long after registering, so that children that can pass the
  // seed's new data on at full rate book it first (0 = off). See docs/scheduler.md, "Capacity".
  uint64_t weak_child_seed_delay_ms = 1'000;
  // Link capacity (bytes/s) assumed for a host that announced none and has shown nothing yet in
  // its piece records; replaced by what the records show (docs/measurement.md). 0 = no
  // assumption: such hosts are scheduled without capacity accounting.
  // 1 Gbit/s: a nominal NIC. Measured on the rig (docs/measurement.md): a high prior that busy
  // links correct downwards keeps the chains booking builds on equal links, while a low one
  // that records must raise made every child book the first parent that showed more.
  uint64_t capacity_prior = 125'000'000;
  // Where what schedulers share is kept (store.h): "memory" (this process only) or
  // "redis://HOST:PORT/DB" (several schedulers).
  std::string store = "memory";
  // The records dataset (docs/measurement.md, "Records dataset"): rotating CSV files of piece
  // records and probe-graph snapshots in this directory. Empty: not written.
  std::string dataset_dir;
  // The live file of each kind is rotated when a row would take it past this size, and at most
  // dataset_max_files rotated files of each kind are kept (oldest deleted).
  uint64_t dataset_max_file_size = 64ull << 20;
  uint32_t dataset_max_files = 10;
  uint64_t dataset_topology_interval_ms = 60'000;  // how often the probe graph is written
  // dftrainer's HOST:PORT (docs/learning.md): every trainer_interval the dataset of dataset_dir
  // is streamed to it (dataset_uploader.h). Empty: no trainer. Needs dataset_dir.
  std::string trainer;
  uint64_t trainer_interval_ms = 600'000;
  // The ml evaluator (ml_evaluator.h, docs/learning.md): the KServe v2 service (dfinference or
  // Triton) as HOST:PORT, the model it serves, how long one ModelInfer may take, and how long a
  // pair's prediction is used. evaluator = ml requires inference.
  std::string inference;
  std::string inference_model = "bandwidth";
  uint64_t inference_deadline_ms = 20;
  uint64_t prediction_ttl_ms = 30'000;
  // The ml evaluator infers host groups (racks nobody announced) from its predictions; they stand
  // in for the idc of hosts that announce none (host_groups.h, docs/learning.md).
  bool infer_groups = true;
  // Latency probes (docs/measurement.md, "Probes (scheduler side)"): each SyncProbes round gets
  // the probe_count least probed among a random sample of probe_sample_size other hosts; the last
  // probe_queue_length samples of each (src, dst) pair are kept.
  uint32_t probe_count = 5;
  uint32_t probe_queue_length = 5;
  uint32_t probe_sample_size = 50;
  // Concurrent back-to-source peers per task on normal hosts (a seed peer is never limited).
  uint32_t back_to_source_limit = 1;
  // A peer with no candidate parents for this long goes back to source (limits permitting).
  uint64_t schedule_timeout_ms = 10'000;
  // Minimum time between two pushed NormalTaskResponses to the same peer.
  uint64_t push_interval_ms = 200;
  // Attempts to trigger a seed peer for one task (a new attempt only after the last one failed).
  uint32_t seed_trigger_attempts = 3;
  uint64_t gc_interval_ms = 60'000;
  // /healthz answers 503 with the reason when the background round (pushes, schedule timeouts,
  // GC) has not come round for this long: a lock held too long, a stuck call.
  uint64_t background_stall_ms = 10'000;
  // Preheat (SchedulerAdmin.PreheatImage): the hosts it may contact, registries and their token
  // services, as a comma list of HOST or HOST:PORT (a HOST allows every port); "": any.
  std::string preheat_registries;
  uint64_t peer_ttl_ms = 24 * 3600'000ull;  // idle peers without a stream are removed after this
  uint64_t task_ttl_ms = 24 * 3600'000ull;  // tasks without peers are removed after this
  uint64_t host_ttl_ms = 3600'000ull;       // hosts not announced for this long are gone
};

// Names of all options, snake_case, in the order of SchedulerConfig.
const std::vector<std::string>& OptionNames();

// Sets option `name` (snake_case or kebab-case) from its text form. InvalidArgument naming the
// option when the name is unknown or the value does not parse or is out of range.
Status SetOption(SchedulerConfig& config, const std::string& name, const std::string& value);

// Applies a YAML mapping of option -> scalar, read from `path`, on top of `base`. InvalidArgument
// or NotFound naming the file (and key) on unreadable files, bad YAML, unknown keys or values.
Result<SchedulerConfig> LoadConfigFile(const std::string& path, SchedulerConfig base);
// The same for YAML text already in memory; `source` names it in messages (as the path does).
Result<SchedulerConfig> LoadConfigFromString(const std::string& yaml, const std::string& source,
                                             SchedulerConfig base);

// Checks cross-field rules and the evaluator name. InvalidArgument with one line on failure.
Status ValidateConfig(const SchedulerConfig& config);

}  // namespace df::scheduler
