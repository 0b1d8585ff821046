// Fuzz target: dfscheduler's configuration (src/scheduler/config.h): SetOption on name/value
// pairs and LoadConfigFromString on YAML. Input: a first byte that picks the mode, then for
// SetOption "name=value" lines, for YAML the file.
//
// Invariants: nothing throws; every successful SetOption leaves each option inside the range it
// declares; and a config that validates constructs a Scheduler (whose constructor turns
// gc_interval into a time point) without overflow.
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>

#include "fuzz_input.h"
#include "scheduler/config.h"
#include "scheduler/evaluator.h"
#include "scheduler/metrics.h"
#include "scheduler/scheduler.h"

namespace sched = df::scheduler;

namespace {

void CheckDuration(uint64_t ms) {
  constexpr auto kMaxMs =
      static_cast<uint64_t>(std::chrono::nanoseconds::max().count() / 1'000'000 / 2);
  DF_FUZZ_CHECK(ms <= kMaxMs);
}

// The ranges config.cc declares for each option.
void CheckRanges(const sched::SchedulerConfig& c) {
  DF_FUZZ_CHECK(c.max_tasks >= 1 && c.max_tasks <= 100'000'000);
  DF_FUZZ_CHECK(c.max_hosts >= 1 && c.max_hosts <= 100'000'000);
  DF_FUZZ_CHECK(c.candidate_parent_limit >= 1 && c.candidate_parent_limit <= 1000);
  DF_FUZZ_CHECK(c.filter_parent_limit >= 1 && c.filter_parent_limit <= 100000);
  DF_FUZZ_CHECK(c.cross_idc_children_limit <= 100000 && c.back_to_source_limit <= 100000);
  DF_FUZZ_CHECK(c.seed_trigger_attempts <= 1000);
  DF_FUZZ_CHECK(c.push_interval_ms >= 1 && c.gc_interval_ms >= 10 && c.peer_ttl_ms >= 1 &&
                c.task_ttl_ms >= 1 && c.host_ttl_ms >= 1);
  for (uint64_t ms : {c.weak_child_seed_delay_ms, c.schedule_timeout_ms, c.push_interval_ms,
                      c.gc_interval_ms, c.peer_ttl_ms, c.task_ttl_ms, c.host_ttl_ms}) {
    CheckDuration(ms);
  }
}

void Construct(const sched::SchedulerConfig& config) {
  if (!sched::ValidateConfig(config).ok()) return;
  static auto* registry = new prometheus::Registry();
  static auto* metrics = new sched::SchedulerMetrics(*registry);
  auto evaluator = sched::NewEvaluator(config.evaluator);
  DF_FUZZ_CHECK(evaluator.ok());
  sched::Scheduler scheduler(config, std::move(evaluator).value(), nullptr, metrics);
}

void SetOptions(std::string_view text) {
  sched::SchedulerConfig config;
  while (!text.empty()) {
    size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    (void)sched::SetOption(config, std::string(line.substr(0, eq)),
                           std::string(line.substr(eq + 1)));
    CheckRanges(config);
  }
  Construct(config);
}

void LoadYaml(std::string_view text) {
  auto config = sched::LoadConfigFromString(std::string(text), "fuzz.yaml", {});
  if (!config.ok()) return;
  CheckRanges(config.value());
  Construct(config.value());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  df::fuzz::FuzzInput in(data, size);
  const bool yaml = in.U8() & 1;
  std::string_view rest = in.Rest();
  if (yaml) {
    LoadYaml(rest);
  } else {
    SetOptions(rest);
  }
  return 0;
}
