#include "inference/metrics.h"

namespace df::inference {

InferenceMetrics::InferenceMetrics(prometheus::Registry& r)
    : requests_(prometheus::BuildCounter()
                    .Name("df_inference_requests_total")
                    .Help("ModelInfer calls, by model and gRPC status code")
                    .Register(r)),
      latency_(prometheus::BuildHistogram()
                   .Name("df_inference_request_duration_seconds")
                   .Help("Time a successful ModelInfer spent in the server (check, forward, "
                         "serialise)")
                   .Register(r)),
      version_(prometheus::BuildGauge()
                   .Name("df_inference_model_version")
                   .Help("Newest loaded version of each model (0: none loaded)")
                   .Register(r)),
      loads_(prometheus::BuildCounter()
                 .Name("df_inference_model_loads_total")
                 .Help("Model version loads, by result (ok, failed)")
                 .Register(r)) {}

void InferenceMetrics::CountRequest(const std::string& model, const std::string& code) {
  requests_.Add({{"model", model}, {"code", code}}).Increment();
}

void InferenceMetrics::ObserveLatency(const std::string& model, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1};
  latency_.Add({{"model", model}}, kBuckets).Observe(seconds);
}

void InferenceMetrics::SetLoadedVersion(const std::string& model, int64_t version) {
  version_.Add({{"model", model}}).Set(static_cast<double>(version));
}

void InferenceMetrics::CountLoad(const std::string& model, bool ok) {
  loads_.Add({{"model", model}, {"result", ok ? "ok" : "failed"}}).Increment();
}

}  // namespace df::inference
