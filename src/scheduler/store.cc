#include "scheduler/store.h"

#include "scheduler/memory_store.h"
#include "scheduler/redis_store.h"

namespace df::scheduler {

int64_t MovingAverageRtt(const std::vector<ProbeSample>& samples) {
  if (samples.empty()) return 0;
  double average = static_cast<double>(samples.front().rtt_ns);
  for (size_t i = 1; i < samples.size(); ++i) {
    average = average * kRttAverageWeight +
              static_cast<double>(samples[i].rtt_ns) * (1 - kRttAverageWeight);
  }
  return static_cast<int64_t>(average);
}

Result<std::unique_ptr<Store>> NewStore(std::string_view url) {
  if (url.empty() || url == "memory") return std::unique_ptr<Store>(new MemoryStore());
  if (url.starts_with("redis://")) {
    auto options = ParseRedisUrl(url);
    if (!options.ok()) return options.status();
    return std::unique_ptr<Store>(std::make_unique<RedisStore>(std::move(*options)));
  }
  return InvalidArgument("store: unknown store '" + std::string(url) +
                         "' (want \"memory\" or redis://HOST:PORT/DB)");
}

}  // namespace df::scheduler
