#include "scheduler/store.h"

#include "scheduler/memory_store.h"

namespace df::scheduler {

Result<std::unique_ptr<Store>> NewStore(std::string_view url) {
  if (url.empty() || url == "memory") return std::unique_ptr<Store>(new MemoryStore());
  return InvalidArgument("store: unknown store '" + std::string(url) +
                         "' (want \"memory\" or redis://HOST:PORT/DB)");
}

}  // namespace df::scheduler
