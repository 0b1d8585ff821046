#include "daemon/intercept_ca.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <cstdio>

namespace df {
namespace {

std::string OpensslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

template <typename T>
T* ReadPem(const std::string& path, T* (*read)(FILE*, T**, pem_password_cb*, void*)) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return nullptr;
  T* out = read(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return out;
}

bool AddExtension(X509* leaf, X509* ca, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca, leaf, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext) return false;
  const bool ok = X509_add_ext(leaf, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// "DNS:name" or "IP:address" for a host as ParseHostPort normalises it.
std::string SubjectAltName(const std::string& host) {
  if (host.size() > 2 && host.front() == '[') return "IP:" + host.substr(1, host.size() - 2);
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return "IP:" + host;
  return "DNS:" + host;
}

bool SetRandomSerial(X509* leaf) {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) return false;
  bytes[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(bytes, sizeof bytes, nullptr);
  const bool ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(leaf)) != nullptr;
  BN_free(bn);
  return ok;
}

}  // namespace

Result<std::unique_ptr<InterceptCa>> InterceptCa::Load(const std::string& cert_file,
                                                       const std::string& key_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0) {
    return InvalidArgument("proxy CA key " + key_file + ": cannot be read");
  }
  if ((st.st_mode & 077) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  "proxy CA key " + key_file + " can be read by others: chmod 0600 it");
  }
  std::unique_ptr<InterceptCa> ca(new InterceptCa());
  ca->ca_cert_.reset(ReadPem<X509>(cert_file, PEM_read_X509), X509_free);
  if (!ca->ca_cert_) {
    return InvalidArgument("proxy CA certificate " + cert_file +
                           ": not a readable PEM certificate");
  }
  ca->ca_key_.reset(ReadPem<EVP_PKEY>(key_file, PEM_read_PrivateKey), EVP_PKEY_free);
  if (!ca->ca_key_) {
    return InvalidArgument("proxy CA key " + key_file + ": not a readable PEM private key");
  }
  if (X509_check_private_key(ca->ca_cert_.get(), ca->ca_key_.get()) != 1) {
    ERR_clear_error();
    return InvalidArgument("proxy CA key " + key_file + " is not the key of " + cert_file);
  }
  if (X509_check_ca(ca->ca_cert_.get()) == 0) {
    return InvalidArgument("proxy CA certificate " + cert_file + " is not a CA certificate");
  }
  ca->leaf_key_.reset(EVP_EC_gen("P-256"), EVP_PKEY_free);
  if (!ca->leaf_key_) return Internal("cannot make the leaf key: " + OpensslError());
  return ca;
}

InterceptCa::~InterceptCa() = default;

Result<std::shared_ptr<X509>> InterceptCa::MakeLeaf(const std::string& host) {
  std::shared_ptr<X509> leaf(X509_new(), X509_free);
  X509* x = leaf.get();
  X509* ca = ca_cert_.get();
  const long lifetime_sec = std::chrono::duration_cast<std::chrono::seconds>(kLeafLifetime).count();
  bool ok = x && X509_set_version(x, 2) == 1 && SetRandomSerial(x) &&
            X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
            X509_gmtime_adj(X509_getm_notAfter(x), lifetime_sec) &&
            X509_set_pubkey(x, leaf_key_.get()) == 1 &&
            X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1;
  if (ok && ASN1_TIME_compare(X509_get0_notAfter(ca), X509_get0_notAfter(x)) < 0) {
    ok = X509_set1_notAfter(x, X509_get0_notAfter(ca)) == 1;
  }
  if (ok && host.size() <= 64) {  // the CN's limit; the SAN names the host anyway
    ok = X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                    reinterpret_cast<const unsigned char*>(host.c_str()), -1, -1,
                                    0) == 1;
  }
  ok = ok && AddExtension(x, ca, NID_basic_constraints, "critical,CA:FALSE") &&
       AddExtension(x, ca, NID_key_usage, "critical,digitalSignature") &&
       AddExtension(x, ca, NID_ext_key_usage, "serverAuth") &&
       AddExtension(x, ca, NID_subject_key_identifier, "hash") &&
       AddExtension(x, ca, NID_authority_key_identifier, "keyid") &&
       AddExtension(x, ca, NID_subject_alt_name, SubjectAltName(host)) &&
       X509_sign(x, ca_key_.get(), EVP_sha256()) > 0;
  if (!ok) return Internal("cannot sign a certificate for " + host + ": " + OpensslError());
  return leaf;
}

Result<std::shared_ptr<SSL_CTX>> InterceptCa::ServerContext(const std::string& host) {
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = cache_.find(host);
    if (it != cache_.end() && now - it->second.made < kLeafLifetime / 2) return it->second.ctx;
  }
  auto leaf = MakeLeaf(host);
  if (!leaf.ok()) return leaf.status();
  std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_use_certificate(ctx.get(), leaf.value().get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx.get(), leaf_key_.get()) != 1 ||
      SSL_CTX_add1_chain_cert(ctx.get(), ca_cert_.get()) != 1) {
    return Internal("cannot make a TLS context for " + host + ": " + OpensslError());
  }
  std::lock_guard<std::mutex> l(mu_);
  if (cache_.size() >= kMaxCachedHosts && !cache_.count(host)) {
    auto oldest = cache_.begin();
    for (auto it = cache_.begin(); it != cache_.end(); ++it) {
      if (it->second.made < oldest->second.made) oldest = it;
    }
    cache_.erase(oldest);
  }
  cache_[host] = Cached{ctx, now};
  return ctx;
}

Result<std::string> InterceptCa::LeafPem(const std::string& host) {
  auto leaf = MakeLeaf(host);
  if (!leaf.ok()) return leaf.status();
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio || PEM_write_bio_X509(bio, leaf.value().get()) != 1) {
    BIO_free(bio);
    return Internal("cannot write a certificate: " + OpensslError());
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

}  // namespace df
