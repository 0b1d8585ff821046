// dfinference_bench: ModelInfer latency for one batch of (child, parent) pairs, the call the
// scheduler's `ml` evaluator makes per decision, against a baseline measured in the same run on
// the same connection: ServerLive (an empty round trip), so the ratio is what the model and the
// tensors cost on top of gRPC. Also times forward alone, in-process, without gRPC.
//
// By default it writes a stand-in for the trainer's model (a 2-layer MLP over --inputs) into a
// temp repository and serves it in-process on a free loopback port; --server HOST:PORT measures
// a running dfinference or Triton instead (--model names the model there; its inputs must match
// --inputs and --batch).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "bench/harness.h"
#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/version.h"
#include "inference/infer_request.h"
#include "inference/kserve_client.h"
#include "inference/model_builder.h"
#include "inference/model_repository.h"
#include "inference/server.h"

namespace {

using df::inference::Fp32Tensor;
using Clock = std::chrono::steady_clock;

struct Percentiles {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
};

Percentiles Summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, size_t(q * (ms.size() - 1) + 0.5))];
  };
  return {at(0.50), at(0.99), ms.back()};
}

// "16,8x16" -> {{16}, {8, 16}}.
std::vector<std::vector<int64_t>> ParseInputs(const std::string& text) {
  std::vector<std::vector<int64_t>> inputs;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::vector<int64_t> dims;
    std::stringstream ds(item);
    std::string d;
    while (std::getline(ds, d, 'x')) dims.push_back(std::stoll(d));
    inputs.push_back(dims);
  }
  return inputs;
}

std::vector<Fp32Tensor> MakeInputs(const std::vector<std::vector<int64_t>>& dims, int64_t batch) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<Fp32Tensor> inputs;
  for (size_t i = 0; i < dims.size(); ++i) {
    Fp32Tensor t{"INPUT__" + std::to_string(i), {batch}, {}};
    t.shape.insert(t.shape.end(), dims[i].begin(), dims[i].end());
    t.data.resize(df::inference::ElementCount(t.shape));
    for (float& v : t.data) v = normal(rng);
    inputs.push_back(std::move(t));
  }
  return inputs;
}

template <typename Call>
std::vector<double> Time(int n, Call call) {
  std::vector<double> ms;
  ms.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto start = Clock::now();
    if (!call()) {
      std::fprintf(stderr, "dfinference_bench: call failed\n");
      std::exit(1);
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return ms;
}

void Print(const char* what, const Percentiles& p, const Percentiles* base) {
  std::printf("%-28s p50 %8.3f ms   p99 %8.3f ms   max %8.3f ms", what, p.p50_ms, p.p99_ms,
              p.max_ms);
  if (base != nullptr) {
    std::printf("   (x%.1f / x%.1f of ServerLive)", p.p50_ms / base->p50_ms,
                p.p99_ms / base->p99_ms);
  }
  std::printf("\n");
}

// The ModelInferRequest of `inputs`, raw contents, as KServeClient::Infer sends them.
::inference::ModelInferRequest MakeRequest(const std::vector<Fp32Tensor>& inputs) {
  ::inference::ModelInferRequest request;
  for (const Fp32Tensor& in : inputs) df::inference::AppendRawInput(in, &request);
  return request;
}

// forward alone, in-process: the model's share of the ModelInfer latency. `checked` fits the
// model's config (CheckInferRequest).
std::vector<double> TimeForward(const df::inference::TorchModel& model,
                                const df::inference::CheckedRequest& checked, int n) {
  return Time(n, [&] { return model.Run(checked).ok(); });
}

// The newest version of `name` that the repository at `root` serves, loaded the way dfinference
// loads it; exits with the repository's reason when there is none.
std::shared_ptr<const df::inference::TorchModel> LoadNewest(const std::string& root,
                                                            const std::string& name) {
  df::inference::ModelRepository repository(root, std::chrono::seconds(1), nullptr);
  repository.PollOnce();
  const auto snapshot = repository.Snapshot();
  auto it = snapshot->models.find(name);
  if (it == snapshot->models.end() || !it->second->Newest()) {
    std::string why =
        it == snapshot->models.end() ? "no model directory with config.pbtxt" : it->second->reason;
    if (it != snapshot->models.end() && why.empty()) {
      why = it->second->failed.empty() ? "no complete version" : it->second->failed.begin()->second;
    }
    std::fprintf(stderr, "dfinference_bench: no servable version of %s under %s: %s\n",
                 name.c_str(), root.c_str(), why.c_str());
    std::exit(1);
  }
  return it->second->Newest();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dfinference_bench: ModelInfer p50/p99 for a batch of pairs vs ServerLive"};
  std::string inputs_text = "16,16,8x16,8x16,16,16,8x16,8x16,16";
  int64_t batch = 64, hidden = 64;
  int requests = 2000, warmup = 200, threads = 1;
  std::string server, model_name = "bandwidth";
  double target_p99_ms = 2.0;
  app.add_option("--inputs", inputs_text, "input dims without batch, e.g. 16,8x16")
      ->default_str(inputs_text);
  app.add_option("--batch", batch, "rows (pairs) per request")->default_str("64");
  app.add_option("--hidden", hidden, "hidden units of the MLP")->default_str("64");
  app.add_option("--requests", requests, "timed calls of each kind")->default_str("2000");
  app.add_option("--warmup", warmup, "untimed calls first")->default_str("200");
  app.add_option("--threads", threads, "libtorch threads of the in-process server")
      ->default_str("1");
  std::string repo;
  app.add_option("--repo", repo,
                 "serve this model repository in-process instead of the stand-in, not with "
                 "--server (--model names "
                 "the model; --inputs must match its config, e.g. the trainer's bandwidth model: "
                 "2x24,2x8x24,2x8x12,2x8,2x8x4x24,2x8x4x12,2x8x4,12)");
  bool keep_large_buffers = true;
  app.add_option("--keep-large-buffers", keep_large_buffers,
                 "raise malloc's mmap and trim thresholds as dfinference and dfscheduler do "
                 "(common/malloc_tuning.h); false measures without")
      ->default_str("true");
  std::string fp16 = "auto";
  app.add_option("--fp16", fp16,
                 "send the inputs as FP16 (true), as FP32 (false), or as the served model's "
                 "config declares them (auto: known with --repo; FP32 otherwise). The trainer's "
                 "bandwidth model takes FP16")
      ->check(CLI::IsMember({"auto", "true", "false"}))
      ->default_str("auto");
  app.add_option("--server", server, "measure this server (HOST:PORT) instead");
  app.add_option("--model", model_name, "model name")->default_str(model_name);
  app.add_option("--target-p99-ms", target_p99_ms, "ModelInfer p99 target")->default_str("2");
  app.set_version_flag("--version", df::VersionLine("dfinference_bench"));
  CLI11_PARSE(app, argc, argv);
  (void)df::InitLogging("dfinference_bench", "warn");

  if (keep_large_buffers && !df::KeepLargeBuffersInHeap()) {
    std::fprintf(stderr, "dfinference_bench: malloc refused the thresholds\n");
  }
  auto dims = ParseInputs(inputs_text);
  df::inference::MlpSpec spec{dims, hidden, 1, 1};
  if (!repo.empty() && !server.empty()) {
    std::fprintf(stderr, "dfinference_bench: --repo and --server exclude each other\n");
    return 2;
  }
  df::bench::TempDir dir;
  std::shared_ptr<const df::inference::TorchModel> newest;  // the model served in-process
  std::string described;
  std::unique_ptr<df::inference::InferenceServer> local;
  prometheus::Registry registry;
  if (server.empty()) {
    const std::string root = repo.empty() ? dir.path() : repo;
    if (repo.empty()) {  // the stand-in
      const std::string model_dir = dir.path() + "/" + model_name;
      std::filesystem::create_directories(model_dir + "/1");
      if (auto s = df::inference::SaveMlp(spec, model_dir + "/1/model.pt"); !s.ok()) {
        std::fprintf(stderr, "dfinference_bench: %s\n", s.message().c_str());
        return 1;
      }
      (void)df::inference::WriteFileAtomically(model_dir + "/config.pbtxt",
                                               df::inference::MlpConfig(model_name, spec, 1024));
    }
    df::inference::SetTorchThreads(threads);
    // Loaded before timing anything: a repository without a servable version ends the run here.
    newest = LoadNewest(root, model_name);
    described = repo.empty()
                    ? "MLP stand-in, " + std::to_string(hidden) + " hidden"
                    : repo + "/" + model_name + " version " + std::to_string(newest->version());
    char timed[160];
    std::snprintf(timed, sizeof timed,
                  " (serves %s; forward at load: as loaded %.3f ms, oneDNN copy %.3f ms)",
                  newest->accelerated() ? "the oneDNN copy" : "the module as loaded",
                  newest->plain_forward_ms(), newest->onednn_forward_ms());
    described += timed;
    df::inference::InferenceConfig config;
    config.repo = root;
    config.listen = "127.0.0.1:0";
    config.metrics = "";
    auto started = df::inference::InferenceServer::Start(config, registry);
    if (!started.ok()) {
      std::fprintf(stderr, "dfinference_bench: %s\n", started.status().message().c_str());
      return 1;
    }
    local = std::move(started).value();
    server = "127.0.0.1:" + std::to_string(local->port());
  }
  df::inference::KServeClient client(server);
  auto deadline = [] { return std::chrono::system_clock::now() + std::chrono::seconds(5); };
  for (int i = 0; i < 600; ++i) {
    auto ready = client.ModelReady(model_name, deadline());
    if (ready.ok() && ready.value()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto inputs = MakeInputs(dims, batch);
  const bool send_fp16 =
      fp16 == "true" || (fp16 == "auto" && newest && newest->config().config.input_size() > 0 &&
                         newest->config().config.input(0).data_type() == ::inference::TYPE_FP16);
  for (Fp32Tensor& in : inputs) in.send_as_fp16 = send_fp16;
  const auto request = MakeRequest(inputs);
  std::optional<df::inference::CheckedRequest> checked;
  if (newest) {  // in-process: say why --inputs do not fit the model before timing anything
    auto fits = df::inference::CheckInferRequest(newest->config(), request);
    if (!fits.ok()) {
      std::fprintf(stderr, "dfinference_bench: --inputs do not fit %s: %s\n", described.c_str(),
                   fits.status().message().c_str());
      return 2;
    }
    checked = std::move(fits).value();
  }
  auto infer = [&] { return client.Infer(model_name, inputs, deadline()).ok(); };
  auto live = [&] { return client.ServerLive(deadline()).ok(); };
  Time(warmup, infer);
  Time(warmup, live);
  // Interleaved in blocks so that both see the same machine load.
  std::vector<double> live_ms, infer_ms;
  for (int block = 0; block < 10; ++block) {
    auto l = Time(requests / 10, live);
    auto m = Time(requests / 10, infer);
    live_ms.insert(live_ms.end(), l.begin(), l.end());
    infer_ms.insert(infer_ms.end(), m.begin(), m.end());
  }
  int64_t features = 0;
  for (const auto& d : dims) features += df::inference::ElementCount(d);
  std::printf(
      "model: %s; %zu inputs (%lld features per row, sent as %s); batch %lld; %d calls each; "
      "torch threads %d; server %s; large buffers kept in the heap: %s\n",
      local ? described.c_str() : model_name.c_str(), dims.size(), static_cast<long long>(features),
      send_fp16 ? "FP16" : "FP32", static_cast<long long>(batch), requests, threads,
      local ? "in-process" : server.c_str(), keep_large_buffers ? "yes" : "no");
  Percentiles base = Summarize(live_ms);
  Percentiles p = Summarize(infer_ms);
  Print("ServerLive (baseline)", base, nullptr);
  Print("ModelInfer batch", p, &base);
  if (local) {
    Print("forward only (no gRPC)", Summarize(TimeForward(*newest, *checked, requests)), &base);
  }
  std::printf("target: ModelInfer p99 <= %.2f ms: %s\n", target_p99_ms,
              p.p99_ms <= target_p99_ms ? "met" : "NOT met");
  return 0;
}
