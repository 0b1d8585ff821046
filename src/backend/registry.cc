#include "backend/backend.h"

namespace df {

BackendRegistry::BackendRegistry(const std::string& extra_ca_file)
    : http_(NewHttpBackend(extra_ca_file)), file_(NewFileBackend()) {}
BackendRegistry::~BackendRegistry() = default;

Result<Backend*> BackendRegistry::ForUrl(std::string_view url) {
  size_t colon = url.find("://");
  if (colon == std::string_view::npos) {
    return InvalidArgument("'" + std::string(url) +
                           "' has no scheme (use http://, https:// or file://)");
  }
  std::string_view scheme = url.substr(0, colon);
  if (scheme == "http" || scheme == "https") return http_.get();
  if (scheme == "file") return file_.get();
  return InvalidArgument("unsupported URL scheme '" + std::string(scheme) + "'");
}

}  // namespace df
