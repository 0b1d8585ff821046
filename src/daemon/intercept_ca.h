// InterceptCa: the certificate authority of the mirror port's TLS interception (docs/oci.md,
// "As a forward proxy"). For a CONNECT to a host in proxy_intercept_hosts, the daemon answers
// the client's TLS handshake itself, with a leaf certificate for that host signed by the
// operator's CA (proxy_ca_cert, proxy_ca_key); the client trusts the CA, so the decrypted
// registry requests can be served by the mirror (blobs P2P) while the daemon talks TLS to the
// real registry, verifying it as any other upstream.
//
// Leaves: one P-256 key per daemon (made at Load, never written anywhere) for every leaf; each
// leaf names its host in subjectAltName (DNS or IP), is valid from an hour ago for
// kLeafLifetime (never past the CA's own notAfter), serverAuth only, CA:FALSE. A host's TLS
// context is cached and made again once it is older than half that lifetime. At most
// kMaxCachedHosts hosts are cached; the oldest goes first.
//
// Thread-safe: ServerContext may be called from any connection thread.
#pragma once

#include <openssl/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace df {

class InterceptCa {
 public:
  static constexpr auto kLeafLifetime = std::chrono::hours(24 * 7);
  static constexpr size_t kMaxCachedHosts = 1024;

  // Reads the CA's certificate and private key (PEM). InvalidArgument naming the file when one
  // cannot be read or parsed, when the key is not the certificate's, or when the certificate is
  // not a CA's; PermissionDenied when the key file can be read by its group or by others.
  static Result<std::unique_ptr<InterceptCa>> Load(const std::string& cert_file,
                                                   const std::string& key_file);
  ~InterceptCa();
  InterceptCa(const InterceptCa&) = delete;
  InterceptCa& operator=(const InterceptCa&) = delete;

  // A TLS 1.2+ server context that presents a certificate for `host` (a DNS name, an IPv4
  // address or a bracketed IPv6 address, as ParseHostPort normalises it, without the port) and
  // the CA's. Shared: it stays valid for as long as the caller holds it. Internal when OpenSSL
  // fails to build or sign the certificate.
  Result<std::shared_ptr<SSL_CTX>> ServerContext(const std::string& host);

  // The PEM of a fresh leaf certificate for `host` (tests and diagnostics).
  Result<std::string> LeafPem(const std::string& host);

 private:
  InterceptCa() = default;
  Result<std::shared_ptr<X509>> MakeLeaf(const std::string& host);

  std::shared_ptr<X509> ca_cert_;
  std::shared_ptr<EVP_PKEY> ca_key_;
  std::shared_ptr<EVP_PKEY> leaf_key_;

  struct Cached {
    std::shared_ptr<SSL_CTX> ctx;
    std::chrono::steady_clock::time_point made;
  };
  std::mutex mu_;
  std::map<std::string, Cached> cache_;  // GUARDED_BY(mu_), by host
};

}  // namespace df
