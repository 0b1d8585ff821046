// Shared set-up of the engine unit tests: a real PieceStore in a temp dir, real origin backends,
// a real nginx origin serving one file, and a DaemonContext whose liveness timers run on a
// ManualClock (tests advance it instead of sleeping).
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "bench/harness.h"
#include "common/auth.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/piece.h"
#include "daemon/config.h"
#include "daemon/peer_task.h"
#include "storage/piece_store.h"

namespace df::testing {

class EngineTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kPiece = 4 * kMiB;

  void SetUp() override {
    store_ = PieceStore::Open(dir_.path() + "/store").value();
    config_.concurrency = 4;
    ctx_.config = &config_;
    ctx_.store = store_.get();
    ctx_.backends = &backends_;
    ctx_.auth = &auth_;
    ctx_.host_id = HostId("child", "127.0.0.1");
    ctx_.clock = &clock_;
  }

  // Starts nginx serving a `size`-byte file (at `limit_rate` per connection, "" = unlimited).
  void StartOrigin(uint64_t size, const std::string& limit_rate = "") {
    root_ = dir_.path() + "/origin";
    std::filesystem::create_directories(root_);
    size_ = size;
    sha256_ = bench::MakeFile(root_ + "/f.bin", size);
    origin_ = std::make_unique<bench::NginxOrigin>(root_, limit_rate);
    ASSERT_TRUE(origin_->ok());
  }
  std::string origin_file() const { return root_ + "/f.bin"; }
  std::string url() const { return origin_->Url("f.bin"); }
  // Asks for kPiece pieces (the fake parents cut the file so), whatever the default rule.
  TaskRequest Request() const {
    TaskRequest r;
    r.url = url();
    r.piece_length = kPiece;
    r.task_id = TaskId(TaskIdInput{r.url, "", "", kPiece, {}});
    return r;
  }

  bench::TempDir dir_;
  DaemonConfig config_;
  std::unique_ptr<PieceStore> store_;
  BackendRegistry backends_;
  ControlAuth auth_;
  ManualClock clock_;
  DaemonContext ctx_;
  std::string root_;
  uint64_t size_ = 0;
  std::string sha256_;
  std::unique_ptr<bench::NginxOrigin> origin_;
};

}  // namespace df::testing
