#include "daemon/config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <functional>
#include <map>

#include "common/net.h"
#include "common/units.h"
#include "daemon/registry_upstream.h"

namespace df {
namespace {

using Setter = std::function<Status(const YAML::Node&)>;

template <typename T>
Setter Scalar(T* field) {
  return [field](const YAML::Node& n) {
    *field = n.as<T>();
    return Status::Ok();
  };
}

Setter Port(uint16_t* field) {
  return [field](const YAML::Node& n) {
    int v = n.as<int>();
    if (v < 0 || v > 65535) return InvalidArgument("port out of range");
    *field = static_cast<uint16_t>(v);
    return Status::Ok();
  };
}

Setter Duration(uint64_t* field) {
  return [field](const YAML::Node& n) {
    auto r = ParseDurationMs(n.as<std::string>());
    if (!r.ok()) return r.status();
    *field = r.value();
    return Status::Ok();
  };
}

Setter Rate(uint64_t* field) {
  return [field](const YAML::Node& n) {
    std::string s = n.as<std::string>();
    if (s == "0") {
      *field = 0;
      return Status::Ok();
    }
    auto r = ParseRateBytesPerSec(s);
    if (!r.ok()) return r.status();
    *field = r.value();
    return Status::Ok();
  };
}

// A list of strings: a YAML sequence, or one scalar for a list of one.
Setter StringList(std::vector<std::string>* field) {
  return [field](const YAML::Node& n) {
    field->clear();
    if (n.IsSequence()) {
      for (const auto& item : n) field->push_back(item.as<std::string>());
    } else {
      field->push_back(n.as<std::string>());
    }
    return Status::Ok();
  };
}

// File permission bits written in octal ("0660" or "660"); range-checked by validation.
Setter Mode(uint32_t* field) {
  return [field](const YAML::Node& n) {
    std::string s = n.as<std::string>();
    if (s.empty() || s.size() > 5 || s.find_first_not_of("01234567") != std::string::npos) {
      return InvalidArgument("'" + s + "' is not an octal mode such as 0660");
    }
    *field = static_cast<uint32_t>(std::stoul(s, nullptr, 8));
    return Status::Ok();
  };
}

std::map<std::string, Setter> Setters(DaemonConfig* c) {
  return {
      {"hostname", Scalar(&c->hostname)},
      {"ip", Scalar(&c->ip)},
      {"listen_ip", Scalar(&c->listen_ip)},
      {"grpc_port", Port(&c->grpc_port)},
      {"piece_port", Port(&c->piece_port)},
      {"metrics_port", Port(&c->metrics_port)},
      {"proxy_port", Port(&c->proxy_port)},
      {"proxy_ip", Scalar(&c->proxy_ip)},
      {"registry_mirror", Scalar(&c->registry_mirror)},
      {"proxy_rules", StringList(&c->proxy_rules)},
      {"proxy_connect_hosts", StringList(&c->proxy_connect_hosts)},
      {"proxy_intercept_hosts", StringList(&c->proxy_intercept_hosts)},
      {"proxy_ca_cert", Scalar(&c->proxy_ca_cert)},
      {"proxy_ca_key", Scalar(&c->proxy_ca_key)},
      {"proxy_max_tunnels", Scalar(&c->proxy_max_tunnels)},
      {"origin_ca_file", Scalar(&c->origin_ca_file)},
      {"sock", Scalar(&c->sock)},
      {"sock_mode", Mode(&c->sock_mode)},
      {"data_dir", Scalar(&c->data_dir)},
      {"idc", Scalar(&c->idc)},
      {"location", Scalar(&c->location)},
      {"seed", Scalar(&c->seed)},
      {"auth_token_file", Scalar(&c->auth_token_file)},
      {"tls_cert_file", Scalar(&c->tls_cert_file)},
      {"tls_key_file", Scalar(&c->tls_key_file)},
      {"tls_ca_file", Scalar(&c->tls_ca_file)},
      {"allow_file_dirs", StringList(&c->allow_file_dirs)},
      {"max_running_tasks", Scalar(&c->max_running_tasks)},
      {"scheduler", Scalar(&c->scheduler)},
      {"announce_interval", Duration(&c->announce_interval_ms)},
      {"schedule_timeout", Duration(&c->schedule_timeout_ms)},
      {"probe_interval", Duration(&c->probe_interval_ms)},
      {"probe_timeout", Duration(&c->probe_timeout_ms)},
      {"concurrency", Scalar(&c->concurrency)},
      {"per_parent_concurrency", Scalar(&c->per_parent_concurrency)},
      {"piece_pipeline_depth", Scalar(&c->piece_pipeline_depth)},
      {"origin_concurrency", Scalar(&c->origin_concurrency)},
      {"piece_timeout", Duration(&c->piece_timeout_ms)},
      {"piece_retry_limit", Scalar(&c->piece_retry_limit)},
      {"endgame", Scalar(&c->endgame)},
      {"cut_through", Scalar(&c->cut_through)},
      {"spread_start", Scalar(&c->spread_start)},
      {"upload_rate", Rate(&c->upload_rate_bytes_per_sec)},
      {"download_rate", Rate(&c->download_rate_bytes_per_sec)},
      {"concurrent_upload_limit", Scalar(&c->concurrent_upload_limit)},
      {"congestion_control", Scalar(&c->congestion_control)},
      {"gc_interval", Duration(&c->gc_interval_ms)},
      {"task_ttl", Duration(&c->task_ttl_ms)},
      {"disk_high_watermark", Scalar(&c->disk_high_watermark)},
      {"disk_low_watermark", Scalar(&c->disk_low_watermark)},
      {"log_level", Scalar(&c->log_level)},
      {"log_file", Scalar(&c->log_file)},
  };
}

// Applies the mapping `root` (parsed from `source`, a file name for messages) onto `cfg`.
Status ApplyConfig(const YAML::Node& root, const std::string& source, DaemonConfig* cfg) {
  if (root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return InvalidArgument("config file " + source + ": top level must be a map");
  auto setters = Setters(cfg);
  for (const auto& kv : root) {
    // as<std::string>() throws on a sequence or map key ("[a]: 1").
    if (!kv.first.IsScalar()) return InvalidArgument(source + ": keys must be scalars");
    std::string key = kv.first.as<std::string>();
    auto it = setters.find(key);
    if (it == setters.end()) return InvalidArgument(source + ": unknown key '" + key + "'");
    try {
      Status s = it->second(kv.second);
      if (!s.ok()) return InvalidArgument(source + ": " + key + ": " + s.message());
    } catch (const YAML::Exception& e) {
      return InvalidArgument(source + ": " + key + ": bad value (" + e.msg + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

Status LoadDaemonConfig(const std::string& path, DaemonConfig* cfg) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return NotFound("config file " + path + " cannot be read");
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file " + path + ": " + e.what());
  }
  return ApplyConfig(root, path, cfg);
}

Status LoadDaemonConfigFromString(const std::string& yaml, const std::string& source,
                                  DaemonConfig* cfg) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    return InvalidArgument("config file " + source + ": " + e.what());
  }
  return ApplyConfig(root, source, cfg);
}

namespace {

// Normalises every entry of `hosts` (the YAML key `key`) to host:port.
Status NormaliseProxyHosts(const char* key, std::vector<std::string>* hosts) {
  constexpr size_t kMaxProxyHosts = 256;
  if (hosts->size() > kMaxProxyHosts) {
    return InvalidArgument(std::string(key) + ": more than " + std::to_string(kMaxProxyHosts) +
                           " entries");
  }
  for (std::string& h : *hosts) {
    auto hp = ParseHostPort(h, 443);
    if (!hp.ok())
      return InvalidArgument(std::string(key) + ": '" + h + "': " + hp.status().message());
    h = hp.value();
  }
  return Status::Ok();
}

Status ValidateForwardProxy(DaemonConfig* cfg) {
  DF_RETURN_IF_ERROR(NormaliseProxyHosts("proxy_connect_hosts", &cfg->proxy_connect_hosts));
  DF_RETURN_IF_ERROR(NormaliseProxyHosts("proxy_intercept_hosts", &cfg->proxy_intercept_hosts));
  if (cfg->proxy_ca_cert.empty() != cfg->proxy_ca_key.empty()) {
    return InvalidArgument(
        "proxy_ca_cert and proxy_ca_key (--proxy-ca-cert, --proxy-ca-key) "
        "must be set together");
  }
  if (!cfg->proxy_intercept_hosts.empty() && cfg->proxy_ca_cert.empty()) {
    return InvalidArgument(
        "proxy_intercept_hosts needs proxy_ca_cert and proxy_ca_key (the CA that signs the "
        "certificates the daemon presents for them)");
  }
  if (cfg->proxy_max_tunnels == 0 || cfg->proxy_max_tunnels > 1024) {
    return InvalidArgument("proxy_max_tunnels must be between 1 and 1024");
  }
  return Status::Ok();
}

}  // namespace

Status ValidateDaemonConfig(DaemonConfig* cfg) {
  if (cfg->hostname.empty()) {
    char buf[256] = {0};
    ::gethostname(buf, sizeof buf - 1);
    cfg->hostname = buf;
  }
  if (cfg->ip.empty()) cfg->ip = DefaultIp();
  // Every TCP port is reachable by strangers: listen where the daemon is reachable by design,
  // not on every interface, unless the operator says so.
  if (cfg->listen_ip.empty()) cfg->listen_ip = cfg->ip;
  if (cfg->proxy_ip.empty()) {
    return InvalidArgument("proxy_ip: empty (127.0.0.1 keeps the registry mirror to this node)");
  }
  for (const std::string& dir : cfg->allow_file_dirs) {
    if (dir.empty() || dir[0] != '/') {
      return InvalidArgument("allow_file_dirs: '" + dir + "' is not an absolute path");
    }
  }
  if (cfg->max_running_tasks == 0 || cfg->max_running_tasks > 4096) {
    return InvalidArgument("max_running_tasks must be between 1 and 4096");
  }
  if (cfg->data_dir.empty()) return InvalidArgument("data_dir must not be empty");
  if (cfg->sock.empty()) return InvalidArgument("sock must not be empty");
  if (cfg->sock_mode > 0777 || (cfg->sock_mode & 0600) != 0600 || (cfg->sock_mode & 0007) != 0) {
    // Whoever can connect can make the daemon download and write files as its user.
    return InvalidArgument(
        "sock_mode must give the owner read and write and nothing to others (e.g. 0600, 0660)");
  }
  if (cfg->concurrency == 0 || cfg->concurrency > 256) {
    return InvalidArgument("concurrency must be between 1 and 256");
  }
  if (cfg->per_parent_concurrency == 0)
    return InvalidArgument("per_parent_concurrency must be >= 1");
  if (cfg->piece_pipeline_depth == 0 || cfg->piece_pipeline_depth > 64)
    return InvalidArgument("piece_pipeline_depth must be between 1 and 64");
  if (cfg->origin_concurrency == 0) return InvalidArgument("origin_concurrency must be >= 1");
  if (cfg->piece_retry_limit == 0) return InvalidArgument("piece_retry_limit must be >= 1");
  if (!(cfg->disk_low_watermark > 0 && cfg->disk_low_watermark < cfg->disk_high_watermark &&
        cfg->disk_high_watermark <= 1.0)) {
    return InvalidArgument("need 0 < disk_low_watermark < disk_high_watermark <= 1");
  }
  if (cfg->probe_interval_ms != 0 && cfg->probe_interval_ms < 100) {
    return InvalidArgument("probe_interval must be 0 (off) or at least 100ms");
  }
  if (cfg->probe_timeout_ms == 0 || cfg->probe_timeout_ms > 60000) {
    return InvalidArgument("probe_timeout must be between 1ms and 60s");
  }
  const bool tls_any =
      !cfg->tls_cert_file.empty() || !cfg->tls_key_file.empty() || !cfg->tls_ca_file.empty();
  const bool tls_all =
      !cfg->tls_cert_file.empty() && !cfg->tls_key_file.empty() && !cfg->tls_ca_file.empty();
  if (tls_any && !tls_all) {
    return InvalidArgument(
        "tls_cert_file, tls_key_file and tls_ca_file (--tls-cert, --tls-key, --tls-ca) must be "
        "set together");
  }
  if (!cfg->scheduler.empty()) {
    DF_RETURN_IF_ERROR(ParseSchedulerAddresses(cfg->scheduler).status());
  }
  auto upstream = ParseRegistryUpstream(cfg->registry_mirror);
  if (!upstream.ok()) return InvalidArgument("registry_mirror: " + upstream.status().message());
  cfg->registry_mirror = upstream.value();
  DF_RETURN_IF_ERROR(ProxyRules::Compile(cfg->proxy_rules).status());
  return ValidateForwardProxy(cfg);
}

}  // namespace df
