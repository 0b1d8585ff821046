// The model repository as served: which models exist, which versions are loaded, which failed.
//
// On disk (Triton's layout; the trainer publishes a version by renaming a complete directory in):
//   <root>/<model>/config.pbtxt             the model's config (model_config.h)
//   <root>/<model>/<version>/model.pt       TorchScript; <version> is a positive decimal number
// A directory whose name starts with '.' is ignored, as is a model directory without
// config.pbtxt and a version directory without its model file (not complete yet).
//
// Every poll (a thread of its own, every poll_interval) rescans the root. For each model it
// picks, newest first, the versions its version policy serves (by default the newest one) and
// loads those not loaded yet, while the versions already loaded keep serving; only when the
// loads are done is the new set published, as a new immutable snapshot (a shared_ptr swap), so a
// request always sees a complete set and keeps the version it resolved for as long as it runs.
// A version that fails to load (corrupt file, not TorchScript, does not fit the config) is logged,
// counted, shown in the snapshot with its reason, and not retried until its model file or the
// config changes; the next older version is tried instead. When no version on disk can be
// served, the versions already loaded stay. A model whose config.pbtxt stops parsing keeps its
// loaded versions (loaded under the old config) and shows the reason. A model whose directory
// disappears is unloaded.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "inference/metrics.h"
#include "inference/model_config.h"
#include "inference/torch_model.h"

namespace df::inference {

// One model as served. Immutable once published.
struct ModelState {
  std::string name;
  // The config loaded versions were loaded under (the newest valid one); null until one parsed.
  std::shared_ptr<const ServingConfig> config;
  // Loaded versions, newest first.
  std::map<int64_t, std::shared_ptr<const TorchModel>, std::greater<>> loaded;
  std::map<int64_t, std::string> failed;  // versions on disk that failed to load, with why
  std::string reason;                     // why the model cannot take new versions ("" = fine)

  // The newest loaded version, or null.
  std::shared_ptr<const TorchModel> Newest() const {
    return loaded.empty() ? nullptr : loaded.begin()->second;
  }
};

// What a request sees: every model, at one instant.
struct RepositorySnapshot {
  std::map<std::string, std::shared_ptr<const ModelState>> models;
  bool scanned = false;  // the first poll has finished
};

// Thread-safe: Snapshot() from any thread; PollOnce() from one thread at a time (the polling
// thread, or a test that did not Start()). `metrics` (may be null) must outlive this.
class ModelRepository {
 public:
  ModelRepository(std::string root, std::chrono::milliseconds poll_interval,
                  InferenceMetrics* metrics);
  // Stops the polling thread (waiting for a load in progress to finish).
  ~ModelRepository();
  ModelRepository(const ModelRepository&) = delete;
  ModelRepository& operator=(const ModelRepository&) = delete;

  // Starts the polling thread: a poll at once, then one every poll_interval.
  void Start();
  // Stops and joins the polling thread. Idempotent.
  void Stop();
  // One poll, on the caller's thread (above).
  void PollOnce();

  std::shared_ptr<const RepositorySnapshot> Snapshot() const;
  const std::string& root() const { return root_; }

 private:
  struct ConfigCache;
  struct VersionOnDisk;
  struct FailedLoad;

  void Run();
  // Rescans one model's directory and publishes its new state.
  void PollModel(const std::string& name, const std::string& dir);
  // The parsed config of `name` (cached while config.pbtxt's text is unchanged), or the error.
  Result<std::shared_ptr<const ServingConfig>> ReadConfig(const std::string& name,
                                                          const std::string& dir);
  // Loads `v` unless it failed before with the same file and config; null when it cannot.
  std::shared_ptr<const TorchModel> LoadVersion(const std::string& name,
                                                const std::shared_ptr<const ServingConfig>& config,
                                                const VersionOnDisk& v);
  void Publish(const std::string& name, std::shared_ptr<const ModelState> state);
  void Unpublish(const std::string& name);

  const std::string root_;
  const std::chrono::milliseconds poll_interval_;
  InferenceMetrics* const metrics_;

  // Only touched by the thread that polls (serialised by poll_mu_).
  std::mutex poll_mu_;
  std::map<std::string, std::unique_ptr<ConfigCache>> configs_;
  std::map<std::pair<std::string, int64_t>, std::unique_ptr<FailedLoad>> failed_;
  std::string last_scan_error_;

  mutable std::mutex mu_;
  std::shared_ptr<const RepositorySnapshot> snapshot_;  // GUARDED_BY(mu_)
  bool stop_ = false;                                   // GUARDED_BY(mu_)
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace df::inference
