// dfscheduler: the per-cluster scheduler. Parses flags and the YAML config, wires the metrics
// server and the SchedulerServer together, and runs until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>
#include <string>

#include "common/version.h"
#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/metrics.h"
#include "scheduler/config.h"
#include "scheduler/scheduler_api.h"
#include "scheduler/server.h"

namespace {

using df::scheduler::SchedulerConfig;

struct FlagHelp {
  const char* name;  // snake_case option name
  const char* help;
  const char* alias = nullptr;  // a shorter flag, e.g. "--tls-cert" for --tls-cert-file
};

constexpr FlagHelp kFlags[] = {
    {"listen", "gRPC address of the Scheduler service"},
    {"metrics", "address serving /metrics, /healthz and /api/v1/... (\"\" disables)"},
    {"evaluator", "parent-selection algorithm: default or latency"},
    {"log_level", "trace, debug, info, warn, error, critical or off"},
    {"auth_token_file", "file with the cluster's shared token for every RPC (docs/security.md)"},
    {"tls_cert_file", "mutual TLS: PEM certificate of this scheduler (with --tls-key, --tls-ca)",
     "--tls-cert"},
    {"tls_key_file", "mutual TLS: PEM private key of the certificate (mode 0600)", "--tls-key"},
    {"tls_ca_file", "mutual TLS: PEM CA that signs every node of the cluster", "--tls-ca"},
    {"max_tasks", "tasks this scheduler keeps at most"},
    {"max_hosts", "hosts this scheduler keeps at most"},
    {"parent_graph",
     "dag (acyclic, upload booked per edge) or mesh (peers serve each other both ways; "
     "docs/scheduler.md)"},
    {"mesh_seed_children",
     "mesh: children of a task a seed serves, those with the widest uplinks (0: any)"},
    {"candidate_parent_limit", "most parents offered to one peer"},
    {"filter_parent_limit", "most candidates sampled per decision"},
    {"cross_idc_children_limit", "children outside its IDC that one IDC serves per task (0: any)"},
    {"weak_child_seed_delay",
     "children whose uplink is below what they book wait this long before a seed is their parent"},
    {"capacity_prior",
     "link rate assumed for a host that announced none until its piece records show one "
     "(e.g. 1gbit; 0: none)"},
    {"store", "what schedulers share: memory, or redis://HOST:PORT/DB for several schedulers"},
    {"dataset_dir",
     "directory of the records dataset: rotating download.csv and networktopology.csv "
     "(docs/measurement.md; \"\" disables)"},
    {"dataset_max_file_size", "a dataset file is rotated before it grows past this (e.g. 64MiB)"},
    {"dataset_max_files", "rotated dataset files kept per kind (the oldest are deleted)"},
    {"dataset_topology_interval", "how often the probe graph is written to networktopology.csv"},
    {"trainer",
     "dftrainer HOST:PORT: the records dataset (--dataset-dir) is streamed to it every "
     "--trainer-interval (\"\": none)"},
    {"trainer_interval", "how often the dataset is sent to the trainer"},
    {"inference",
     "KServe v2 service (dfinference or Triton) HOST:PORT for --evaluator ml (\"\": none)"},
    {"inference_model", "model the ml evaluator asks the inference service for"},
    {"inference_deadline", "longest one batched ModelInfer may take (never on a decision's path)"},
    {"prediction_ttl", "how long the ml evaluator uses a pair's prediction"},
    {"infer_groups",
     "true: the ml evaluator groups hosts by predicted pair bandwidth, and a group stands in for "
     "the idc of hosts that announce none"},
    {"probe_count", "hosts each daemon probes per probe round (the least probed of a sample)"},
    {"probe_queue_length", "latency samples kept per (src, dst) host pair"},
    {"probe_sample_size", "random sample of hosts the probe targets are chosen from"},
    {"back_to_source_limit", "concurrent back-to-source peers per task (seed peers not counted)"},
    {"schedule_timeout", "a peer without parents this long goes back to source"},
    {"push_interval", "minimum time between parent pushes to one peer"},
    {"seed_trigger_attempts", "seed triggers per task (a retry only after a failure)"},
    {"gc_interval", "how often peers, tasks and hosts are garbage collected"},
    {"background_stall",
     "/healthz answers 503 when the background round (pushes, timeouts, GC) stalls this long"},
    {"preheat_registries",
     "hosts preheat may contact (registries and their token services), a comma list of "
     "HOST or HOST:PORT (\"\": any)"},
    {"peer_ttl", "idle finished peers are removed after this"},
    {"task_ttl", "tasks without peers are removed after this"},
    {"host_ttl", "hosts that did not announce for this long are gone"},
};

std::string Kebab(std::string name) {
  for (char& c : name) c = c == '_' ? '-' : c;
  return name;
}

// Default of an option, for --help.
std::string DefaultText(const std::string& name) {
  const SchedulerConfig d;
  static const std::map<std::string, std::string> kDefaults = {
      {"listen", d.listen},
      {"metrics", d.metrics},
      {"evaluator", d.evaluator},
      {"log_level", d.log_level},
      {"auth_token_file", d.auth_token_file},
      {"tls_cert_file", d.tls_cert_file},
      {"tls_key_file", d.tls_key_file},
      {"tls_ca_file", d.tls_ca_file},
      {"max_tasks", std::to_string(d.max_tasks)},
      {"max_hosts", std::to_string(d.max_hosts)},
      {"parent_graph", d.parent_graph},
      {"mesh_seed_children", std::to_string(d.mesh_seed_children)},
      {"candidate_parent_limit", std::to_string(d.candidate_parent_limit)},
      {"filter_parent_limit", std::to_string(d.filter_parent_limit)},
      {"cross_idc_children_limit", std::to_string(d.cross_idc_children_limit)},
      {"back_to_source_limit", std::to_string(d.back_to_source_limit)},
      {"weak_child_seed_delay", "1s"},
      {"capacity_prior", "1gbit"},
      {"store", d.store},
      {"dataset_dir", d.dataset_dir},
      {"dataset_max_file_size", "64MiB"},
      {"dataset_max_files", std::to_string(d.dataset_max_files)},
      {"dataset_topology_interval", "1m"},
      {"trainer", d.trainer},
      {"trainer_interval", "10m"},
      {"inference", d.inference},
      {"inference_model", d.inference_model},
      {"inference_deadline", "20ms"},
      {"prediction_ttl", "30s"},
      {"infer_groups", d.infer_groups ? "true" : "false"},
      {"probe_count", std::to_string(d.probe_count)},
      {"probe_queue_length", std::to_string(d.probe_queue_length)},
      {"probe_sample_size", std::to_string(d.probe_sample_size)},
      {"schedule_timeout", "10s"},
      {"push_interval", "200ms"},
      {"seed_trigger_attempts", std::to_string(d.seed_trigger_attempts)},
      {"gc_interval", "1m"},
      {"background_stall", "10s"},
      {"preheat_registries", d.preheat_registries},
      {"peer_ttl", "24h"},
      {"task_ttl", "24h"},
      {"host_ttl", "1h"},
  };
  auto it = kDefaults.find(name);
  return it == kDefaults.end() ? "" : it->second;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "dfscheduler: %s\n", message.c_str());
  return 2;
}

// Blocks SIGINT/SIGTERM in every thread (call before any starts) and waits for one.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  // Large request and tensor buffers (a ModelInfer of 64 pairs is 773 KB) stay in the heap
  // instead of being mapped and faulted in again on every call (common/malloc_tuning.h).
  (void)df::KeepLargeBuffersInHeap();
  CLI::App app{"dfscheduler: the P2P scheduler (peers, tasks, parent DAG, seed triggers)"};
  app.set_version_flag("--version", df::VersionLine("dfscheduler"));
  std::string config_path;
  app.add_option("--config", config_path, "YAML config file (keys = flag names in snake_case)");
  std::map<std::string, std::string> values;
  for (const auto& flag : kFlags) {
    std::string names = "--" + Kebab(flag.name);
    if (flag.alias != nullptr) names += std::string(",") + flag.alias;
    app.add_option(names, values[flag.name], flag.help)->default_str(DefaultText(flag.name));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::CallForVersion& e) {
    std::printf("%s\n", e.what());
    return 0;
  } catch (const CLI::ParseError& e) {
    return Fail(std::string(e.what()) + " (see --help)");
  }

  SchedulerConfig config;
  if (!config_path.empty()) {
    auto loaded = df::scheduler::LoadConfigFile(config_path, config);
    if (!loaded.ok()) return Fail(loaded.status().message());
    config = std::move(loaded).value();
  }
  for (const auto& flag : kFlags) {
    if (app.count("--" + Kebab(flag.name)) == 0) continue;
    df::Status s = df::scheduler::SetOption(config, Kebab(flag.name), values[flag.name]);
    if (!s.ok()) return Fail("--" + s.message());
  }
  if (df::Status s = df::scheduler::ValidateConfig(config); !s.ok()) return Fail(s.message());
  if (df::Status s = df::InitLogging("dfscheduler", config.log_level); !s.ok()) {
    return Fail(s.message());
  }

  sigset_t stop_signals = BlockStopSignals();
  df::MetricsServer metrics;
  if (!config.metrics.empty()) {
    if (df::Status s = metrics.Start(config.metrics); !s.ok()) return Fail(s.message());
  }
  auto server = df::scheduler::SchedulerServer::Start(config, metrics.registry());
  if (!server.ok()) return Fail(server.status().message());
  if (!config.metrics.empty()) {
    df::Status s = df::scheduler::RegisterSchedulerApi(metrics, server.value()->scheduler(),
                                                       server.value()->network_topology());
    if (!s.ok()) return Fail(s.message());
  }
  DF_LOG_INFO("dfscheduler listening listen={} port={} metrics={} evaluator={}", config.listen,
              server.value()->port(), config.metrics, config.evaluator);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  DF_LOG_INFO("dfscheduler stopping signal={}", signal);
  metrics.SetHealthy(false);
  df::scheduler::UnregisterSchedulerApi(metrics);
  server.value()->Shutdown();
  return 0;
}
