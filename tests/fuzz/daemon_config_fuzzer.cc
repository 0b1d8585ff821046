// Fuzz target: dfdaemon's YAML configuration (src/daemon/config.h). The input is the file.
//
// Invariants: loading never throws (a bad file is an error value); a config that loads and
// validates keeps the ranges ValidateDaemonConfig promises, and each of its durations can be
// added to steady_clock::now() as the daemon does without overflowing.
#include <chrono>
#include <string>

#include "daemon/config.h"
#include "fuzz_input.h"

namespace {

// Durations are used as now() + milliseconds(d) (timeouts, intervals): they must fit in
// nanoseconds with room for the clock's own value.
void CheckDuration(uint64_t ms) {
  constexpr auto kMaxMs =
      static_cast<uint64_t>(std::chrono::nanoseconds::max().count() / 1'000'000 / 2);
  DF_FUZZ_CHECK(ms <= kMaxMs);
}

void CheckValid(const df::DaemonConfig& c) {
  DF_FUZZ_CHECK(!c.hostname.empty() && !c.ip.empty() && !c.listen_ip.empty());
  DF_FUZZ_CHECK(c.max_running_tasks >= 1 && c.max_running_tasks <= 4096);
  DF_FUZZ_CHECK(!c.data_dir.empty() && !c.sock.empty());
  DF_FUZZ_CHECK(c.concurrency >= 1 && c.concurrency <= 256);
  DF_FUZZ_CHECK(c.per_parent_concurrency >= 1 && c.origin_concurrency >= 1);
  DF_FUZZ_CHECK(c.piece_pipeline_depth >= 1 && c.piece_pipeline_depth <= 64);
  DF_FUZZ_CHECK(c.piece_retry_limit >= 1);
  DF_FUZZ_CHECK(c.disk_low_watermark > 0 && c.disk_low_watermark < c.disk_high_watermark &&
                c.disk_high_watermark <= 1.0);
  for (const std::string& dir : c.allow_file_dirs) DF_FUZZ_CHECK(!dir.empty() && dir[0] == '/');
  DF_FUZZ_CHECK(c.probe_interval_ms == 0 || c.probe_interval_ms >= 100);
  DF_FUZZ_CHECK(c.probe_timeout_ms >= 1 && c.probe_timeout_ms <= 60000);
  for (uint64_t ms : {c.announce_interval_ms, c.schedule_timeout_ms, c.probe_interval_ms,
                      c.probe_timeout_ms, c.piece_timeout_ms, c.gc_interval_ms, c.task_ttl_ms}) {
    CheckDuration(ms);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  df::DaemonConfig config;
  // Preset so that ValidateDaemonConfig does not ask the system (unless the file clears them).
  config.hostname = "fuzz-host";
  config.ip = "192.0.2.1";
  if (!df::LoadDaemonConfigFromString(yaml, "fuzz.yaml", &config).ok()) return 0;
  if (!df::ValidateDaemonConfig(&config).ok()) return 0;
  CheckValid(config);
  return 0;
}
