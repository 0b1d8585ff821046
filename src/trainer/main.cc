// dftrainer: trains the bandwidth model of the learning loop. Parses flags and the YAML config,
// then either trains once from a dataset directory (--train-once DIR) and exits, or serves the
// Trainer gRPC service with its training loop, metrics and health until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>
#include <string>

#include "common/grpc_limits.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/version.h"
#include "learning/dataset.h"
#include "learning/features.h"
#include "trainer/config.h"
#include "trainer/service.h"
#include "trainer/trainer.h"

namespace {

constexpr int kExitPublished = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNotBetter = 3;

int Fail(const std::string& message, int code = kExitUsage) {
  std::fprintf(stderr, "dftrainer: %s\n", message.c_str());
  return code;
}

std::string Kebab(std::string name) {
  for (char& c : name) c = c == '_' ? '-' : c;
  return name;
}

sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int TrainOnce(const df::trainer::TrainerConfig& config) {
  auto dataset = df::learning::ReadDatasetDir(config.train_once);
  if (!dataset.ok()) return Fail(dataset.status().message(), kExitFailed);
  const auto& stats = (*dataset)->stats();
  DF_LOG_INFO("dataset read dir={} download_rows={} topology_rows={} bad_rows={} dropped_rows={}",
              config.train_once, stats.download_rows, stats.topology_rows, stats.bad_rows,
              stats.dropped_rows);
  auto report = df::trainer::TrainAndPublish(**dataset, config.train);
  if (!report.ok()) return Fail(report.status().message(), kExitFailed);
  std::printf("hosts=%lu train_pairs=%lu validation_pairs=%lu warm_started=%d\n",
              static_cast<unsigned long>(report->hosts),
              static_cast<unsigned long>(report->train_pairs),
              static_cast<unsigned long>(report->validation_pairs), report->warm_started);
  std::printf("MAPE gnn=%.4f feature_mlp=%.4f history=%.4f", report->gnn.mape,
              report->feature_mlp.mape, report->history.mape);
  if (report->current) std::printf(" latest_version=%.4f", report->current->mape);
  std::printf("\n");
  if (report->published_version > 0) {
    std::printf("published version %ld (%s)\n", static_cast<long>(report->published_version),
                report->decision.c_str());
    return kExitPublished;
  }
  std::printf("nothing published: %s\n", report->decision.c_str());
  return config.train.repo.empty() ? kExitPublished : kExitNotBetter;
}

int Serve(const df::trainer::TrainerConfig& config) {
  sigset_t stop_signals = BlockStopSignals();
  df::MetricsServer metrics;
  if (!config.metrics.empty()) {
    if (df::Status s = metrics.Start(config.metrics); !s.ok())
      return Fail(s.message(), kExitFailed);
  }
  df::trainer::TrainerMetrics trainer_metrics(metrics.registry());
  df::trainer::TrainingLoop loop(config.train, &trainer_metrics);
  loop.Start();
  auto auth = df::ControlAuth::Load(
      config.auth_token_file,
      df::TlsFiles{config.tls_cert_file, config.tls_key_file, config.tls_ca_file});
  if (!auth.ok()) return Fail(auth.status().message(), kExitUsage);
  if (!auth.value().authenticates_callers()) {
    DF_LOG_WARN(
        "no auth_token_file and no TLS: anyone who reaches {} can send datasets "
        "(see docs/security.md)",
        config.listen);
  }
  df::trainer::TrainerService service(config.limits, &loop, &trainer_metrics, &auth.value());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config.listen, auth.value().ServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.limits.max_chunk_bytes) + (64 << 10));
  df::ApplyServerLimits(builder);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail("cannot listen on " + config.listen, kExitFailed);
  }
  DF_LOG_INFO("dftrainer listening listen={} port={} metrics={} metrics_port={} repo={} model={}",
              config.listen, port, config.metrics, metrics.port(), config.train.repo,
              config.train.model_name);
  int signal = 0;
  sigwait(&stop_signals, &signal);
  DF_LOG_INFO("dftrainer stopping signal={}", signal);
  metrics.SetHealthy(false);
  server->Shutdown();
  loop.Stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "dftrainer: trains the bandwidth GNN from schedulers' datasets and publishes "
      "versions into a Triton-layout model repository"};
  std::string config_path;
  bool version = false;
  app.add_option("--config", config_path, "YAML config file (keys = flag names in snake_case)");
  app.add_flag("--version", version, "print the version and exit");
  const df::trainer::TrainerConfig defaults;
  std::map<std::string, std::string> values;
  for (const auto& option : df::trainer::ConfigOptions()) {
    app.add_option("--" + Kebab(option.name), values[option.name], option.help)
        ->default_str(df::trainer::OptionText(defaults, option.name));
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
    std::printf("%s\nfeature version %d\n", df::VersionLine("dftrainer").c_str(),
                df::learning::kFeatureVersion);
    return 0;
  }
  df::trainer::TrainerConfig config;
  if (!config_path.empty()) {
    if (df::Status s = df::trainer::LoadConfigFile(config_path, config); !s.ok()) {
      return Fail(s.message());
    }
  }
  for (const auto& option : df::trainer::ConfigOptions()) {
    if (app.count("--" + Kebab(option.name)) == 0) continue;
    if (df::Status s = df::trainer::SetOption(config, option.name, values[option.name]); !s.ok()) {
      return Fail("--" + s.message());
    }
  }
  if (df::Status s = df::InitLogging("dftrainer", config.log_level); !s.ok()) {
    return Fail(s.message());
  }
  if (!config.train_once.empty()) return TrainOnce(config);
  if (config.train.repo.empty()) return Fail("--repo is required to serve");
  return Serve(config);
}
