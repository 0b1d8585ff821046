// dfinference: serves the newest model versions of a Triton-layout repository over the KServe v2
// gRPC protocol. Parses flags and the YAML config, wires the metrics server and the
// InferenceServer together, and runs until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>
#include <string>

#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/metrics.h"
#include "common/version.h"
#include "inference/config.h"
#include "inference/server.h"
#include "inference/service.h"
#include "inference/torch_model.h"

namespace {

using df::inference::InferenceConfig;

struct FlagHelp {
  const char* name;  // snake_case option name
  const char* help;
};

constexpr FlagHelp kFlags[] = {
    {"repo",
     "model repository root in Triton's layout: <repo>/<model>/config.pbtxt, "
     "<repo>/<model>/<version>/model.pt (required)"},
    {"listen", "gRPC address of the KServe v2 service (HOST:PORT; port 0 = any)"},
    {"metrics", "address serving /metrics and /healthz (\"\" disables)"},
    {"poll_interval", "how often the repository is rescanned for new versions"},
    {"threads", "libtorch intra-op threads (torch::set_num_threads)"},
    {"rpc_threads", "most gRPC calls served at once"},
    {"max_request_size", "largest request accepted (e.g. 4MiB)"},
    {"log_level", "trace, debug, info, warn, error, critical or off"},
    {"log_file", "log to this file instead of stderr"},
};

std::string Kebab(std::string name) {
  for (char& c : name) c = c == '_' ? '-' : c;
  return name;
}

std::string DefaultText(const std::string& name) {
  const InferenceConfig d;
  const std::map<std::string, std::string> defaults = {
      {"listen", d.listen},
      {"metrics", d.metrics},
      {"poll_interval", "5s"},
      {"threads", std::to_string(d.threads)},
      {"rpc_threads", std::to_string(d.rpc_threads)},
      {"max_request_size", "4MiB"},
      {"log_level", d.log_level},
  };
  auto it = defaults.find(name);
  return it == defaults.end() ? "" : it->second;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "dfinference: %s\n", message.c_str());
  return 2;
}

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
  CLI::App app{
      "dfinference: serves a Triton-layout model repository (TorchScript) over the "
      "KServe v2 gRPC inference protocol"};
  std::string config_path;
  app.add_option("--config", config_path, "YAML config file (keys = flag names in snake_case)");
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");
  std::map<std::string, std::string> values;
  for (const auto& flag : kFlags) {
    app.add_option("--" + Kebab(flag.name), values[flag.name], flag.help)
        ->default_str(DefaultText(flag.name));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    return Fail(std::string(e.what()) + " (see --help)");
  }
  if (version) {
    std::printf("%s\n", df::VersionLine(df::inference::kServerName).c_str());
    return 0;
  }

  InferenceConfig config;
  if (!config_path.empty()) {
    auto loaded = df::inference::LoadConfigFile(config_path, config);
    if (!loaded.ok()) return Fail(loaded.status().message());
    config = std::move(loaded).value();
  }
  for (const auto& flag : kFlags) {
    if (app.count("--" + Kebab(flag.name)) == 0) continue;
    df::Status s = df::inference::SetOption(config, Kebab(flag.name), values[flag.name]);
    if (!s.ok()) return Fail("--" + s.message());
  }
  if (df::Status s = df::inference::ValidateConfig(config); !s.ok()) return Fail(s.message());
  if (df::Status s = df::InitLogging("dfinference", config.log_level, config.log_file); !s.ok()) {
    return Fail(s.message());
  }
  df::inference::SetTorchThreads(static_cast<int>(config.threads));

  sigset_t stop_signals = BlockStopSignals();
  df::MetricsServer metrics;
  if (!config.metrics.empty()) {
    if (df::Status s = metrics.Start(config.metrics); !s.ok()) return Fail(s.message());
  }
  auto server = df::inference::InferenceServer::Start(config, metrics.registry());
  if (!server.ok()) return Fail(server.status().message());
  DF_LOG_INFO("dfinference listening listen={} port={} metrics={} metrics_port={} repo={}",
              config.listen, server.value()->port(), config.metrics, metrics.port(), config.repo);

  int signal = 0;
  sigwait(&stop_signals, &signal);
  DF_LOG_INFO("dfinference stopping signal={}", signal);
  metrics.SetHealthy(false);
  server.value()->Shutdown();
  return 0;
}
