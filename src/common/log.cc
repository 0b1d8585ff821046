#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace df {

Status InitLogging(const std::string& component, const std::string& level,
                   const std::string& file) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return InvalidArgument("unknown log level '" + level +
                           "' (trace, debug, info, warn, error, critical, off)");
  }
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (file.empty()) {
      logger = spdlog::stderr_logger_mt(component);
    } else {
      logger = spdlog::basic_logger_mt(component, file);
    }
  } catch (const spdlog::spdlog_ex& e) {
    return IoError(std::string("log file: ") + e.what());
  }
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l " + component + " %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return Status::Ok();
}

}  // namespace df
