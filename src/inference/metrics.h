// dfinference's Prometheus metrics, in the process's registry (common/metrics.h serves them):
//   df_inference_requests_total{model,code}      ModelInfer calls by gRPC status code name
//   df_inference_request_duration_seconds{model} ModelInfer time in the server, successful calls
//   df_inference_model_version{model}            newest loaded version (0 = none loaded)
//   df_inference_model_loads_total{model,result} version loads, result "ok" or "failed"
// The `model` label only takes names of models in the repository (kUnknownModel otherwise), so
// names sent by clients cannot grow the registry. Thread-safe; the registry must outlive this.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <string>

namespace df::inference {

inline constexpr char kUnknownModel[] = "_unknown";

class InferenceMetrics {
 public:
  explicit InferenceMetrics(prometheus::Registry& registry);

  // `code` is the gRPC status code's name ("OK", "INVALID_ARGUMENT", ...).
  void CountRequest(const std::string& model, const std::string& code);
  void ObserveLatency(const std::string& model, double seconds);
  void SetLoadedVersion(const std::string& model, int64_t version);
  void CountLoad(const std::string& model, bool ok);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Gauge>& version_;
  prometheus::Family<prometheus::Counter>& loads_;
};

}  // namespace df::inference
