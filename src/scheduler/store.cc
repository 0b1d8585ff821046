#include "scheduler/store.h"

#include "scheduler/memory_store.h"
#include "scheduler/redis_store.h"

namespace df::scheduler {

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
