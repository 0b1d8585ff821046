// Specifications of dfscheduler's configuration: defaults, one parser for YAML and flags, errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "scheduler/config.h"

namespace df::scheduler {
namespace {

std::string WriteTempFile(const std::string& text) {
  char path[] = "/tmp/dfscheduler_config_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

TEST(SchedulerConfig, DefaultsMatchTheDocumentedOnes) {
  SchedulerConfig c;
  EXPECT_EQ(c.listen, "0.0.0.0:8002");
  EXPECT_EQ(c.metrics, "0.0.0.0:8003");
  EXPECT_EQ(c.evaluator, "default");
  EXPECT_EQ(c.candidate_parent_limit, 8u);
  EXPECT_EQ(c.back_to_source_limit, 1u);
  EXPECT_EQ(c.schedule_timeout_ms, 10'000u);
  EXPECT_EQ(c.cross_idc_children_limit, 1u);
  EXPECT_EQ(c.weak_child_seed_delay_ms, 1'000u);
  EXPECT_TRUE(ValidateConfig(c).ok());
}

TEST(SchedulerConfig, SetOptionAcceptsKebabAndSnakeNames) {
  SchedulerConfig c;
  ASSERT_TRUE(SetOption(c, "schedule-timeout", "500ms").ok());
  ASSERT_TRUE(SetOption(c, "candidate_parent_limit", "4").ok());
  ASSERT_TRUE(SetOption(c, "host-ttl", "2m").ok());
  ASSERT_TRUE(SetOption(c, "weak_child_seed_delay", "0").ok());
  EXPECT_EQ(c.weak_child_seed_delay_ms, 0u);
  EXPECT_EQ(c.schedule_timeout_ms, 500u);
  EXPECT_EQ(c.candidate_parent_limit, 4u);
  EXPECT_EQ(c.host_ttl_ms, 120'000u);
}

TEST(SchedulerConfig, BadValuesNameTheOption) {
  SchedulerConfig c;
  struct Case {
    const char* name;
    const char* value;
  };
  for (const Case& bad :
       {Case{"candidate-parent-limit", "0"}, Case{"candidate-parent-limit", "x"},
        Case{"candidate-parent-limit", "-3"}, Case{"gc-interval", "0s"},
        Case{"schedule-timeout", "10 parsecs"}, Case{"no-such-option", "1"},
        Case{"cross-idc-children-limit", "-1"}, Case{"cross-idc-children-limit", "many"},
        Case{"weak-child-seed-delay", "soon"}}) {
    Status s = SetOption(c, bad.name, bad.value);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad.name << "=" << bad.value;
    EXPECT_NE(s.message().find(bad.name), std::string::npos) << s.message();
  }
}

TEST(SchedulerConfig, FileOverridesDefaultsKeyByKey) {
  std::string path =
      WriteTempFile("listen: 127.0.0.1:9000\nschedule_timeout: 3s\nback_to_source_limit: 2\n");
  auto c = LoadConfigFile(path, SchedulerConfig{});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, "127.0.0.1:9000");
  EXPECT_EQ(c->schedule_timeout_ms, 3000u);
  EXPECT_EQ(c->back_to_source_limit, 2u);
  EXPECT_EQ(c->candidate_parent_limit, 8u);
  std::remove(path.c_str());
}

TEST(SchedulerConfig, FileErrorsAreOneClearLine) {
  std::string unknown = WriteTempFile("listen: a:1\nbogus_key: 1\n");
  auto c = LoadConfigFile(unknown, SchedulerConfig{});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("bogus_key"), std::string::npos);
  EXPECT_EQ(c.status().message().find('\n'), std::string::npos);

  std::string broken = WriteTempFile("listen: [unclosed\n");
  EXPECT_EQ(LoadConfigFile(broken, SchedulerConfig{}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadConfigFile("/nonexistent/x.yaml", SchedulerConfig{}).status().code(),
            StatusCode::kNotFound);
  std::remove(unknown.c_str());
  std::remove(broken.c_str());
}

// Found by review, confirmed by fuzz_scheduler_config: a sequence key threw out of the loader.
TEST(SchedulerConfig, NonScalarKeyIsAnError) {
  auto c = LoadConfigFromString("[a]: 1\n", "s.yaml", SchedulerConfig{});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("keys must be scalars"), std::string::npos);
  EXPECT_TRUE(LoadConfigFromString("candidate_parent_limit: 3\n", "s.yaml", SchedulerConfig{})
                  .value()
                  .candidate_parent_limit == 3);
}

TEST(SchedulerConfig, TlsFilesMustComeTogether) {
  SchedulerConfig c;
  ASSERT_TRUE(SetOption(c, "tls-cert-file", "/etc/df/sched.crt").ok());
  Status s = ValidateConfig(c);
  EXPECT_NE(s.message().find("must be set together"), std::string::npos) << s.message();
  ASSERT_TRUE(SetOption(c, "tls_key_file", "/etc/df/sched.key").ok());
  ASSERT_TRUE(SetOption(c, "tls_ca_file", "/etc/df/ca.crt").ok());
  EXPECT_TRUE(ValidateConfig(c).ok());
}

TEST(SchedulerConfig, UnknownEvaluatorIsRejected) {
  SchedulerConfig c;
  c.evaluator = "neural";
  Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("default"), std::string::npos) << "names the known evaluators";
  EXPECT_NE(s.message().find("ml"), std::string::npos) << "names the known evaluators";
}

TEST(SchedulerConfig, ParentGraphIsDagOrMesh) {
  SchedulerConfig c;
  EXPECT_EQ(c.parent_graph, "dag");
  ASSERT_TRUE(SetOption(c, "parent-graph", "mesh").ok());
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.parent_graph = "tree";
  Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("parent_graph"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("mesh"), std::string::npos) << "names the known values";
}

TEST(SchedulerConfig, MeshSeedChildrenIsACount) {
  SchedulerConfig c;
  EXPECT_EQ(c.mesh_seed_children, 4u);
  ASSERT_TRUE(SetOption(c, "mesh-seed-children", "0").ok());
  EXPECT_EQ(c.mesh_seed_children, 0u);
  EXPECT_FALSE(SetOption(c, "mesh-seed-children", "-1").ok());
  EXPECT_FALSE(SetOption(c, "mesh-seed-children", "many").ok());
  EXPECT_FALSE(
      LoadConfigFromString("mesh_seed_children: 100001\n", "s.yaml", SchedulerConfig{}).ok());
}

TEST(SchedulerConfig, MlEvaluatorNeedsAnInferenceService) {
  SchedulerConfig c;
  c.evaluator = "ml";
  Status s = ValidateConfig(c);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--inference"), std::string::npos) << s.ToString();
  c.inference = "127.0.0.1:8001";
  EXPECT_TRUE(ValidateConfig(c).ok());
  c.inference = "no-port";
  EXPECT_EQ(ValidateConfig(c).code(), StatusCode::kInvalidArgument);
  c.inference = "127.0.0.1:8001";
  c.inference_model = "../etc";
  EXPECT_EQ(ValidateConfig(c).code(), StatusCode::kInvalidArgument);
  c.inference_model = "bandwidth";
  c.inference_deadline_ms = 60'000;
  EXPECT_EQ(ValidateConfig(c).code(), StatusCode::kInvalidArgument);
  auto loaded = LoadConfigFromString(
      "evaluator: ml\ninference: 10.0.0.5:8001\ninference_model: bw\n"
      "inference_deadline: 5ms\nprediction_ttl: 2m\n",
      "test", SchedulerConfig{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded.value().inference, "10.0.0.5:8001");
  EXPECT_EQ(loaded.value().inference_model, "bw");
  EXPECT_EQ(loaded.value().inference_deadline_ms, 5u);
  EXPECT_EQ(loaded.value().prediction_ttl_ms, 120'000u);
  EXPECT_TRUE(ValidateConfig(loaded.value()).ok());
  EXPECT_TRUE(c.infer_groups);
  EXPECT_TRUE(SetOption(c, "infer-groups", "false").ok());
  EXPECT_FALSE(c.infer_groups);
  Status bad = SetOption(c, "infer_groups", "maybe");
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("true or false"), std::string::npos) << bad.ToString();
  EXPECT_FALSE(c.infer_groups) << "a bad value changes nothing";
}

TEST(SchedulerConfig, ProbeOptions) {
  SchedulerConfig c;
  EXPECT_EQ(c.probe_count, 5u);
  EXPECT_EQ(c.probe_queue_length, 5u);
  EXPECT_EQ(c.probe_sample_size, 50u);
  EXPECT_TRUE(SetOption(c, "probe-count", "8").ok());
  EXPECT_TRUE(SetOption(c, "probe_queue_length", "10").ok());
  EXPECT_TRUE(SetOption(c, "probe-sample-size", "100").ok());
  EXPECT_EQ(c.probe_count, 8u);
  EXPECT_EQ(c.probe_queue_length, 10u);
  EXPECT_EQ(c.probe_sample_size, 100u);
  EXPECT_FALSE(SetOption(c, "probe-count", "0").ok());
  EXPECT_FALSE(SetOption(c, "probe-count", "33").ok()) << "a daemon probes at most 32";
  EXPECT_FALSE(SetOption(c, "probe-queue-length", "0").ok());
  ASSERT_TRUE(SetOption(c, "probe-sample-size", "4").ok());
  EXPECT_FALSE(ValidateConfig(c).ok()) << "a sample smaller than probe_count";
  for (const char* name : {"probe_count", "probe_queue_length", "probe_sample_size"}) {
    EXPECT_NE(std::find(OptionNames().begin(), OptionNames().end(), name), OptionNames().end());
  }
}

TEST(SchedulerConfig, BackgroundStall) {
  SchedulerConfig c;
  EXPECT_EQ(c.background_stall_ms, 10'000u);
  EXPECT_TRUE(SetOption(c, "background-stall", "2s").ok());
  EXPECT_EQ(c.background_stall_ms, 2'000u);
  EXPECT_FALSE(SetOption(c, "background_stall", "50ms").ok()) << "below the 20 ms tick's noise";
  auto loaded = LoadConfigFromString("background_stall: 30s\n", "test.yaml", SchedulerConfig{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->background_stall_ms, 30'000u);
  EXPECT_NE(std::find(OptionNames().begin(), OptionNames().end(), "background_stall"),
            OptionNames().end());
}

TEST(SchedulerConfig, PreheatRegistriesAreAListOfHostsCheckedAtLoad) {
  SchedulerConfig c;
  EXPECT_TRUE(c.preheat_registries.empty());  // any registry by default (docs/oci.md)
  auto loaded = LoadConfigFromString("preheat_registries: docker.io,auth.docker.io\n", "test.yaml",
                                     SchedulerConfig{});
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(ValidateConfig(loaded.value()).ok());
  EXPECT_TRUE(SetOption(c, "preheat-registries", "http://169.254.169.254/").ok());
  Status bad = ValidateConfig(c);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("preheat_registries"), std::string::npos) << bad.ToString();
}

}  // namespace
}  // namespace df::scheduler
