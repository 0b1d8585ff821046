#include "common/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace df {
namespace {

// PEM files of a node are small; a bigger one is a mistake (a wrong path), not a certificate.
constexpr off_t kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct StackFree {
  void operator()(STACK_OF(X509) * s) const { sk_X509_free(s); }  // borrows its elements
};
using UniqueX509 = std::unique_ptr<X509, X509Free>;

// The last OpenSSL error of this thread as text ("" when none), and clears the queue.
std::string OpensslError() {
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return std::string(" (") + buf + ")";
}

Result<std::string> ReadPemFile(const std::string& what, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return NotFound(what + " " + path + " not found");
  if (!S_ISREG(st.st_mode)) return InvalidArgument(what + " " + path + " is not a regular file");
  if (st.st_size > kMaxPemBytes) return InvalidArgument(what + " " + path + " is too large");
  std::ifstream in(path);
  if (!in) return NotFound(what + " " + path + " cannot be read");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<BIO, BioFree> MemBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in `pem`, in order. InvalidArgument naming `path` when there is none or one
// does not parse.
Result<std::vector<UniqueX509>> ParseCertificates(const std::string& path, const std::string& pem) {
  ERR_clear_error();
  auto bio = MemBio(pem);
  std::vector<UniqueX509> certs;
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(x);
  // The loop ends on "no start line" after the last certificate; anything else is a bad PEM.
  unsigned long e = ERR_peek_last_error();
  if (e != 0 && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
    return InvalidArgument(path + ": not a valid PEM certificate" + OpensslError());
  }
  ERR_clear_error();
  if (certs.empty()) return InvalidArgument(path + ": no PEM certificate in it");
  return certs;
}

Result<std::unique_ptr<EVP_PKEY, PkeyFree>> ParseKey(const std::string& path,
                                                     const std::string& pem) {
  ERR_clear_error();
  auto bio = MemBio(pem);
  // An encrypted key must not make a daemon prompt on its terminal: no passphrase callback.
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr);
  if (key == nullptr) {
    return InvalidArgument(path + ": not an unencrypted PEM private key" + OpensslError());
  }
  return std::unique_ptr<EVP_PKEY, PkeyFree>(key);
}

// OK when `chain[0]` chains to one of `cas` (with chain[1..] as intermediates) and every
// certificate on the way is valid now.
Status VerifyChain(const std::string& cert_path, const std::vector<UniqueX509>& chain,
                   const std::vector<UniqueX509>& cas) {
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  for (const auto& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  std::unique_ptr<STACK_OF(X509), StackFree> untrusted(sk_X509_new_null());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
  if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), chain[0].get(), untrusted.get()) != 1) {
    return Internal("cannot verify " + cert_path + OpensslError());
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return InvalidArgument(cert_path + ": not a valid certificate of the cluster's CA (" +
                           X509_verify_cert_error_string(err) + ")");
  }
  return Status::Ok();
}

}  // namespace

Result<MutualTls> MutualTls::Load(const TlsFiles& files) {
  if (!files.any()) return MutualTls();
  std::string missing;
  if (files.cert_file.empty()) missing += " tls_cert_file (--tls-cert)";
  if (files.key_file.empty()) missing += " tls_key_file (--tls-key)";
  if (files.ca_file.empty()) missing += " tls_ca_file (--tls-ca)";
  if (!missing.empty()) {
    return InvalidArgument("mutual TLS needs a certificate, its key and the CA; missing:" +
                           missing);
  }
  struct stat st;
  if (::stat(files.key_file.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return Status(
        StatusCode::kPermissionDenied,
        "TLS key file " + files.key_file + " is accessible by group or others (chmod 600 it)");
  }
  MutualTls tls;
  auto cert = ReadPemFile("TLS certificate file", files.cert_file);
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile("TLS key file", files.key_file);
  if (!key.ok()) return key.status();
  auto ca = ReadPemFile("TLS CA file", files.ca_file);
  if (!ca.ok()) return ca.status();

  auto chain = ParseCertificates(files.cert_file, cert.value());
  if (!chain.ok()) return chain.status();
  auto cas = ParseCertificates(files.ca_file, ca.value());
  if (!cas.ok()) return cas.status();
  auto pkey = ParseKey(files.key_file, key.value());
  if (!pkey.ok()) return pkey.status();
  if (X509_check_private_key(chain.value()[0].get(), pkey.value().get()) != 1) {
    ERR_clear_error();
    return InvalidArgument(files.key_file + ": the key does not match the certificate in " +
                           files.cert_file);
  }
  DF_RETURN_IF_ERROR(VerifyChain(files.cert_file, chain.value(), cas.value()));
  tls.cert_pem_ = std::move(cert).value();
  tls.key_pem_ = std::move(key).value();
  tls.ca_pem_ = std::move(ca).value();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_pem_;
  options.pem_private_key = tls.key_pem_;
  options.pem_cert_chain = tls.cert_pem_;
  tls.channel_credentials_ = grpc::SslCredentials(options);
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> MutualTls::ServerCredentials() const {
  if (!enabled()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca_pem_;
  options.pem_key_cert_pairs.push_back({key_pem_, cert_pem_});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MutualTls::ChannelCredentials() const {
  if (!enabled()) return grpc::InsecureChannelCredentials();
  return channel_credentials_;
}

grpc::Status MutualTls::CheckPeer(const grpc::ServerContextBase& context) const {
  if (!enabled()) return grpc::Status::OK;
  // The handshake already refused clients without a certificate of the CA; this guards against
  // a service that was registered on a server built with other credentials.
  auto auth = context.auth_context();
  if (auth && auth->IsPeerAuthenticated()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "a client certificate is required");
}

Status MutualTls::CheckCoversIp(const std::string& ip) const {
  if (!enabled()) return Status::Ok();
  auto bio = MemBio(cert_pem_);
  UniqueX509 leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (leaf && X509_check_ip_asc(leaf.get(), ip.c_str(), 0) == 1) return Status::Ok();
  return InvalidArgument("the TLS certificate has no IP subject alternative name " + ip +
                         " (this node's advertised --ip): peers and the scheduler dial it there "
                         "and would refuse it (see docs/security.md, Mutual TLS)");
}

}  // namespace df
