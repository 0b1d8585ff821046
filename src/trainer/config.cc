#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <filesystem>

#include "common/units.h"

namespace df::trainer {
namespace {

template <typename T>
Status ParseInt(const std::string& name, const std::string& v, T min, T max, T& out) {
  T x{};
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || end != v.data() + v.size() || x < min || x > max) {
    return InvalidArgument(name + ": expected an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "], got \"" + v + "\"");
  }
  out = x;
  return Status::Ok();
}

Status ParseDouble(const std::string& name, const std::string& v, double min, double max,
                   double& out) {
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used == v.size() && x >= min && x <= max) {
      out = x;
      return Status::Ok();
    }
  } catch (const std::exception&) {
  }
  return InvalidArgument(name + ": expected a number in [" + std::to_string(min) + ", " +
                         std::to_string(max) + "], got \"" + v + "\"");
}

}  // namespace

const std::vector<ConfigOption>& ConfigOptions() {
  static const std::vector<ConfigOption> kOptions = {
      {"listen", "gRPC address of the Trainer service (bound exactly)"},
      {"metrics", "address serving /metrics and /healthz (\"\" disables)"},
      {"log_level", "trace, debug, info, warn, error, critical or off"},
      {"auth_token_file", "file with the cluster's shared token: every Train call must carry it"},
      {"tls_cert_file", "mutual TLS: this trainer's certificate chain (PEM)"},
      {"tls_key_file", "mutual TLS: its private key (PEM)"},
      {"tls_ca_file", "mutual TLS: the cluster CA that client certificates must chain to (PEM)"},
      {"repo", "model repository root (Triton layout: REPO/MODEL/VERSION/model.pt)"},
      {"model_name", "model directory in the repository"},
      {"train_once",
       "train once from this dataset dir (download*.csv, networktopology*.csv), "
       "publish if better, exit: 0 published, 3 not better, 1 failed"},
      {"epochs", "training epochs per run (each model, same budget)"},
      {"batch_size", "training batch size"},
      {"learning_rate", "Adam learning rate"},
      {"threads", "torch intra-op threads"},
      {"nice", "nice value of the training thread (0-19): serving and receiving go first"},
      {"holdout_fraction", "fraction of host pairs held out for evaluation"},
      {"min_improvement", "relative MAPE gain a new version needs over the latest"},
      {"max_batch_size", "max_batch_size written to config.pbtxt"},
      {"max_dataset_size", "largest dataset one Train stream may send (e.g. 1GiB)"},
      {"warm_start", "start from the latest version's weights (true/false)"},
  };
  return kOptions;
}

Status SetOption(TrainerConfig& c, std::string name, const std::string& v) {
  std::replace(name.begin(), name.end(), '-', '_');
  if (name == "listen") return c.listen = v, Status::Ok();
  if (name == "metrics") return c.metrics = v, Status::Ok();
  if (name == "log_level") return c.log_level = v, Status::Ok();
  if (name == "auth_token_file") return c.auth_token_file = v, Status::Ok();
  if (name == "tls_cert_file") return c.tls_cert_file = v, Status::Ok();
  if (name == "tls_key_file") return c.tls_key_file = v, Status::Ok();
  if (name == "tls_ca_file") return c.tls_ca_file = v, Status::Ok();
  if (name == "repo") return c.train.repo = v, Status::Ok();
  if (name == "train_once") return c.train_once = v, Status::Ok();
  if (name == "model_name") {
    if (v.empty() || v.starts_with('.') || v.find('/') != std::string::npos) {
      return InvalidArgument("model_name: a plain directory name, got \"" + v + "\"");
    }
    c.train.model_name = v;
    return Status::Ok();
  }
  if (name == "epochs") return ParseInt(name, v, 0, 100'000, c.train.epochs);
  if (name == "batch_size") return ParseInt(name, v, 1, 1 << 20, c.train.batch_size);
  if (name == "threads") return ParseInt(name, v, 1, 1024, c.train.threads);
  if (name == "nice") return ParseInt(name, v, 0, 19, c.train.nice);
  if (name == "max_batch_size") return ParseInt(name, v, 1, 1 << 20, c.train.max_batch_size);
  if (name == "learning_rate") return ParseDouble(name, v, 1e-7, 1.0, c.train.learning_rate);
  if (name == "holdout_fraction") return ParseDouble(name, v, 0.01, 0.9, c.train.holdout_fraction);
  if (name == "min_improvement") return ParseDouble(name, v, 0.0, 0.99, c.train.min_improvement);
  if (name == "warm_start") {
    if (v != "true" && v != "false") return InvalidArgument("warm_start: true or false");
    c.train.warm_start = v == "true";
    return Status::Ok();
  }
  if (name == "max_dataset_size") {
    auto size = ParseSize(v);
    if (!size.ok()) return InvalidArgument("max_dataset_size: " + size.status().message());
    c.limits.max_dataset_bytes = *size;
    return Status::Ok();
  }
  return InvalidArgument("unknown option " + name);
}

std::string OptionText(const TrainerConfig& c, const std::string& name) {
  if (name == "listen") return c.listen;
  if (name == "metrics") return c.metrics;
  if (name == "log_level") return c.log_level;
  if (name == "auth_token_file") return c.auth_token_file;
  if (name == "tls_cert_file") return c.tls_cert_file;
  if (name == "tls_key_file") return c.tls_key_file;
  if (name == "tls_ca_file") return c.tls_ca_file;
  if (name == "repo") return c.train.repo;
  if (name == "model_name") return c.train.model_name;
  if (name == "epochs") return std::to_string(c.train.epochs);
  if (name == "batch_size") return std::to_string(c.train.batch_size);
  if (name == "threads") return std::to_string(c.train.threads);
  if (name == "nice") return std::to_string(c.train.nice);
  if (name == "max_batch_size") return std::to_string(c.train.max_batch_size);
  if (name == "learning_rate") return std::to_string(c.train.learning_rate);
  if (name == "holdout_fraction") return std::to_string(c.train.holdout_fraction);
  if (name == "min_improvement") return std::to_string(c.train.min_improvement);
  if (name == "warm_start") return c.train.warm_start ? "true" : "false";
  if (name == "max_dataset_size") return std::to_string(c.limits.max_dataset_bytes);
  return "";
}

Status LoadConfigFile(const std::string& path, TrainerConfig& config) {
  if (!std::filesystem::exists(path)) return NotFound("config file " + path);
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (root.IsNull()) return Status::Ok();
    if (!root.IsMap()) return InvalidArgument(path + ": expected a mapping of options");
    for (const auto& kv : root) {
      if (!kv.second.IsScalar()) {
        return InvalidArgument(path + ": " + kv.first.as<std::string>() + " is not a scalar");
      }
      Status s = SetOption(config, kv.first.as<std::string>(), kv.second.as<std::string>());
      if (!s.ok()) return InvalidArgument(path + ": " + s.message());
    }
  } catch (const YAML::Exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  return Status::Ok();
}

}  // namespace df::trainer
