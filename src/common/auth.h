// Control-plane authentication with a shared token.
//
// Every control RPC between daemons, seeds and schedulers (AnnounceHost, LeaveHost,
// AnnouncePeer, StatTask, SyncPieces, TriggerDownloadTask) carries the cluster's token as
// "authorization: Bearer <token>" metadata when one is configured (`auth_token_file`), and every
// server checks it before it reads the request. The token is a secret of at least
// kMinTokenBytes printable bytes, read from a file that only its owner can read. See
// docs/security.md for the threat model and how to deploy it.
//
// Without a token, RPCs are not authenticated: the daemons then fall back to narrower checks
// (a seed accepts triggers only from its scheduler's address), and log that at start.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "common/status.h"

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

// The IP address of a gRPC peer ("ipv4:1.2.3.4:5" -> "1.2.3.4", "ipv6:[::1]:5" -> "::1"), or ""
// for other transports (unix sockets).
std::string PeerIp(const std::string& grpc_peer);

}  // namespace df
