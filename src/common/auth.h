// Control-plane authentication with a shared token.
//
// Every control RPC between daemons, seeds and schedulers (AnnounceHost, LeaveHost,
// AnnouncePeer, StatTask, SyncPieces, TriggerDownloadTask) carries the cluster's token as
// "authorization: Bearer <token>" metadata when one is configured (`auth_token_file`), and every
// server checks it before it reads the request. The token is a secret of at least
// kMinTokenBytes printable bytes, read from a file that only its owner can read. See
// docs/security.md for the threat model and how to deploy it.
//
// Without a token, RPCs are not authenticated by it: mutual TLS (tls.h) may authenticate them
// instead (ControlAuth below holds both). With neither, the daemons fall back to narrower
// checks (a seed accepts triggers only from its scheduler's address), and log that at start.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>
#include <utility>

#include "common/status.h"
#include "common/tls.h"

namespace df {

constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 4096;

// A shared token, or none. Immutable after construction; thread-safe.
class AuthToken {
 public:
  AuthToken() = default;  // no token: Attach is a no-op, Check accepts every call
  // Reads the token from `path` (surrounding whitespace trimmed). InvalidArgument when it is
  // shorter than kMinTokenBytes, longer than kMaxTokenBytes or not printable ASCII;
  // PermissionDenied when the file is readable by its group or others; NotFound when it cannot be
  // read.
  static Result<AuthToken> LoadFile(const std::string& path);
  // A token from its text (tests, tools). Same rules as LoadFile except the file mode.
  static Result<AuthToken> FromString(std::string token);

  bool enabled() const { return !token_.empty(); }
  // Adds the token to a call's metadata (no-op without a token).
  void Attach(grpc::ClientContext* context) const;
  // OK when no token is configured or the call carries it; UNAUTHENTICATED otherwise. The
  // comparison takes the same time wherever the tokens differ.
  grpc::Status Check(const grpc::ServerContextBase& context) const;

 private:
  explicit AuthToken(std::string token) : token_(std::move(token)) {}
  std::string token_;
};

// How a node authenticates control RPCs: the shared token, mutual TLS, both, or neither.
// Immutable after Load; thread-safe. Every gRPC server on TCP and every client of one uses it,
// so that one configuration means the same thing everywhere.
class ControlAuth {
 public:
  ControlAuth() = default;  // neither: insecure, unauthenticated
  // A token without TLS (tests, and callers that load the token themselves).
  explicit ControlAuth(AuthToken token) : token_(std::move(token)) {}
  // Loads the token (empty path: none; errors of AuthToken::LoadFile) and the TLS files (all
  // empty: none; errors of MutualTls::Load).
  static Result<ControlAuth> Load(const std::string& token_file, const TlsFiles& tls_files);

  const AuthToken& token() const { return token_; }
  const MutualTls& tls() const { return tls_; }
  // True when every caller must prove it belongs to the cluster (token or client certificate):
  // address-based fallback checks are then moot.
  bool authenticates_callers() const { return token_.enabled() || tls_.enabled(); }

  // Server side: OK when the call carries the token (if one is configured) and came over a
  // verified TLS connection (if TLS is on); UNAUTHENTICATED otherwise.
  grpc::Status Check(const grpc::ServerContextBase& context) const;
  // Client side: what every call carries (the token).
  void Attach(grpc::ClientContext* context) const { token_.Attach(context); }
  // Client side: credentials of every channel to a control server (TLS or insecure).
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const {
    return tls_.ChannelCredentials();
  }
  // Server side: credentials of every control server on TCP (TLS or insecure).
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const {
    return tls_.ServerCredentials();
  }

 private:
  AuthToken token_;
  MutualTls tls_;
};

// The IP address of a gRPC peer ("ipv4:1.2.3.4:5" -> "1.2.3.4", "ipv6:[::1]:5" -> "::1"), or ""
// for other transports (unix sockets).
std::string PeerIp(const std::string& grpc_peer);

}  // namespace df
