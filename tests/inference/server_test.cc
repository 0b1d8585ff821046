// The inference server in-process, over real gRPC on loopback: protocol coverage, malformed
// requests, version swaps under load, broken and incomplete versions.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <prometheus/text_serializer.h>

#include "bench/harness.h"
#include "grpc_service.grpc.pb.h"
#include "inference/half.h"
#include "inference/kserve_client.h"
#include "inference/model_builder.h"
#include "inference/model_repository.h"
#include "inference/server.h"
#include "test_repo.h"

namespace df::inference {
namespace {

using namespace std::chrono_literals;
using testing::PublishVersion;
using testing::ScaleConfig;
using testing::ScaleScript;
using testing::WaitFor;
using testing::WriteConfig;

KServeClient::Deadline In(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

class InferenceServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = dir_.path() + "/repo";
    std::filesystem::create_directories(repo_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  void StartServer() {
    InferenceConfig config;
    config.repo = repo_;
    config.listen = "127.0.0.1:0";
    config.metrics = "";
    config.poll_interval_ms = 100;
    auto started = InferenceServer::Start(config, registry_);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    server_ = std::move(started).value();
    const std::string target = "127.0.0.1:" + std::to_string(server_->port());
    auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
    stub_ = ::inference::GRPCInferenceService::NewStub(channel);
    client_ = std::make_unique<KServeClient>(channel);
  }

  // Starts the server over "scale" version 1 and waits until it serves it.
  void StartWithScale(const std::string& extra_config = "") {
    WriteConfig(repo_, "scale", ScaleConfig(extra_config));
    PublishVersion(repo_, "scale", 1, ScaleScript(1));
    StartServer();
    ASSERT_TRUE(WaitFor([&] { return ServedVersion("scale") == "1"; }));
  }

  bool Ready(const std::string& model, const std::string& version = "") {
    auto ready = client_->ModelReady(model, In(2s), version);
    return ready.ok() && ready.value();
  }

  // The version that answers an unversioned request for `model`, or "".
  std::string ServedVersion(const std::string& model) {
    ::inference::ModelInferResponse response;
    return Infer(ScaleRequest(model, {1, 2, 3, 4}), response).ok() ? response.model_version() : "";
  }

  ::inference::ModelInferRequest ScaleRequest(const std::string& model, std::vector<float> x,
                                              const std::string& version = "") {
    ::inference::ModelInferRequest request;
    request.set_model_name(model);
    request.set_model_version(version);
    auto* in = request.add_inputs();
    in->set_name("INPUT__0");
    in->set_datatype("FP32");
    in->add_shape(static_cast<int64_t>(x.size() / 4));
    in->add_shape(4);
    request.add_raw_input_contents()->assign(reinterpret_cast<const char*>(x.data()),
                                             x.size() * sizeof(float));
    return request;
  }

  grpc::Status Infer(const ::inference::ModelInferRequest& request,
                     ::inference::ModelInferResponse& response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(In(5s));
    return stub_->ModelInfer(&ctx, request, &response);
  }

  grpc::StatusCode InferCode(const ::inference::ModelInferRequest& request) {
    ::inference::ModelInferResponse response;
    return Infer(request, response).error_code();
  }

  std::vector<float> RawFloats(const ::inference::ModelInferResponse& response, int i = 0) {
    const std::string& raw = response.raw_output_contents(i);
    std::vector<float> out(raw.size() / sizeof(float));
    std::memcpy(out.data(), raw.data(), raw.size());
    return out;
  }

  ::inference::RepositoryIndexResponse Index() {
    grpc::ClientContext ctx;
    ::inference::RepositoryIndexRequest request;
    ::inference::RepositoryIndexResponse response;
    EXPECT_TRUE(stub_->RepositoryIndex(&ctx, request, &response).ok());
    return response;
  }

  std::string IndexState(const std::string& model, const std::string& version) {
    const auto index = Index();
    for (const auto& m : index.models()) {
      if (m.name() == model && m.version() == version) return m.state();
    }
    return "";
  }

  // Sum of the counter `name` over series whose labels include every pair of `labels`.
  double Counter(const std::string& name, const std::map<std::string, std::string>& labels) {
    double sum = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) {
        size_t matched = 0;
        for (const auto& label : metric.label) {
          auto it = labels.find(label.name);
          if (it != labels.end() && it->second == label.value) ++matched;
        }
        if (matched == labels.size()) sum += metric.counter.value;
      }
    }
    return sum;
  }

  bench::TempDir dir_;
  std::string repo_;
  prometheus::Registry registry_;
  std::unique_ptr<InferenceServer> server_;
  std::unique_ptr<::inference::GRPCInferenceService::Stub> stub_;
  std::unique_ptr<KServeClient> client_;
};

TEST_F(InferenceServerTest, ServerLiveReadyAndMetadata) {
  WriteConfig(repo_, "scale", ScaleConfig());
  StartServer();
  auto live = client_->ServerLive(In(2s));
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_TRUE(live.value());
  grpc::ClientContext ctx;
  ::inference::ServerMetadataResponse metadata;
  ASSERT_TRUE(stub_->ServerMetadata(&ctx, {}, &metadata).ok());
  EXPECT_EQ(metadata.name(), "dfinference");
  EXPECT_FALSE(metadata.version().empty());

  auto server_ready = [&] {
    grpc::ClientContext c;
    ::inference::ServerReadyResponse r;
    return stub_->ServerReady(&c, {}, &r).ok() && r.ready();
  };
  // A model without any version: the server is not ready, inference is unavailable.
  ASSERT_TRUE(WaitFor([&] { return !Index().models().empty(); }));
  EXPECT_FALSE(server_ready());
  EXPECT_FALSE(Ready("scale"));
  EXPECT_EQ(InferCode(ScaleRequest("scale", {1, 2, 3, 4})), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(IndexState("scale", ""), "UNAVAILABLE");

  PublishVersion(repo_, "scale", 1, ScaleScript(1));
  ASSERT_TRUE(WaitFor([&] { return Ready("scale"); }));
  EXPECT_TRUE(server_ready());
  EXPECT_TRUE(Ready("scale", "1"));
  EXPECT_FALSE(Ready("scale", "2"));
  EXPECT_FALSE(Ready("nope"));
  EXPECT_EQ(IndexState("scale", "1"), "READY");
}

TEST_F(InferenceServerTest, ModelMetadataAndConfigMatchTheConfig) {
  StartWithScale();
  grpc::ClientContext ctx;
  ::inference::ModelMetadataRequest request;
  request.set_name("scale");
  ::inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(stub_->ModelMetadata(&ctx, request, &metadata).ok());
  EXPECT_EQ(metadata.name(), "scale");
  EXPECT_EQ(metadata.platform(), "pytorch_libtorch");
  ASSERT_EQ(metadata.versions_size(), 1);
  EXPECT_EQ(metadata.versions(0), "1");
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "INPUT__0");
  EXPECT_EQ(metadata.inputs(0).datatype(), "FP32");
  EXPECT_EQ(
      std::vector<int64_t>(metadata.inputs(0).shape().begin(), metadata.inputs(0).shape().end()),
      (std::vector<int64_t>{-1, 4}));
  ASSERT_EQ(metadata.outputs_size(), 1);
  EXPECT_EQ(metadata.outputs(0).name(), "OUTPUT__0");

  grpc::ClientContext ctx2;
  ::inference::ModelConfigRequest config_request;
  config_request.set_name("scale");
  ::inference::ModelConfigResponse config;
  ASSERT_TRUE(stub_->ModelConfig(&ctx2, config_request, &config).ok());
  EXPECT_EQ(config.config().max_batch_size(), 8);
  EXPECT_EQ(config.config().input(0).data_type(), ::inference::TYPE_FP32);

  grpc::ClientContext ctx3;
  request.set_name("nope");
  EXPECT_EQ(stub_->ModelMetadata(&ctx3, request, &metadata).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(InferenceServerTest, InfersRawAndTypedBatches) {
  StartWithScale();
  // Raw, through the client library: a batch of three rows.
  std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4};
  auto out = client_->Infer("scale", {{"INPUT__0", {3, 4}, x}}, In(5s));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), 1u);
  EXPECT_EQ((*out)[0].name, "OUTPUT__0");
  EXPECT_EQ((*out)[0].shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ((*out)[0].data, x);

  // Typed fp32_contents, with an id and the output asked for by name.
  ::inference::ModelInferRequest request;
  request.set_model_name("scale");
  request.set_id("req-7");
  auto* in = request.add_inputs();
  in->set_name("INPUT__0");
  in->set_datatype("FP32");
  in->add_shape(2);
  in->add_shape(4);
  for (int i = 0; i < 8; ++i) in->mutable_contents()->add_fp32_contents(static_cast<float>(i));
  request.add_outputs()->set_name("OUTPUT__0");
  ::inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(request, response).ok());
  EXPECT_EQ(response.id(), "req-7");
  EXPECT_EQ(response.model_version(), "1");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).datatype(), "FP32");
  EXPECT_EQ(RawFloats(response), (std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST_F(InferenceServerTest, TwoInputsInt64AndTupleOutputs) {
  // forward(x: FP32 [-1], y: INT64 [2]) -> (x * 3, y + 1); config lists INPUT__1 first.
  WriteConfig(repo_, "pair",
              "platform: \"pytorch_libtorch\" max_batch_size: 4\n"
              "input [ { name: \"INPUT__1\" data_type: TYPE_INT64 dims: [ 2 ] },\n"
              "        { name: \"INPUT__0\" data_type: TYPE_FP32 dims: [ -1 ] } ]\n"
              "output [ { name: \"OUTPUT__0\" data_type: TYPE_FP32 dims: [ -1 ] },\n"
              "         { name: \"OUTPUT__1\" data_type: TYPE_INT64 dims: [ 2 ] } ]\n");
  ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = 3;
  spec.source =
      "def forward(self, x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:\n"
      "    return (x * self.k, y + 1)\n";
  PublishVersion(repo_, "pair", 1, spec);
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Ready("pair"); }));

  ::inference::ModelInferRequest request;
  request.set_model_name("pair");
  auto* y = request.add_inputs();
  y->set_name("INPUT__1");
  y->set_datatype("INT64");
  y->add_shape(2);
  y->add_shape(2);
  for (int64_t v : {10, 20, 30, 40}) y->mutable_contents()->add_int64_contents(v);
  auto* x = request.add_inputs();
  x->set_name("INPUT__0");
  x->set_datatype("FP32");
  x->add_shape(2);
  x->add_shape(3);
  for (float v : {1, 2, 3, 4, 5, 6}) x->mutable_contents()->add_fp32_contents(v);
  request.add_outputs()->set_name("OUTPUT__1");
  request.add_outputs()->set_name("OUTPUT__0");
  ::inference::ModelInferResponse response;
  grpc::Status s = Infer(request, response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(response.outputs_size(), 2);
  EXPECT_EQ(response.outputs(0).name(), "OUTPUT__1");
  EXPECT_EQ(response.outputs(0).datatype(), "INT64");
  std::vector<int64_t> ys(4);
  ASSERT_EQ(response.raw_output_contents(0).size(), 4 * sizeof(int64_t));
  std::memcpy(ys.data(), response.raw_output_contents(0).data(), 4 * sizeof(int64_t));
  EXPECT_EQ(ys, (std::vector<int64_t>{11, 21, 31, 41}));
  EXPECT_EQ(response.outputs(1).name(), "OUTPUT__0");
  EXPECT_EQ(RawFloats(response, 1), (std::vector<float>{3, 6, 9, 12, 15, 18}));

  // A variable dim is any size, but its element count must not overflow nor disagree with the
  // data: nothing is allocated for what a request only claims.
  auto huge = request;
  huge.mutable_inputs(1)->set_shape(1, int64_t{1} << 62);
  EXPECT_EQ(InferCode(huge), grpc::StatusCode::INVALID_ARGUMENT);
  huge.mutable_inputs(1)->set_shape(1, int64_t{1} << 40);
  EXPECT_EQ(InferCode(huge), grpc::StatusCode::INVALID_ARGUMENT);
  auto typed_in_range = request;
  typed_in_range.mutable_inputs(0)->set_datatype("INT32");
  EXPECT_EQ(InferCode(typed_in_range), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(Infer(request, response).ok());
}

TEST_F(InferenceServerTest, MalformedRequestsGetErrorsAndTheServerKeepsAnswering) {
  StartWithScale();
  // Waiting for the first poll asked for "scale" before it was known: those count as unknown.
  const double unknown_before = Counter("df_inference_requests_total", {{"model", "_unknown"}});
  using Mutation = std::function<void(::inference::ModelInferRequest&)>;
  const std::tuple<const char*, grpc::StatusCode, Mutation> cases[] = {
      {"unknown model", grpc::StatusCode::NOT_FOUND, [](auto& r) { r.set_model_name("nope"); }},
      {"unknown version", grpc::StatusCode::NOT_FOUND, [](auto& r) { r.set_model_version("9"); }},
      {"garbage version", grpc::StatusCode::NOT_FOUND, [](auto& r) { r.set_model_version("x"); }},
      {"wrong datatype", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_inputs(0)->set_datatype("FP64"); }},
      {"shape vs data size", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_inputs(0)->set_shape(0, 2); }},
      {"missing input", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         r.clear_inputs();
         r.clear_raw_input_contents();
       }},
      {"extra input", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         *r.add_inputs() = r.inputs(0);
         r.mutable_inputs(1)->set_name("INPUT__1");
         r.add_raw_input_contents(r.raw_input_contents(0));
       }},
      {"batch over max_batch_size", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         r.mutable_inputs(0)->set_shape(0, 9);
         r.set_raw_input_contents(0, std::string(9 * 4 * 4, '\0'));
       }},
      {"overflowing shape", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) {
         r.mutable_inputs(0)->set_shape(0, 8);
         r.mutable_inputs(0)->set_shape(1, int64_t{1} << 61);
       }},
      {"huge shape", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.mutable_inputs(0)->set_shape(1, int64_t{1} << 40); }},
      {"no data", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.clear_raw_input_contents(); }},
      {"unknown output", grpc::StatusCode::INVALID_ARGUMENT,
       [](auto& r) { r.add_outputs()->set_name("OUTPUT__3"); }},
  };
  for (const auto& [what, code, mutate] : cases) {
    auto request = ScaleRequest("scale", {1, 2, 3, 4});
    mutate(request);
    EXPECT_EQ(InferCode(request), code) << what;
    EXPECT_EQ(ServedVersion("scale"), "1") << "after " << what;
  }
  // A request over the size limit is refused by gRPC itself.
  auto big = ScaleRequest("scale", std::vector<float>(2 << 20, 1.0f));
  EXPECT_EQ(InferCode(big), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ServedVersion("scale"), "1");
  EXPECT_GE(
      Counter("df_inference_requests_total", {{"model", "scale"}, {"code", "INVALID_ARGUMENT"}}),
      8);
  EXPECT_EQ(Counter("df_inference_requests_total", {{"model", "_unknown"}}), unknown_before + 1)
      << prometheus::TextSerializer().Serialize(registry_.Collect());
}

TEST_F(InferenceServerTest, ExceptionInForwardIsInternal) {
  StartWithScale();
  ::inference::ModelInferResponse response;
  grpc::Status s = Infer(ScaleRequest("scale", {1000, 1000, 1, 1}), response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_NE(s.error_message().find("invalid for input of size"), std::string::npos)
      << s.error_message();
  EXPECT_EQ(ServedVersion("scale"), "1");
}

TEST_F(InferenceServerTest, NewVersionIsPickedUpWhileRequestsRunWithNoFailedRequest) {
  StartWithScale();
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, wrong{0}, served_v1{0}, served_v2{0};
  std::thread load([&] {
    while (!stop) {
      ::inference::ModelInferResponse response;
      if (!Infer(ScaleRequest("scale", {1, 2, 3, 4}), response).ok()) {
        ++failures;
        continue;
      }
      float k = response.model_version() == "2" ? 2 : 1;
      (k == 2 ? served_v2 : served_v1)++;
      if (RawFloats(response) != std::vector<float>{k, 2 * k, 3 * k, 4 * k}) ++wrong;
    }
  });
  ASSERT_TRUE(WaitFor([&] { return served_v1 > 20; }));
  PublishVersion(repo_, "scale", 2, ScaleScript(2));
  bool swapped = WaitFor([&] { return served_v2 > 50; });
  stop = true;
  load.join();
  EXPECT_TRUE(swapped);
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(wrong, 0);
  EXPECT_GT(served_v1, 0);
  EXPECT_EQ(ServedVersion("scale"), "2");
  EXPECT_FALSE(Ready("scale", "1"));  // latest policy: only the newest stays loaded
}

TEST_F(InferenceServerTest, CorruptVersionIsSkippedOnceAndThePreviousKeepsServing) {
  StartWithScale();
  const std::string v2 = repo_ + "/scale/2";
  std::filesystem::create_directories(repo_ + "/scale/.staging");
  std::ofstream(repo_ + "/scale/.staging/model.pt") << "this is not a TorchScript zip";
  std::filesystem::rename(repo_ + "/scale/.staging", v2);
  ASSERT_TRUE(WaitFor([&] { return IndexState("scale", "2") == "UNAVAILABLE"; }));
  EXPECT_EQ(ServedVersion("scale"), "1");
  EXPECT_EQ(Counter("df_inference_model_loads_total", {{"model", "scale"}, {"result", "failed"}}),
            1);
  std::this_thread::sleep_for(500ms);  // five more polls: not retried
  EXPECT_EQ(Counter("df_inference_model_loads_total", {{"model", "scale"}, {"result", "failed"}}),
            1);
  EXPECT_EQ(ServedVersion("scale"), "1");

  // A good version after the broken one is served.
  PublishVersion(repo_, "scale", 3, ScaleScript(3));
  ASSERT_TRUE(WaitFor([&] { return ServedVersion("scale") == "3"; }));
}

TEST_F(InferenceServerTest, VersionThatDoesNotFitItsConfigIsSkipped) {
  StartWithScale();
  ScriptSpec narrow;  // returns [batch, 2] where the config says [batch, 4]
  narrow.source = "def forward(self, x: Tensor) -> Tensor:\n    return x[:, :2]\n";
  PublishVersion(repo_, "scale", 2, narrow);
  ASSERT_TRUE(WaitFor([&] { return IndexState("scale", "2") == "UNAVAILABLE"; }));
  const auto index = Index();
  for (const auto& m : index.models()) {
    if (m.version() == "2") {
      EXPECT_NE(m.reason().find("OUTPUT__0"), std::string::npos) << m.reason();
    }
  }
  EXPECT_EQ(ServedVersion("scale"), "1");
}

TEST_F(InferenceServerTest, VersionWithoutModelFileIsIgnoredUntilComplete) {
  StartWithScale();
  std::filesystem::create_directories(repo_ + "/scale/2");
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(ServedVersion("scale"), "1");
  EXPECT_EQ(IndexState("scale", "2"), "");  // not even tried
  ASSERT_TRUE(SaveScript(ScaleScript(2), repo_ + "/scale/2/model.pt.tmp").ok());
  std::filesystem::rename(repo_ + "/scale/2/model.pt.tmp", repo_ + "/scale/2/model.pt");
  ASSERT_TRUE(WaitFor([&] { return ServedVersion("scale") == "2"; }));
}

TEST_F(InferenceServerTest, ExplicitVersionsUnderALatestTwoPolicy) {
  WriteConfig(repo_, "scale", ScaleConfig("version_policy: { latest: { num_versions: 2 } }\n"));
  PublishVersion(repo_, "scale", 1, ScaleScript(1));
  PublishVersion(repo_, "scale", 2, ScaleScript(2));
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Ready("scale", "1") && Ready("scale", "2"); }));
  ::inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(ScaleRequest("scale", {1, 1, 1, 1}, "1"), response).ok());
  EXPECT_EQ(RawFloats(response), (std::vector<float>{1, 1, 1, 1}));
  ASSERT_TRUE(Infer(ScaleRequest("scale", {1, 1, 1, 1}), response).ok());
  EXPECT_EQ(response.model_version(), "2");
  EXPECT_EQ(InferCode(ScaleRequest("scale", {1, 1, 1, 1}, "3")), grpc::StatusCode::NOT_FOUND);
  // A third version pushes the first out.
  PublishVersion(repo_, "scale", 3, ScaleScript(3));
  ASSERT_TRUE(WaitFor([&] { return Ready("scale", "3") && !Ready("scale", "1"); }));
  EXPECT_TRUE(Ready("scale", "2"));
}

TEST_F(InferenceServerTest, BrokenConfigKeepsTheLoadedVersionServing) {
  StartWithScale();
  WriteConfig(repo_, "scale", "platform: \"pytorch_libtorch\" input [ {");
  ASSERT_TRUE(WaitFor([&] {
    const auto index = Index();
    for (const auto& m : index.models()) {
      if (m.name() == "scale" && m.state() == "READY") return true;
    }
    return false;
  }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(ServedVersion("scale"), "1");
  // The model's directory removed: the model is unloaded.
  std::filesystem::remove_all(repo_ + "/scale");
  ASSERT_TRUE(WaitFor([&] {
    return InferCode(ScaleRequest("scale", {1, 2, 3, 4})) == grpc::StatusCode::NOT_FOUND;
  }));
}

// A model whose config declares an FP16 input (as the bandwidth model's do): the client sends the
// floats rounded to half precision, the server converts them back to FP32 before the forward
// (this model converts them first anyway: TorchModel::widens_fp16), and the answer is computed
// from the rounded values; FP32 contents for that input are refused.
TEST_F(InferenceServerTest, Fp16InputsTravelAsHalvesAndFp32IsRefused) {
  WriteConfig(repo_, "half",
              "name: \"half\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 8\n"
              "input [ { name: \"INPUT__0\" data_type: TYPE_FP16 dims: [ 4 ] } ]\n"
              "output [ { name: \"OUTPUT__0\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n");
  ScriptSpec spec;
  spec.params = {{"k", {1}}};
  spec.fill = 2.0f;
  spec.source = "def forward(self, x: Tensor) -> Tensor:\n    return x.float() * self.k\n";
  PublishVersion(repo_, "half", 1, spec);
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Ready("half"); }));

  Fp32Tensor in{"INPUT__0", {2, 4}, {1.0f, 0.1f, -3.0e-6f, 70000.0f, 2049.0f, -0.5f, 1e-9f, 3.3f}};
  in.send_as_fp16 = true;
  auto out = client_->Infer("half", {in}, In(5s));
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  ASSERT_EQ(out->size(), 1u);
  ASSERT_EQ((*out)[0].data.size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const float rounded = HalfToFloat(FloatToHalf(in.data[i]));
    EXPECT_EQ((*out)[0].data[i], 2.0f * rounded) << i;
  }
  EXPECT_EQ((*out)[0].data[3], std::numeric_limits<float>::infinity());  // above FP16's range
  EXPECT_EQ((*out)[0].data[4], 4096.0f);                                 // 2049 ties to even

  in.send_as_fp16 = false;
  EXPECT_EQ(client_->Infer("half", {in}, In(5s)).status().code(), StatusCode::kInvalidArgument);

  // A model that insists on FP16 tensors is handed FP16 tensors.
  WriteConfig(repo_, "strict",
              "name: \"strict\"\nplatform: \"pytorch_libtorch\"\nmax_batch_size: 8\n"
              "input [ { name: \"INPUT__0\" data_type: TYPE_FP16 dims: [ 4 ] } ]\n"
              "output [ { name: \"OUTPUT__0\" data_type: TYPE_FP32 dims: [ 4 ] } ]\n");
  spec.source =
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    assert x.element_size() == 2\n"
      "    return x.float() * self.k\n";
  PublishVersion(repo_, "strict", 1, spec);
  ASSERT_TRUE(WaitFor([&] { return Ready("strict"); }));
  in.send_as_fp16 = true;
  auto strict = client_->Infer("strict", {in}, In(5s));
  ASSERT_TRUE(strict.ok()) << strict.status().ToString();
  EXPECT_EQ(strict.value()[0].data, (*out)[0].data);
}

// A model whose forward is matrix products: the loader times the module as loaded and its oneDNN
// copy on a batch of 64 rows and serves the faster (which one depends on the BLAS installed:
// OpenBLAS beats the copy, Debian's reference BLAS does not), and both answer alike.
TEST(TorchModelTest, ServesTheFasterOfTheModuleAndItsOneDnnCopy) {
  bench::TempDir dir;
  const std::string root = dir.path() + "/repo";
  MlpSpec spec;
  spec.input_dims = {{16}, {8, 16}};
  std::filesystem::create_directories(root + "/mlp/1");
  ASSERT_TRUE(SaveMlp(spec, root + "/mlp/1/model.pt").ok());
  ASSERT_TRUE(WriteFileAtomically(root + "/mlp/config.pbtxt", MlpConfig("mlp", spec, 128)).ok());
  ModelRepository repository(root, std::chrono::seconds(60), nullptr);
  repository.PollOnce();
  const auto snapshot = repository.Snapshot();
  ASSERT_EQ(snapshot->models.count("mlp"), 1u);
  const auto model = snapshot->models.at("mlp")->Newest();
  ASSERT_NE(model, nullptr);
  EXPECT_GT(model->plain_forward_ms(), 0.0);
  EXPECT_GT(model->onednn_forward_ms(), 0.0);
  EXPECT_EQ(model->accelerated(), model->onednn_forward_ms() < model->plain_forward_ms());
}

}  // namespace
}  // namespace df::inference
