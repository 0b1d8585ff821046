#include "common/auth.h"

#include <openssl/crypto.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

namespace df {
namespace {

constexpr char kMetadataKey[] = "authorization";
constexpr char kScheme[] = "Bearer ";

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

Result<AuthToken> AuthToken::FromString(std::string token) {
  token = Trim(token);
  if (token.size() < kMinTokenBytes) {
    return InvalidArgument("auth token must have at least " + std::to_string(kMinTokenBytes) +
                           " characters");
  }
  if (token.size() > kMaxTokenBytes) return InvalidArgument("auth token is too long");
  for (char c : token) {
    if (c <= 0x20 || c >= 0x7f) {
      return InvalidArgument("auth token must be printable ASCII without spaces");
    }
  }
  return AuthToken(std::move(token));
}

Result<AuthToken> AuthToken::LoadFile(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFound("auth token file " + path + " not found");
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  "auth token file " + path + " is accessible by group or others (chmod 600 it)");
  }
  std::ifstream in(path);
  if (!in) return NotFound("auth token file " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  auto token = FromString(ss.str());
  if (!token.ok()) return InvalidArgument(path + ": " + token.status().message());
  return token;
}

void AuthToken::Attach(grpc::ClientContext* context) const {
  if (enabled()) context->AddMetadata(kMetadataKey, kScheme + token_);
}

grpc::Status AuthToken::Check(const grpc::ServerContextBase& context) const {
  if (!enabled()) return grpc::Status::OK;
  const auto& md = context.client_metadata();
  auto it = md.find(kMetadataKey);
  if (it != md.end()) {
    std::string want = kScheme + token_;
    const grpc::string_ref& got = it->second;
    if (got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong auth token");
}

Result<ControlAuth> ControlAuth::Load(const std::string& token_file, const TlsFiles& tls_files) {
  ControlAuth auth;
  if (!token_file.empty()) {
    auto token = AuthToken::LoadFile(token_file);
    if (!token.ok()) return token.status();
    auth.token_ = std::move(token).value();
  }
  auto tls = MutualTls::Load(tls_files);
  if (!tls.ok()) return tls.status();
  auth.tls_ = std::move(tls).value();
  return auth;
}

grpc::Status ControlAuth::Check(const grpc::ServerContextBase& context) const {
  if (grpc::Status s = tls_.CheckPeer(context); !s.ok()) return s;
  return token_.Check(context);
}

std::string PeerIp(const std::string& peer) {
  if (peer.rfind("ipv4:", 0) == 0) {
    std::string rest = peer.substr(5);
    return rest.substr(0, rest.rfind(':'));
  }
  if (peer.rfind("ipv6:", 0) == 0) {
    std::string rest = peer.substr(5);
    size_t close = rest.find(']');
    if (!rest.empty() && rest[0] == '[' && close != std::string::npos) {
      std::string ip = rest.substr(1, close - 1);
      // An IPv4 client on a dual-stack socket: "::ffff:1.2.3.4".
      if (ip.rfind("::ffff:", 0) == 0 && ip.find('.') != std::string::npos) return ip.substr(7);
      return ip;
    }
  }
  return "";
}

}  // namespace df
