#include "scheduler/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <map>

#include "backend/oci_image.h"
#include "common/units.h"
#include "scheduler/evaluator.h"
#include "scheduler/redis_store.h"

namespace df::scheduler {
namespace {

using Setter = std::function<Status(SchedulerConfig&, const std::string&)>;

Setter Text(std::string SchedulerConfig::*field) {
  return [field](SchedulerConfig& c, const std::string& v) {
    c.*field = v;
    return Status::Ok();
  };
}

Setter Count(uint32_t SchedulerConfig::*field, uint32_t min, uint32_t max) {
  return [=](SchedulerConfig& c, const std::string& v) {
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size()) {
      return InvalidArgument("'" + v + "' is not a non-negative integer");
    }
    if (n < min || n > max) {
      return InvalidArgument(v + " is out of range [" + std::to_string(min) + ", " +
                             std::to_string(max) + "]");
    }
    c.*field = static_cast<uint32_t>(n);
    return Status::Ok();
  };
}

// `min_ms` guards against zero intervals that would spin a loop.
Setter Duration(uint64_t SchedulerConfig::*field, uint64_t min_ms) {
  return [=](SchedulerConfig& c, const std::string& v) {
    auto ms = ParseDurationMs(v);
    if (!ms.ok()) return ms.status();
    if (ms.value() < min_ms) {
      return InvalidArgument("'" + v + "' is shorter than " + std::to_string(min_ms) + "ms");
    }
    c.*field = ms.value();
    return Status::Ok();
  };
}

Setter Size(uint64_t SchedulerConfig::*field, uint64_t min) {
  return [=](SchedulerConfig& c, const std::string& v) {
    auto size = ParseSize(v);
    if (!size.ok()) return size.status();
    if (size.value() < min) {
      return InvalidArgument("'" + v + "' is smaller than " + std::to_string(min) + " bytes");
    }
    c.*field = size.value();
    return Status::Ok();
  };
}

Setter Bool(bool SchedulerConfig::*field) {
  return [=](SchedulerConfig& c, const std::string& v) {
    if (v == "true") {
      c.*field = true;
    } else if (v == "false") {
      c.*field = false;
    } else {
      return InvalidArgument("'" + v + "' is not true or false");
    }
    return Status::Ok();
  };
}

Setter Rate(uint64_t SchedulerConfig::*field) {
  return [=](SchedulerConfig& c, const std::string& v) {
    if (v == "0") {
      c.*field = 0;
      return Status::Ok();
    }
    auto rate = ParseRateBytesPerSec(v);
    if (!rate.ok()) return rate.status();
    c.*field = rate.value();
    return Status::Ok();
  };
}

const std::map<std::string, Setter>& Setters() {
  using C = SchedulerConfig;
  static const auto* setters = new std::map<std::string, Setter>{
      {"listen", Text(&C::listen)},
      {"metrics", Text(&C::metrics)},
      {"evaluator", Text(&C::evaluator)},
      {"log_level", Text(&C::log_level)},
      {"auth_token_file", Text(&C::auth_token_file)},
      {"tls_cert_file", Text(&C::tls_cert_file)},
      {"tls_key_file", Text(&C::tls_key_file)},
      {"tls_ca_file", Text(&C::tls_ca_file)},
      {"max_tasks", Count(&C::max_tasks, 1, 100'000'000)},
      {"max_hosts", Count(&C::max_hosts, 1, 100'000'000)},
      {"parent_graph", Text(&C::parent_graph)},
      {"mesh_seed_children", Count(&C::mesh_seed_children, 0, 100000)},
      {"candidate_parent_limit", Count(&C::candidate_parent_limit, 1, 1000)},
      {"filter_parent_limit", Count(&C::filter_parent_limit, 1, 100000)},
      {"cross_idc_children_limit", Count(&C::cross_idc_children_limit, 0, 100000)},
      {"capacity_prior", Rate(&C::capacity_prior)},
      {"store", Text(&C::store)},
      {"dataset_dir", Text(&C::dataset_dir)},
      {"dataset_max_file_size", Size(&C::dataset_max_file_size, 4096)},
      {"dataset_max_files", Count(&C::dataset_max_files, 0, 100000)},
      {"dataset_topology_interval", Duration(&C::dataset_topology_interval_ms, 100)},
      {"trainer", Text(&C::trainer)},
      {"trainer_interval", Duration(&C::trainer_interval_ms, 1000)},
      {"inference", Text(&C::inference)},
      {"inference_model", Text(&C::inference_model)},
      {"inference_deadline", Duration(&C::inference_deadline_ms, 1)},
      {"prediction_ttl", Duration(&C::prediction_ttl_ms, 100)},
      {"infer_groups", Bool(&C::infer_groups)},
      // The daemon probes at most 32 hosts per round (prober.h, kMaxProbeTargets).
      {"probe_count", Count(&C::probe_count, 1, 32)},
      {"probe_queue_length", Count(&C::probe_queue_length, 1, 1000)},
      {"probe_sample_size", Count(&C::probe_sample_size, 1, 10000)},
      {"back_to_source_limit", Count(&C::back_to_source_limit, 0, 100000)},
      {"weak_child_seed_delay", Duration(&C::weak_child_seed_delay_ms, 0)},
      {"schedule_timeout", Duration(&C::schedule_timeout_ms, 0)},
      {"push_interval", Duration(&C::push_interval_ms, 1)},
      {"seed_trigger_attempts", Count(&C::seed_trigger_attempts, 0, 1000)},
      {"gc_interval", Duration(&C::gc_interval_ms, 10)},
      // Well above the background thread's 20 ms tick.
      {"background_stall", Duration(&C::background_stall_ms, 100)},
      {"preheat_registries", Text(&C::preheat_registries)},
      {"peer_ttl", Duration(&C::peer_ttl_ms, 1)},
      {"task_ttl", Duration(&C::task_ttl_ms, 1)},
      {"host_ttl", Duration(&C::host_ttl_ms, 1)},
  };
  return *setters;
}

std::string SnakeCase(std::string name) {
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

}  // namespace

const std::vector<std::string>& OptionNames() {
  static const auto* names = new std::vector<std::string>{"listen",
                                                          "metrics",
                                                          "evaluator",
                                                          "log_level",
                                                          "auth_token_file",
                                                          "tls_cert_file",
                                                          "tls_key_file",
                                                          "tls_ca_file",
                                                          "max_tasks",
                                                          "max_hosts",
                                                          "parent_graph",
                                                          "mesh_seed_children",
                                                          "candidate_parent_limit",
                                                          "filter_parent_limit",
                                                          "cross_idc_children_limit",
                                                          "back_to_source_limit",
                                                          "weak_child_seed_delay",
                                                          "capacity_prior",
                                                          "store",
                                                          "dataset_dir",
                                                          "dataset_max_file_size",
                                                          "dataset_max_files",
                                                          "dataset_topology_interval",
                                                          "trainer",
                                                          "trainer_interval",
                                                          "inference",
                                                          "inference_model",
                                                          "inference_deadline",
                                                          "prediction_ttl",
                                                          "infer_groups",
                                                          "probe_count",
                                                          "probe_queue_length",
                                                          "probe_sample_size",
                                                          "schedule_timeout",
                                                          "push_interval",
                                                          "seed_trigger_attempts",
                                                          "gc_interval",
                                                          "background_stall",
                                                          "preheat_registries",
                                                          "peer_ttl",
                                                          "task_ttl",
                                                          "host_ttl"};
  return *names;
}

Status SetOption(SchedulerConfig& config, const std::string& name, const std::string& value) {
  const auto& setters = Setters();
  auto it = setters.find(SnakeCase(name));
  if (it == setters.end()) return InvalidArgument("unknown option '" + name + "'");
  Status s = it->second(config, value);
  if (!s.ok()) return InvalidArgument(name + ": " + s.message());
  return Status::Ok();
}

namespace {

// Applies the mapping `root` (parsed from `path`) on top of `base`.
Result<SchedulerConfig> ApplyConfig(const YAML::Node& root, const std::string& path,
                                    SchedulerConfig base) {
  if (root.IsNull()) return base;  // an empty file keeps every default
  if (!root.IsMap()) return InvalidArgument("config " + path + ": top level must be a mapping");
  for (const auto& kv : root) {
    // as<std::string>() throws on a sequence or map key ("[a]: 1").
    if (!kv.first.IsScalar()) return InvalidArgument("config " + path + ": keys must be scalars");
    std::string key = kv.first.as<std::string>();
    if (!kv.second.IsScalar()) {
      return InvalidArgument("config " + path + ": " + key + " must be a scalar");
    }
    Status s = SetOption(base, key, kv.second.as<std::string>());
    if (!s.ok()) return InvalidArgument("config " + path + ": " + s.message());
  }
  return base;
}

}  // namespace

Result<SchedulerConfig> LoadConfigFile(const std::string& path, SchedulerConfig base) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFound("config " + path + ": cannot read file");
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config " + path + ": " + e.msg + " at line " +
                           std::to_string(e.mark.line + 1));
  }
  return ApplyConfig(root, path, std::move(base));
}

Result<SchedulerConfig> LoadConfigFromString(const std::string& yaml, const std::string& source,
                                             SchedulerConfig base) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config " + source + ": " + e.msg + " at line " +
                           std::to_string(e.mark.line + 1));
  }
  return ApplyConfig(root, source, std::move(base));
}

Status ValidateConfig(const SchedulerConfig& config) {
  if (config.listen.empty()) return InvalidArgument("listen: address must not be empty");
  if (config.store != "memory" && !config.store.empty()) {
    if (auto redis = ParseRedisUrl(config.store); !redis.ok()) {
      return InvalidArgument("store: " + redis.status().message());
    }
  }
  if (!config.trainer.empty() && config.dataset_dir.empty()) {
    return InvalidArgument(
        "trainer: the dataset sent to the trainer is the records dataset: set dataset_dir "
        "(--dataset-dir) too");
  }
  if (!config.trainer.empty() && config.trainer.find(':') == std::string::npos) {
    return InvalidArgument("trainer: '" + config.trainer + "' is not HOST:PORT");
  }
  if (!config.inference.empty() && config.inference.find(':') == std::string::npos) {
    return InvalidArgument("inference: '" + config.inference + "' is not HOST:PORT");
  }
  if (config.evaluator == "ml" && config.inference.empty()) {
    return InvalidArgument(
        "evaluator ml: set inference (--inference HOST:PORT of dfinference or Triton)");
  }
  if (config.inference_model.empty() || config.inference_model.size() > 256 ||
      config.inference_model.find_first_of("/\\") != std::string::npos) {
    return InvalidArgument("inference_model: a plain model name, got '" + config.inference_model +
                           "'");
  }
  if (config.inference_deadline_ms > 10'000) {
    return InvalidArgument("inference_deadline: at most 10s (it bounds one ModelInfer)");
  }
  if (config.parent_graph != "dag" && config.parent_graph != "mesh") {
    return InvalidArgument("parent_graph: unknown value '" + config.parent_graph +
                           "' (expected dag or mesh)");
  }
  if (!IsKnownEvaluator(config.evaluator)) {
    return InvalidArgument("evaluator: unknown evaluator '" + config.evaluator +
                           "' (available: " + KnownEvaluatorNames() + ")");
  }
  const bool tls_any =
      !config.tls_cert_file.empty() || !config.tls_key_file.empty() || !config.tls_ca_file.empty();
  const bool tls_all =
      !config.tls_cert_file.empty() && !config.tls_key_file.empty() && !config.tls_ca_file.empty();
  if (tls_any && !tls_all) {
    return InvalidArgument(
        "tls_cert_file, tls_key_file and tls_ca_file (--tls-cert, --tls-key, --tls-ca) must be "
        "set together");
  }
  if (config.filter_parent_limit < config.candidate_parent_limit) {
    return InvalidArgument("filter_parent_limit (" + std::to_string(config.filter_parent_limit) +
                           ") must be >= candidate_parent_limit (" +
                           std::to_string(config.candidate_parent_limit) + ")");
  }
  if (auto hosts = oci::ParseAllowedHosts(config.preheat_registries); !hosts.ok()) {
    return InvalidArgument("preheat_registries: " + hosts.status().message());
  }
  if (config.probe_sample_size < config.probe_count) {
    return InvalidArgument("probe_sample_size (" + std::to_string(config.probe_sample_size) +
                           ") must be >= probe_count (" + std::to_string(config.probe_count) + ")");
  }
  return Status::Ok();
}

}  // namespace df::scheduler
