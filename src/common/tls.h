// Mutual TLS on the control plane (gRPC between daemons, seeds and schedulers).
//
// With a certificate, its key and a CA configured (`tls_cert_file`, `tls_key_file`,
// `tls_ca_file`), every gRPC server on a TCP port requires a client certificate signed by the CA
// and every gRPC client presents its certificate and verifies the server's chain against the CA
// *and* the address it dialled: a server's certificate must name that address in its subject
// alternative names (an IP SAN for a peer, which is dialled at its announced --ip; a DNS or IP
// SAN for the scheduler, as written in --scheduler). A stolen certificate therefore cannot
// impersonate another host. See docs/security.md, "Mutual TLS".
//
// The daemon's local API on its unix socket and the piece-data port are not covered (the
// socket is protected by its file mode; pieces by their origin digests).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace df {

// The three files of a node's TLS identity, as configured. All empty: TLS off.
struct TlsFiles {
  std::string cert_file;  // PEM certificate chain of this node (leaf first)
  std::string key_file;   // PEM private key of the leaf; must not be readable by group/others
  std::string ca_file;    // PEM CA certificate(s) that sign every node of the cluster

  bool any() const { return !cert_file.empty() || !key_file.empty() || !ca_file.empty(); }
};

// A node's loaded and checked TLS identity, or none. Immutable after construction; thread-safe.
class MutualTls {
 public:
  MutualTls() = default;  // TLS off: insecure credentials, CheckPeer accepts every call

  // Reads and checks the three files: the certificate chain and CA parse as PEM X.509, the key
  // parses and matches the leaf certificate, the leaf is signed by (chains to) the CA and is
  // within its validity period. An empty TlsFiles gives TLS off. InvalidArgument naming the
  // missing flags when only some are set, and naming the file and the problem for bad PEM or a
  // key that does not match; PermissionDenied when the key file is accessible by group or
  // others; NotFound when a file cannot be read.
  static Result<MutualTls> Load(const TlsFiles& files);

  bool enabled() const { return !cert_pem_.empty(); }

  // Credentials for a gRPC server on TCP: TLS that requires and verifies a client certificate
  // signed by the CA. Insecure credentials when TLS is off.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // Credentials for a gRPC channel: TLS with this node's certificate, verifying the server's
  // chain and that its SANs name the dialled host. Insecure credentials when TLS is off.
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;

  // OK when TLS is off or the call came over a TLS connection whose client certificate was
  // verified; UNAUTHENTICATED otherwise (a call that reached a TLS-configured service over
  // another transport).
  grpc::Status CheckPeer(const grpc::ServerContextBase& context) const;

  // OK when the leaf certificate carries `ip` as an IP SAN (or TLS is off); InvalidArgument
  // saying so otherwise: clients that dial this node at `ip` would refuse it.
  Status CheckCoversIp(const std::string& ip) const;

 private:
  std::string cert_pem_;
  std::string key_pem_;
  std::string ca_pem_;
  // Built once at Load; every channel of the node shares it.
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials_;
};

}  // namespace df
