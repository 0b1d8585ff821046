// Config parsing (Triton text format) and request checks, without a server.
#include <c10/util/Half.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <span>

#include "inference/datatype.h"
#include "inference/half.h"
#include "inference/infer_request.h"
#include "inference/model_config.h"
#include "grpc_service.grpc.pb.h"

namespace df::inference {
namespace {

// A config as Triton's docs write them, with fields dfinference does not use.
constexpr char kTritonConfig[] = R"pb(
  name: "bandwidth"
  platform: "pytorch_libtorch"
  max_batch_size: 64 input
  [ {
    name: "INPUT__1"
    data_type: TYPE_INT64
    dims: [ 2 ]
  }
    , {
      name: "INPUT__0"
      data_type: TYPE_FP32
      dims: [ -1, 16 ]
      reshape: { shape: [ 16 ] }
    }] output
  [ {
    name: "OUTPUT__0"
    data_type: TYPE_FP32
    dims: [ 1 ]
  }] instance_group
  [ { count: 2 kind: KIND_CPU }]
  dynamic_batching {
    preferred_batch_size: [ 8, 16 ]
    max_queue_delay_microseconds: 100
  }
  parameters: {
    key: "INFERENCE_MODE"
    value: { string_value: "true" }
  }
  optimization {
    execution_accelerators {
      cpu_execution_accelerator:
      [ { name: "x" }]
    }
  } model_warmup
  [ { name: "w" batch_size: 1 }]
)pb";

ServingConfig Serving(const std::string& text, const std::string& name = "bandwidth") {
  auto parsed = ParseModelConfig(text, "config.pbtxt");
  EXPECT_TRUE(parsed.ok()) << parsed.status().ToString();
  auto serving = MakeServingConfig(parsed.value(), name);
  EXPECT_TRUE(serving.ok()) << serving.status().ToString();
  return serving.ok() ? serving.value() : ServingConfig();
}

TEST(InferenceModelConfigTest, ParsesTritonConfigAndSkipsUnknownFields) {
  ServingConfig c = Serving(kTritonConfig);
  EXPECT_EQ(c.config.max_batch_size(), 64);
  ASSERT_EQ(c.config.input_size(), 2);
  EXPECT_EQ(c.config.input(1).data_type(), ::inference::TYPE_FP32);
  EXPECT_EQ(c.config.input(1).dims(0), -1);
  EXPECT_EQ(c.config.instance_group(0).count(), 2);
  EXPECT_EQ(c.model_filename, "model.pt");
  EXPECT_EQ(c.max_versions, 1u);
  // forward(INPUT__0, INPUT__1): the suffix orders the arguments, not the config order.
  EXPECT_EQ(c.input_order, (std::vector<int>{1, 0}));
  EXPECT_EQ(c.output_order, (std::vector<int>{0}));
}

TEST(InferenceModelConfigTest, NamesWithoutIndexKeepConfigOrder) {
  ServingConfig c = Serving(R"pb(platform: "pytorch_libtorch" input
                                 [ {
                                   name: "b"
                                   data_type: TYPE_FP32
                                   dims: [ 1 ]
                                 }
                                   , {
                                     name: "a"
                                     data_type: TYPE_FP32
                                     dims: [ 1 ]
                                   }] output
                                 [ {
                                   name: "y"
                                   data_type: TYPE_FP32
                                   dims: [ 1 ]
                                 }])pb",
                            "m");
  EXPECT_EQ(c.config.name(), "m");
  EXPECT_EQ(c.input_order, (std::vector<int>{0, 1}));
}

TEST(InferenceModelConfigTest, VersionPolicies) {
  const std::string io = R"pb(platform: "pytorch_libtorch" input
                              [ {
                                name: "x"
                                data_type: TYPE_FP32
                                dims: [ 1 ]
                              }] output
                              [ {
                                name: "y"
                                data_type: TYPE_FP32
                                dims: [ 1 ]
                              }])pb";
  EXPECT_EQ(Serving(io + "version_policy: { latest: { num_versions: 3 } }", "m").max_versions, 3u);
  EXPECT_EQ(Serving(io + "version_policy: { all: {} }", "m").max_versions, 0u);
  ServingConfig specific = Serving(io + "version_policy: { specific: { versions: [2, 5] } }", "m");
  EXPECT_EQ(specific.specific, (std::set<int64_t>{2, 5}));
}

TEST(InferenceModelConfigTest, RejectsWhatCannotBeServed) {
  struct Case {
    const char* text;
    const char* error;  // part of the message
  };
  const Case cases[] = {
      {"platform: \"pytorch_libtorch\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [1] } ",
       "1:"},
      {"platform: \"onnxruntime_onnx\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [1] } ] "
       "output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "platform onnxruntime_onnx"},
      {"platform: \"pytorch_libtorch\" output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "no input"},
      {"platform: \"pytorch_libtorch\" input [ { name: \"x\" data_type: TYPE_STRING dims: [1] } ] "
       "output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "TYPE_STRING"},
      {"platform: \"pytorch_libtorch\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [-2] } ] "
       "output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "-2"},
      {"platform: \"pytorch_libtorch\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [1] }, "
       "{ name: \"x\" data_type: TYPE_FP32 dims: [1] } ] "
       "output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "twice"},
      {"name: \"other\" platform: \"pytorch_libtorch\" input [ { name: \"x\" data_type: TYPE_FP32 "
       "dims: [1] } ] output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "directory"},
      {"platform: \"pytorch_libtorch\" max_batch_size: -1 input [ { name: \"x\" data_type: "
       "TYPE_FP32 dims: [1] } ] output [ { name: \"y\" data_type: TYPE_FP32 dims: [1] } ]",
       "max_batch_size"},
      {"max_batch_size: \"many\"", "1:"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseModelConfig(c.text, "config.pbtxt");
    Status s = parsed.status();
    if (parsed.ok()) s = MakeServingConfig(parsed.value(), "m").status();
    EXPECT_FALSE(s.ok()) << c.text;
    EXPECT_NE(s.message().find(c.error), std::string::npos) << c.text << " -> " << s.message();
  }
}

TEST(InferenceDatatypeTest, NamesAndSizes) {
  EXPECT_EQ(DatatypeName(::inference::TYPE_FP32), "FP32");
  EXPECT_EQ(DatatypeName(::inference::TYPE_STRING), "BYTES");
  EXPECT_EQ(ParseDatatypeName("INT64"), ::inference::TYPE_INT64);
  EXPECT_EQ(ParseDatatypeName("fp32"), ::inference::TYPE_INVALID);
  EXPECT_EQ(ElementSizeBytes(::inference::TYPE_FP16), 2u);
}

// Requests against kTritonConfig: INPUT__0 FP32 [-1, 16], INPUT__1 INT64 [2], batch <= 64.
class InferRequestTest : public ::testing::Test {
 protected:
  ::inference::ModelInferRequest::InferInputTensor* AddInput(const std::string& name,
                                                             const std::string& datatype,
                                                             std::vector<int64_t> shape) {
    auto* t = request_.add_inputs();
    t->set_name(name);
    t->set_datatype(datatype);
    for (int64_t d : shape) t->add_shape(d);
    return t;
  }
  // A valid request of `batch` rows, typed.
  void Valid(int64_t batch, int64_t length = 3) {
    auto* x = AddInput("INPUT__0", "FP32", {batch, length, 16});
    for (int64_t i = 0; i < batch * length * 16; ++i) x->mutable_contents()->add_fp32_contents(1);
    auto* y = AddInput("INPUT__1", "INT64", {batch, 2});
    for (int64_t i = 0; i < batch * 2; ++i) y->mutable_contents()->add_int64_contents(i);
  }
  Status Check() { return CheckInferRequest(config_, request_).status(); }

  ServingConfig config_ = Serving(kTritonConfig);
  ::inference::ModelInferRequest request_;
};

TEST_F(InferRequestTest, AcceptsTypedAndOrdersInputsForForward) {
  Valid(4);
  auto checked = CheckInferRequest(config_, request_);
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
  EXPECT_EQ(checked->batch_size, 4);
  ASSERT_EQ(checked->inputs.size(), 2u);
  EXPECT_EQ(checked->inputs[0].config_index, 1);  // INPUT__0 first
  EXPECT_EQ(checked->inputs[0].element_count, 4 * 3 * 16);
  EXPECT_EQ(checked->outputs, (std::vector<int>{0}));
}

TEST_F(InferRequestTest, AcceptsRaw) {
  AddInput("INPUT__0", "FP32", {2, 1, 16});
  AddInput("INPUT__1", "INT64", {2, 2});
  request_.add_raw_input_contents()->assign(2 * 16 * 4, '\0');
  request_.add_raw_input_contents()->assign(2 * 2 * 8, '\0');
  EXPECT_TRUE(Check().ok()) << Check().ToString();
  request_.mutable_raw_input_contents(1)->push_back('\0');
  EXPECT_EQ(Check().code(), StatusCode::kInvalidArgument);
}

TEST_F(InferRequestTest, RejectsMalformed) {
  using Mutation = std::function<void(::inference::ModelInferRequest&)>;
  const std::pair<const char*, Mutation> cases[] = {
      {"missing input", [](auto& r) { r.mutable_inputs()->RemoveLast(); }},
      {"unknown input", [](auto& r) { r.mutable_inputs(1)->set_name("INPUT__7"); }},
      {"given twice", [](auto& r) { *r.add_inputs() = r.inputs(0); }},
      {"datatype", [](auto& r) { r.mutable_inputs(1)->set_datatype("INT32"); }},
      {"want 3 dims", [](auto& r) { r.mutable_inputs(0)->mutable_shape()->RemoveLast(); }},
      {"batch size 65", [](auto& r) { r.mutable_inputs(0)->set_shape(0, 65); }},
      {"batch size differs", [](auto& r) { r.mutable_inputs(1)->set_shape(0, 3); }},
      {"must be 16", [](auto& r) { r.mutable_inputs(0)->set_shape(2, 15); }},
      {"negative", [](auto& r) { r.mutable_inputs(0)->set_shape(1, -1); }},
      {"too large", [](auto& r) { r.mutable_inputs(0)->set_shape(1, int64_t{1} << 62); }},
      {"values for",
       [](auto& r) { r.mutable_inputs(1)->mutable_contents()->add_int64_contents(0); }},
      {"unknown output", [](auto& r) { r.add_outputs()->set_name("OUTPUT__9"); }},
      {"raw_input_contents", [](auto& r) { r.add_raw_input_contents("x"); }},
  };
  for (const auto& [error, mutate] : cases) {
    request_.Clear();
    Valid(4);
    mutate(request_);
    Status s = Check();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << error;
    EXPECT_NE(s.message().find(error), std::string::npos) << error << " -> " << s.message();
  }
}

TEST_F(InferRequestTest, RawWithTypedContentsIsRefused) {
  Valid(1);
  request_.add_raw_input_contents()->assign(16 * 3 * 4, '\0');
  request_.add_raw_input_contents()->assign(2 * 8, '\0');
  EXPECT_NE(Check().message().find("contents given with raw"), std::string::npos);
}

// The wire format is Triton's: a renumbered field would silently break a real Triton client or
// server. Numbers from triton-inference-server/common protobuf/grpc_service.proto.
TEST(KServeWireFormatTest, FieldNumbersAreTheSpecs) {
  auto number = [](const google::protobuf::Descriptor* d, const char* field) {
    const auto* f = d->FindFieldByName(field);
    return f == nullptr ? -1 : f->number();
  };
  const auto* request = ::inference::ModelInferRequest::descriptor();
  EXPECT_EQ(request->full_name(), "inference.ModelInferRequest");
  const std::pair<const char*, int> request_fields[] = {
      {"model_name", 1}, {"model_version", 2},     {"id", 3}, {"parameters", 4}, {"inputs", 5},
      {"outputs", 6},    {"raw_input_contents", 7}};
  for (const auto& [field, n] : request_fields) EXPECT_EQ(number(request, field), n) << field;
  const auto* input = ::inference::ModelInferRequest::InferInputTensor::descriptor();
  EXPECT_EQ(number(input, "name"), 1);
  EXPECT_EQ(number(input, "datatype"), 2);
  EXPECT_EQ(number(input, "shape"), 3);
  EXPECT_EQ(number(input, "contents"), 5);
  const auto* response = ::inference::ModelInferResponse::descriptor();
  EXPECT_EQ(number(response, "outputs"), 5);
  EXPECT_EQ(number(response, "raw_output_contents"), 6);
  const auto* contents = ::inference::InferTensorContents::descriptor();
  EXPECT_EQ(number(contents, "int64_contents"), 3);
  EXPECT_EQ(number(contents, "fp32_contents"), 6);
  EXPECT_EQ(number(contents, "fp64_contents"), 7);
  EXPECT_EQ(number(::inference::RepositoryIndexResponse::ModelIndex::descriptor(), "reason"), 4);
  EXPECT_EQ(number(::inference::ModelConfig::descriptor(), "max_batch_size"), 4);
  EXPECT_EQ(number(::inference::ModelConfig::descriptor(), "backend"), 17);
  EXPECT_EQ(number(::inference::ModelInput::descriptor(), "dims"), 4);
  EXPECT_EQ(number(::inference::ModelOutput::descriptor(), "dims"), 3);
  EXPECT_EQ(::inference::TYPE_FP32, 11);
  EXPECT_EQ(std::string(::inference::GRPCInferenceService::service_full_name()),
            "inference.GRPCInferenceService");
}

// Float to half conversion against libtorch's (c10::Half: round to nearest even), on the special
// values, the edges of FP16's range, and a million random bit patterns; and back, on every half.
TEST(HalfTest, ConversionMatchesLibtorchBitForBit) {
  auto torch_half = [](float f) { return c10::Half(f).x; };
  std::vector<float> values = {0.0f,
                               -0.0f,
                               1.0f,
                               -1.0f,
                               0.1f,
                               65504.0f,
                               65519.99f,
                               65520.0f,
                               65536.0f,
                               1e10f,
                               -1e10f,
                               6.1035e-5f,
                               6.0976e-5f,
                               5.96e-8f,
                               2.98e-8f,
                               2.99e-8f,
                               1e-30f,
                               2049.0f,
                               2051.0f,
                               1.0009765625f,
                               std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::denorm_min()};
  std::mt19937 rng(7);
  for (int i = 0; i < 1'000'000; ++i) {
    const uint32_t bits = rng();
    float f;
    std::memcpy(&f, &bits, sizeof f);
    if (!std::isnan(f)) values.push_back(f);
  }
  std::vector<uint16_t> vectorised(values.size());
  FloatsToHalves(values, vectorised);
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(FloatToHalf(values[i]), torch_half(values[i])) << values[i];
    ASSERT_EQ(vectorised[i], torch_half(values[i])) << values[i];
  }
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(nan))));
  uint16_t one_nan = 0;
  FloatsToHalves(std::span<const float>(&nan, 1), std::span<uint16_t>(&one_nan, 1));
  EXPECT_TRUE(std::isnan(HalfToFloat(one_nan)));
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    c10::Half want;
    want.x = static_cast<uint16_t>(h);
    const float got = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(static_cast<float>(want))) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(got, static_cast<float>(want)) << h;
    }
  }
}

}  // namespace
}  // namespace df::inference
