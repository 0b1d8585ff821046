#include "inference/model_repository.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/log.h"

namespace df::inference {

namespace fs = std::filesystem;

// The identity of a model file: a rewrite or replacement changes it.
struct FileKey {
  uint64_t dev = 0, ino = 0, size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileKey&) const = default;
};

struct ModelRepository::ConfigCache {
  std::string text;
  Result<std::shared_ptr<const ServingConfig>> result = Internal("not parsed");
};

struct ModelRepository::VersionOnDisk {
  int64_t version = 0;
  std::string path;  // of the model file
  FileKey key;
};

struct ModelRepository::FailedLoad {
  FileKey key;
  std::shared_ptr<const ServingConfig> config;  // the config it failed under
  std::string reason;
};

namespace {

constexpr size_t kMaxConfigBytes = 1 << 20;

// A positive decimal without sign or leading zero that fits int64; 0 otherwise.
int64_t ParseVersion(const std::string& name) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return 0;
  int64_t v = 0;
  for (char c : name) {
    if (c < '0' || c > '9') return 0;
    v = v * 10 + (c - '0');
  }
  return v;
}

// The key of regular file `path`; false when it is not one.
bool StatRegular(const std::string& path, FileKey& key) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  key = {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
         static_cast<uint64_t>(st.st_size),
         static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
  return true;
}

// Subdirectories of `dir` whose names do not start with '.'; false when `dir` cannot be read.
bool ListDirectories(const std::string& dir, std::vector<std::string>& names) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return false;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return false;
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code type_ec;
    if (it->is_directory(type_ec)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return true;
}

// Complete versions of the model in `dir` that `config` serves, newest first.
std::vector<int64_t> ListVersions(const std::string& dir, const ServingConfig& config,
                                  std::map<int64_t, std::string>& paths,
                                  std::map<int64_t, FileKey>& keys) {
  std::vector<std::string> names;
  std::vector<int64_t> versions;
  if (!ListDirectories(dir, names)) return versions;
  for (const std::string& name : names) {
    int64_t v = ParseVersion(name);
    if (v == 0 || (!config.specific.empty() && config.specific.count(v) == 0)) continue;
    std::string path = dir + "/" + name + "/" + config.model_filename;
    FileKey key;
    if (!StatRegular(path, key)) continue;  // not complete (yet)
    versions.push_back(v);
    paths[v] = path;
    keys[v] = key;
  }
  std::sort(versions.rbegin(), versions.rend());
  return versions;
}

bool ReadSmallFile(const std::string& path, std::string& text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream out;
  out << in.rdbuf();
  text = out.str();
  return text.size() <= kMaxConfigBytes;
}

}  // namespace

ModelRepository::ModelRepository(std::string root, std::chrono::milliseconds poll_interval,
                                 InferenceMetrics* metrics)
    : root_(std::move(root)),
      poll_interval_(poll_interval),
      metrics_(metrics),
      snapshot_(std::make_shared<RepositorySnapshot>()) {}

ModelRepository::~ModelRepository() { Stop(); }

void ModelRepository::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  thread_ = std::thread([this] { Run(); });
}

void ModelRepository::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ModelRepository::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    lock.unlock();
    PollOnce();
    lock.lock();
    wake_.wait_for(lock, poll_interval_, [this] { return stop_; });
  }
}

std::shared_ptr<const RepositorySnapshot> ModelRepository::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return snapshot_;
}

void ModelRepository::PollOnce() {
  std::lock_guard<std::mutex> poll_lock(poll_mu_);
  std::vector<std::string> names;
  if (!ListDirectories(root_, names)) {
    std::string error = "cannot read model repository " + root_;
    if (error != last_scan_error_) DF_LOG_ERROR("{}", error);
    last_scan_error_ = error;
  } else {
    last_scan_error_.clear();
    std::vector<std::string> models;
    for (const std::string& name : names) {
      FileKey key;
      if (StatRegular(root_ + "/" + name + "/" + kConfigFilename, key)) models.push_back(name);
    }
    for (const auto& [name, state] : Snapshot()->models) {
      if (!std::binary_search(models.begin(), models.end(), name)) Unpublish(name);
    }
    for (const std::string& name : models) PollModel(name, root_ + "/" + name);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!snapshot_->scanned) {
    auto next = std::make_shared<RepositorySnapshot>(*snapshot_);
    next->scanned = true;
    snapshot_ = std::move(next);
  }
}

Result<std::shared_ptr<const ServingConfig>> ModelRepository::ReadConfig(const std::string& name,
                                                                         const std::string& dir) {
  const std::string path = dir + "/" + kConfigFilename;
  std::string text;
  if (!ReadSmallFile(path, text)) return InvalidArgument(path + ": unreadable or over 1 MiB");
  auto& cache = configs_[name];
  if (cache != nullptr && cache->text == text) return cache->result;
  cache = std::make_unique<ConfigCache>();
  cache->text = std::move(text);
  auto parsed = ParseModelConfig(cache->text, path);
  if (!parsed.ok()) {
    cache->result = parsed.status();
  } else {
    auto serving = MakeServingConfig(std::move(parsed).value(), name);
    if (serving.ok()) {
      cache->result = std::shared_ptr<const ServingConfig>(
          std::make_shared<ServingConfig>(std::move(serving).value()));
    } else {
      cache->result = serving.status();
    }
  }
  if (!cache->result.ok()) {
    DF_LOG_ERROR("model config rejected model={} error={}", name, cache->result.status().message());
  }
  return cache->result;
}

std::shared_ptr<const TorchModel> ModelRepository::LoadVersion(
    const std::string& name, const std::shared_ptr<const ServingConfig>& config,
    const VersionOnDisk& v) {
  auto& failed = failed_[{name, v.version}];
  if (failed != nullptr && failed->key == v.key && failed->config == config) return nullptr;
  DF_LOG_INFO("loading model version model={} version={} path={}", name, v.version, v.path);
  auto start = std::chrono::steady_clock::now();
  auto loaded = TorchModel::Load(config, v.version, v.path);
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (metrics_ != nullptr) metrics_->CountLoad(name, loaded.ok());
  if (!loaded.ok()) {
    DF_LOG_WARN("model version skipped model={} version={} error={}", name, v.version,
                loaded.status().message());
    failed = std::make_unique<FailedLoad>(FailedLoad{v.key, config, loaded.status().message()});
    return nullptr;
  }
  failed.reset();
  DF_LOG_INFO(
      "model version loaded model={} version={} load_ms={:.1f} onednn={} forward_ms={:.3f} "
      "onednn_forward_ms={:.3f} fp16_widened={}",
      name, v.version, ms, loaded.value()->accelerated(), loaded.value()->plain_forward_ms(),
      loaded.value()->onednn_forward_ms(), loaded.value()->widens_fp16());
  return loaded.value();
}

void ModelRepository::PollModel(const std::string& name, const std::string& dir) {
  std::shared_ptr<const ModelState> current;
  if (auto snapshot = Snapshot(); snapshot->models.count(name) != 0) {
    current = snapshot->models.at(name);
  }
  auto next = current ? std::make_shared<ModelState>(*current) : std::make_shared<ModelState>();
  next->name = name;
  auto config = ReadConfig(name, dir);
  if (!config.ok()) {
    next->reason = config.status().message();
    return Publish(name, std::move(next));
  }
  next->reason.clear();
  const std::shared_ptr<const ServingConfig>& serving = config.value();
  std::map<int64_t, std::string> paths;
  std::map<int64_t, FileKey> keys;
  std::vector<int64_t> versions = ListVersions(dir, *serving, paths, keys);
  std::map<int64_t, std::shared_ptr<const TorchModel>, std::greater<>> wanted;
  next->failed.clear();
  for (int64_t v : versions) {
    if (serving->max_versions != 0 && wanted.size() >= serving->max_versions) break;
    if (current != nullptr) {
      auto it = current->loaded.find(v);
      if (it != current->loaded.end() && &it->second->config() == serving.get()) {
        wanted[v] = it->second;  // already loaded under this config
        continue;
      }
    }
    auto model = LoadVersion(name, serving, VersionOnDisk{v, paths[v], keys[v]});
    if (model != nullptr) {
      wanted[v] = std::move(model);
    } else {
      next->failed[v] = failed_[{name, v}]->reason;
    }
  }
  if (!wanted.empty() || next->loaded.empty()) {
    next->loaded = std::move(wanted);
    next->config = serving;
  }
  Publish(name, std::move(next));
}

void ModelRepository::Publish(const std::string& name, std::shared_ptr<const ModelState> state) {
  int64_t newest = state->loaded.empty() ? 0 : state->loaded.begin()->first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto next = std::make_shared<RepositorySnapshot>(*snapshot_);
    next->models[name] = std::move(state);
    snapshot_ = std::move(next);
  }
  if (metrics_ != nullptr) metrics_->SetLoadedVersion(name, newest);
}

void ModelRepository::Unpublish(const std::string& name) {
  DF_LOG_WARN("model unloaded: its directory is gone model={}", name);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto next = std::make_shared<RepositorySnapshot>(*snapshot_);
    next->models.erase(name);
    snapshot_ = std::move(next);
  }
  configs_.erase(name);
  if (metrics_ != nullptr) metrics_->SetLoadedVersion(name, 0);
}

}  // namespace df::inference
