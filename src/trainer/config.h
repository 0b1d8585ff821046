// Configuration of dftrainer: defaults, then a YAML file (--config), then flags. One name per
// option: the YAML key is snake_case ("model_name"), the flag kebab-case ("--model-name").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "trainer/service.h"
#include "trainer/trainer.h"

namespace df::trainer {

struct TrainerConfig {
  std::string listen = "127.0.0.1:9090";   // gRPC Trainer service
  std::string metrics = "127.0.0.1:9091";  // /metrics and /healthz; "" disables
  std::string log_level = "info";
  // Control-plane authentication (docs/security.md), as dfscheduler's: a shared token file
  // every Train call must carry, and/or mutual TLS (all three files). The trainer's port is
  // reachable by strangers: without either, anyone who can reach it can feed it a dataset.
  std::string auth_token_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  std::string train_once;     // dataset dir: train once, publish, exit
  TrainOptions train;         // repo, model_name, epochs, threads, ...
  TrainServiceLimits limits;  // max_dataset_size, ...
};

struct ConfigOption {
  const char* name;  // snake_case
  const char* help;
};
// Every option, for --help and the YAML keys.
const std::vector<ConfigOption>& ConfigOptions();

// Sets option `name` (snake_case or kebab-case) from its text. InvalidArgument naming the option
// when the name is unknown or the value does not parse or is out of range.
Status SetOption(TrainerConfig& config, std::string name, const std::string& value);
// The option's current value as text (for --help defaults).
std::string OptionText(const TrainerConfig& config, const std::string& name);

// Reads a YAML mapping of option names to scalars. NotFound / InvalidArgument with the path.
Status LoadConfigFile(const std::string& path, TrainerConfig& config);

}  // namespace df::trainer
