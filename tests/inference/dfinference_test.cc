// The dfinference binary as a real process: flags, serving a repository, metrics and health,
// picking up a new version, a clean stop on SIGTERM.
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "bench/harness.h"
#include "inference/kserve_client.h"
#include "inference/model_builder.h"
#include "test_repo.h"

namespace df::inference {
namespace {

using namespace std::chrono_literals;
using testing::PublishVersion;
using testing::ScaleConfig;
using testing::ScaleScript;
using testing::WaitFor;
using testing::WriteConfig;

std::string Binary() { return bench::BuildDir() + "/src/inference/dfinference"; }

std::string Curl(uint16_t port, const std::string& path) {
  std::string out;
  bench::Run({"curl", "-s", "http://127.0.0.1:" + std::to_string(port) + path}, &out, 10000);
  return out;
}

TEST(DfinferenceTest, HelpVersionAndBadUsage) {
  std::string out;
  EXPECT_EQ(bench::Run({Binary(), "--help"}, &out), 0);
  EXPECT_NE(out.find("--poll-interval"), std::string::npos) << out;
  EXPECT_EQ(bench::Run({Binary(), "--version"}, &out), 0);
  EXPECT_NE(out.find("dfinference"), std::string::npos);
  EXPECT_EQ(bench::Run({Binary()}, &out), 2);  // --repo is required
  EXPECT_NE(out.find("--repo"), std::string::npos) << out;
  EXPECT_EQ(bench::Run({Binary(), "--repo", "/tmp", "--threads", "0"}, &out), 2);
  bench::TempDir dir;
  std::ofstream(dir.path() + "/c.yaml") << "repo: /tmp\nno_such_key: 1\n";
  EXPECT_EQ(bench::Run({Binary(), "--config", dir.path() + "/c.yaml"}, &out), 2);
  EXPECT_NE(out.find("no_such_key"), std::string::npos) << out;
}

// dfinference_bench: a repository it cannot serve, --inputs that do not fit the model and
// --repo with --server are refused with the reason before anything is timed; a stand-in run
// prints its figures.
TEST(DfinferenceBenchTest, RefusesWhatItCannotMeasureAndMeasuresTheRest) {
  const std::string bench_bin = bench::BuildDir() + "/src/inference/dfinference_bench";
  std::string out;
  bench::TempDir empty;
  EXPECT_EQ(bench::Run({bench_bin, "--repo", empty.path(), "--requests", "10"}, &out), 1);
  EXPECT_NE(out.find("no servable version of bandwidth"), std::string::npos) << out;
  bench::TempDir stand_in;
  const std::string model_dir = stand_in.path() + "/bandwidth";
  std::filesystem::create_directories(model_dir + "/1");
  MlpSpec spec{{{4}}, 8, 1, 1};
  ASSERT_TRUE(SaveMlp(spec, model_dir + "/1/model.pt").ok());
  ASSERT_TRUE(
      WriteFileAtomically(model_dir + "/config.pbtxt", MlpConfig("bandwidth", spec, 64)).ok());
  EXPECT_EQ(bench::Run({bench_bin, "--repo", stand_in.path(), "--inputs", "16"}, &out), 2);
  EXPECT_NE(out.find("--inputs do not fit"), std::string::npos) << out;
  EXPECT_EQ(bench::Run({bench_bin, "--repo", stand_in.path(), "--server", "127.0.0.1:1"}, &out), 2);
  EXPECT_NE(out.find("exclude each other"), std::string::npos) << out;
  EXPECT_EQ(bench::Run({bench_bin, "--repo", stand_in.path(), "--inputs", "4", "--batch", "4",
                        "--requests", "20", "--warmup", "2", "--keep-large-buffers", "false"},
                       &out, 60000),
            0)
      << out;
  EXPECT_NE(out.find("bandwidth version 1"), std::string::npos) << out;
  EXPECT_NE(out.find("forward only"), std::string::npos) << out;
  EXPECT_NE(out.find("large buffers kept in the heap: no"), std::string::npos) << out;
}

TEST(DfinferenceTest, ServesARepositoryAndPicksUpNewVersions) {
  bench::TempDir dir;
  const std::string repo = dir.path() + "/repo";
  WriteConfig(repo, "scale", ScaleConfig());
  PublishVersion(repo, "scale", 1, ScaleScript(1));
  const uint16_t port = bench::FreePort(), metrics_port = bench::FreePort();
  std::ofstream(dir.path() + "/dfinference.yaml")
      << "repo: " << repo << "\npoll_interval: 200ms\nthreads: 1\n";
  auto proc = bench::Process::Start({Binary(), "--config", dir.path() + "/dfinference.yaml",
                                     "--listen", "127.0.0.1:" + std::to_string(port), "--metrics",
                                     "127.0.0.1:" + std::to_string(metrics_port)},
                                    dir.path() + "/dfinference.log");
  KServeClient client("127.0.0.1:" + std::to_string(port));
  auto in = [](auto d) { return std::chrono::system_clock::now() + d; };
  ASSERT_TRUE(WaitFor([&] {
    auto ready = client.ModelReady("scale", in(1s));
    return ready.ok() && ready.value();
  })) << "see "
      << dir.path() << "/dfinference.log";

  std::string served;
  auto out = client.Infer("scale", {{"INPUT__0", {1, 4}, {1, 2, 3, 4}}}, in(5s), "", &served);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)[0].data, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(served, "1");
  auto bad = client.Infer("scale", {{"INPUT__0", {1, 3}, {1, 2, 3}}}, in(5s));
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client.Infer("other", {{"INPUT__0", {1, 4}, {1, 2, 3, 4}}}, in(5s)).status().code(),
            StatusCode::kNotFound);

  EXPECT_EQ(Curl(metrics_port, "/healthz"), "ok\n");
  std::string metrics = Curl(metrics_port, "/metrics");
  EXPECT_NE(metrics.find("df_inference_model_version{model=\"scale\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("df_inference_requests_total{code=\"OK\",model=\"scale\"} 1"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("df_inference_request_duration_seconds_count{model=\"scale\"} 1"),
            std::string::npos);

  PublishVersion(repo, "scale", 2, ScaleScript(2));
  ASSERT_TRUE(WaitFor([&] {
    auto r = client.Infer("scale", {{"INPUT__0", {1, 4}, {1, 1, 1, 1}}}, in(5s), "", &served);
    return r.ok() && (*r)[0].data == std::vector<float>{2, 2, 2, 2};
  }));
  EXPECT_EQ(served, "2");
  EXPECT_NE(Curl(metrics_port, "/metrics").find("df_inference_model_version{model=\"scale\"} 2"),
            std::string::npos);

  proc.Kill(SIGTERM);
  EXPECT_EQ(proc.Wait(10000), 0);
}

TEST(DfinferenceTest, ListensOnlyWhereConfigured) {
  bench::TempDir dir;
  const uint16_t port = bench::FreePort();
  auto proc = bench::Process::Start({Binary(), "--repo", dir.path(), "--listen",
                                     "127.0.0.1:" + std::to_string(port), "--metrics", ""},
                                    dir.path() + "/dfinference.log");
  ASSERT_TRUE(bench::WaitForTcp(port, 10000));
  std::string out;
  bench::Run({"ss", "-ltnp"}, &out);
  int listening = 0;
  for (size_t at = out.find("pid=" + std::to_string(proc.pid()) + ","); at != std::string::npos;
       at = out.find("pid=" + std::to_string(proc.pid()) + ",", at + 1)) {
    ++listening;
  }
  EXPECT_EQ(listening, 1) << out;  // the gRPC port only: no metrics, nothing else
  proc.Kill(SIGTERM);
  EXPECT_EQ(proc.Wait(10000), 0);
}

}  // namespace
}  // namespace df::inference
