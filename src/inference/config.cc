#include "inference/config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <functional>
#include <map>

#include "common/units.h"

namespace df::inference {
namespace {

using Setter = std::function<Status(InferenceConfig&, const std::string&)>;

Status ParseU32(const std::string& value, uint32_t& out, uint32_t min, uint32_t max) {
  uint32_t v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (ec != std::errc() || ptr != value.data() + value.size() || v < min || v > max) {
    return InvalidArgument("'" + value + "' is not an integer in " + std::to_string(min) + ".." +
                           std::to_string(max));
  }
  out = v;
  return Status::Ok();
}

const std::map<std::string, Setter>& Setters() {
  static const std::map<std::string, Setter> kSetters = {
      {"repo",
       [](InferenceConfig& c, const std::string& v) {
         c.repo = v;
         return Status::Ok();
       }},
      {"listen",
       [](InferenceConfig& c, const std::string& v) {
         c.listen = v;
         return Status::Ok();
       }},
      {"metrics",
       [](InferenceConfig& c, const std::string& v) {
         c.metrics = v;
         return Status::Ok();
       }},
      {"poll_interval",
       [](InferenceConfig& c, const std::string& v) {
         auto ms = ParseDurationMs(v);
         if (!ms.ok()) return ms.status();
         if (ms.value() == 0) return InvalidArgument("must be > 0");
         c.poll_interval_ms = ms.value();
         return Status::Ok();
       }},
      {"threads",
       [](InferenceConfig& c, const std::string& v) { return ParseU32(v, c.threads, 1, 256); }},
      {"rpc_threads", [](InferenceConfig& c,
                         const std::string& v) { return ParseU32(v, c.rpc_threads, 2, 1024); }},
      {"max_request_size",
       [](InferenceConfig& c, const std::string& v) {
         auto size = ParseSize(v);
         if (!size.ok()) return size.status();
         if (size.value() < 1024 || size.value() > (1ull << 30)) {
           return InvalidArgument("must be in 1KiB..1GiB");
         }
         c.max_request_size = size.value();
         return Status::Ok();
       }},
      {"log_level",
       [](InferenceConfig& c, const std::string& v) {
         c.log_level = v;
         return Status::Ok();
       }},
      {"log_file",
       [](InferenceConfig& c, const std::string& v) {
         c.log_file = v;
         return Status::Ok();
       }},
  };
  return kSetters;
}

std::string SnakeCase(std::string name) {
  for (char& c : name) c = c == '-' ? '_' : c;
  return name;
}

}  // namespace

const std::vector<std::string>& OptionNames() {
  static const std::vector<std::string> kNames = {
      "repo",        "listen",           "metrics",   "poll_interval", "threads",
      "rpc_threads", "max_request_size", "log_level", "log_file"};
  return kNames;
}

Status SetOption(InferenceConfig& config, const std::string& name, const std::string& value) {
  auto it = Setters().find(SnakeCase(name));
  if (it == Setters().end()) return InvalidArgument("unknown option '" + name + "'");
  Status s = it->second(config, value);
  if (!s.ok()) return InvalidArgument(name + ": " + s.message());
  return Status::Ok();
}

Result<InferenceConfig> LoadConfigFile(const std::string& path, InferenceConfig base) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFound("config " + path + ": cannot read file");
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config " + path + ": " + e.msg + " at line " +
                           std::to_string(e.mark.line + 1));
  }
  if (root.IsNull()) return base;
  if (!root.IsMap()) return InvalidArgument("config " + path + ": top level must be a mapping");
  for (const auto& kv : root) {
    if (!kv.first.IsScalar() || !kv.second.IsScalar()) {
      return InvalidArgument("config " + path + ": keys and values must be scalars");
    }
    Status s = SetOption(base, kv.first.as<std::string>(), kv.second.as<std::string>());
    if (!s.ok()) return InvalidArgument("config " + path + ": " + s.message());
  }
  return base;
}

Status ValidateConfig(const InferenceConfig& config) {
  if (config.repo.empty()) return InvalidArgument("--repo is required");
  if (config.listen.empty()) return InvalidArgument("--listen must not be empty");
  return Status::Ok();
}

}  // namespace df::inference
