#include "common/metrics.h"

#include <prometheus/exposer.h>

namespace df {
namespace {

class HealthCollectable : public prometheus::Collectable {
 public:
  explicit HealthCollectable(std::shared_ptr<std::atomic<bool>> healthy)
      : healthy_(std::move(healthy)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily f;
    f.name = "df_healthy";
    f.help = "1 while the process is serving";
    f.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric m;
    m.gauge.value = healthy_->load() ? 1 : 0;
    f.metric.push_back(m);
    return {f};
  }

 private:
  std::shared_ptr<std::atomic<bool>> healthy_;
};

}  // namespace

MetricsServer::MetricsServer()
    : registry_(std::make_shared<prometheus::Registry>()),
      healthy_(std::make_shared<std::atomic<bool>>(true)),
      health_(std::make_shared<HealthCollectable>(healthy_)) {}

MetricsServer::~MetricsServer() = default;

Status MetricsServer::Start(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& e) {
    return Unavailable("metrics listen on " + address + ": " + e.what());
  }
  exposer_->RegisterCollectable(registry_, "/metrics");
  exposer_->RegisterCollectable(health_, "/healthz");
  return Status::Ok();
}

}  // namespace df
