// Metrics and health over HTTP: Prometheus text format at /metrics (prometheus-cpp) and a
// health check at /healthz. Each binary owns one MetricsServer; components register their
// counters in the shared Registry.
#pragma once

#include <prometheus/registry.h>

#include <atomic>
#include <memory>
#include <string>

#include "common/status.h"

namespace prometheus {
class Exposer;
}

namespace df {

// Thread-safe. The registry outlives the server (both owned here).
class MetricsServer {
 public:
  MetricsServer();
  ~MetricsServer();

  // Starts serving on `address` ("127.0.0.1:4002"). Unavailable when the port is taken.
  Status Start(const std::string& address);

  prometheus::Registry& registry() { return *registry_; }
  // /healthz reports df_healthy 1 while healthy; a daemon clears it while shutting down.
  void SetHealthy(bool healthy) { healthy_->store(healthy); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<std::atomic<bool>> healthy_;
  std::shared_ptr<prometheus::Collectable> health_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace df
