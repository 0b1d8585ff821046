#include "trainer/repository.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/fd.h"
#include "learning/features.h"

namespace df::trainer {
namespace {

constexpr std::string_view kStagingPrefix = ".staging-";

bool AllDigits(const std::string& s) {
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

Status SyncPath(const std::string& path, bool directory) {
  UniqueFd fd(::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC));
  if (!fd) return ErrnoStatus("open " + path, errno);
  if (::fsync(fd.get()) != 0) return ErrnoStatus("fsync " + path, errno);
  return Status::Ok();
}

std::string Dims(const std::vector<int64_t>& shape) {
  std::string s = "[ ";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + " ]";
}

}  // namespace

ModelRepository::ModelRepository(std::string root, std::string model_name)
    : root_(std::move(root)),
      model_name_(std::move(model_name)),
      model_dir_(root_ + "/" + model_name_) {}

std::string ModelRepository::VersionDir(int64_t version) const {
  return model_dir_ + "/" + std::to_string(version);
}

int64_t ModelRepository::LatestVersion() const {
  int64_t latest = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!AllDigits(name) || !entry.is_directory(ec)) continue;
    int64_t v = 0;
    std::from_chars(name.data(), name.data() + name.size(), v);
    latest = std::max(latest, v);
  }
  return latest;
}

std::string ModelRepository::ConfigText(int max_batch_size) const {
  std::ostringstream out;
  out << "# Written by dftrainer: the bandwidth model's inputs (src/learning/features.h, feature "
         "version "
      << learning::kFeatureVersion << ").\n";
  out << "name: \"" << model_name_ << "\"\n";
  out << "platform: \"pytorch_libtorch\"\n";
  out << "max_batch_size: " << max_batch_size << "\n";
  out << "input [\n";
  for (int i = 0; i < learning::kNumInputs; ++i) {
    out << "  {\n    name: \"" << learning::kInputNames[i] << "\"\n    data_type: TYPE_"
        << learning::kInputDatatype << "\n"
        << "    dims: " << Dims(learning::InputShape(i)) << "\n  }"
        << (i + 1 < learning::kNumInputs ? "," : "") << "\n";
  }
  out << "]\n";
  out << "output [\n  {\n    name: \"" << learning::kOutputName << "\"\n    data_type: TYPE_"
      << learning::kOutputDatatype << "\n    dims: [ 1 ]\n  }\n]\n";
  out << "version_policy: { latest: { num_versions: 1 } }\n";
  return out.str();
}

Status ModelRepository::WriteConfig(int max_batch_size) const {
  const std::string text = ConfigText(max_batch_size);
  const std::string path = model_dir_ + "/config.pbtxt";
  std::error_code ec;
  std::filesystem::create_directories(model_dir_, ec);
  if (ec) return IoError("create " + model_dir_ + ": " + ec.message());
  {
    std::ifstream in(path, std::ios::binary);
    std::stringstream current;
    current << in.rdbuf();
    if (in && current.str() == text) return Status::Ok();
  }
  const std::string tmp = model_dir_ + "/.config.pbtxt.tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) return IoError("write " + tmp);
  }
  DF_RETURN_IF_ERROR(SyncPath(tmp, false));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoStatus("rename " + tmp, errno);
  return SyncPath(model_dir_, true);
}

void ModelRepository::RemoveStaleStaging() const {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kStagingPrefix)) continue;
    // Only this host's dead trainers: the staging name holds the pid that wrote it.
    const std::string pid = name.substr(
        kStagingPrefix.size(), name.find('-', kStagingPrefix.size()) - kStagingPrefix.size());
    int p = 0;
    std::from_chars(pid.data(), pid.data() + pid.size(), p);
    if (p > 0 && (p == ::getpid() || ::kill(p, 0) == 0)) continue;
    std::filesystem::remove_all(entry.path(), ec);
  }
}

Result<int64_t> ModelRepository::Publish(
    const std::function<Status(const std::string& dir)>& write) const {
  std::error_code ec;
  std::filesystem::create_directories(model_dir_, ec);
  if (ec) return IoError("create " + model_dir_ + ": " + ec.message());
  RemoveStaleStaging();
  static std::atomic<uint64_t> counter{0};
  const std::string staging = model_dir_ + "/" + std::string(kStagingPrefix) +
                              std::to_string(::getpid()) + "-" + std::to_string(++counter);
  std::filesystem::create_directory(staging, ec);
  if (ec) return IoError("create " + staging + ": " + ec.message());
  auto fail = [&](Status s) -> Result<int64_t> {
    std::error_code ignored;
    std::filesystem::remove_all(staging, ignored);
    return s;
  };
  if (Status s = write(staging); !s.ok()) return fail(s);
  for (const auto& entry : std::filesystem::directory_iterator(staging, ec)) {
    if (Status s = SyncPath(entry.path().string(), false); !s.ok()) return fail(s);
  }
  if (Status s = SyncPath(staging, true); !s.ok()) return fail(s);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int64_t version = LatestVersion() + 1;
    const std::string target = VersionDir(version);
    if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0) {
      (void)SyncPath(model_dir_, true);
      return version;
    }
    if (errno != EEXIST && errno != ENOTEMPTY) return fail(ErrnoStatus("rename " + staging, errno));
  }
  return fail(IoError("no free version number in " + model_dir_));
}

}  // namespace df::trainer
