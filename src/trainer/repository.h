// ModelRepository: one model of a model repository in Triton's layout.
//
//   <root>/<model>/config.pbtxt           platform "pytorch_libtorch", inputs/outputs of
//                                         learning/features.h, dynamic batch (max_batch_size)
//   <root>/<model>/<version>/model.pt     TorchScript (BandwidthModel::Export)
//   <root>/<model>/<version>/metrics.json its evaluation (trainer.h)
//
// Publishing is atomic: a version's files are written into a staging directory in
// <root>/<model>/ whose name starts with '.' (pollers, Triton and dfinference, only take names
// that are all digits), synced, then renamed to the next integer version with
// renameat2(RENAME_NOREPLACE): a version directory is complete whenever it is visible, and two
// trainers publishing at once get different numbers. A staging directory left by a crash is
// removed by the next Publish.
//
// Thread-compatible; several processes may publish into one repository.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"

namespace df::trainer {

class ModelRepository {
 public:
  ModelRepository(std::string root, std::string model_name);

  const std::string& model_dir() const { return model_dir_; }
  std::string VersionDir(int64_t version) const;

  // Highest version present (a directory named by digits only); 0 when none.
  int64_t LatestVersion() const;

  // Writes config.pbtxt (atomically: a temp file, then rename) unless it already has this
  // content. IoError when it cannot.
  Status WriteConfig(int max_batch_size) const;
  std::string ConfigText(int max_batch_size) const;

  // Creates a staging directory, lets `write` fill it (it gets the directory's path), syncs it
  // and renames it to the next version. Returns that version; write's error, or IoError, when
  // it fails (the staging directory is then removed and no version appears).
  Result<int64_t> Publish(const std::function<Status(const std::string& dir)>& write) const;

 private:
  void RemoveStaleStaging() const;

  const std::string root_;
  const std::string model_name_;
  const std::string model_dir_;
};

}  // namespace df::trainer
