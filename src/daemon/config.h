// dfdaemon's configuration: YAML file (--config) with command-line flags overriding it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace df {

struct DaemonConfig {
  // Identity and addresses.
  std::string hostname;        // default: gethostname()
  std::string ip;              // advertised to the scheduler and peers; default: first non-loopback
  std::string listen_ip;       // where the gRPC and piece servers listen; default: ip
  uint16_t grpc_port = 4000;   // DfdaemonUpload (availability streams, seed trigger)
  uint16_t piece_port = 4005;  // piece data protocol
  uint16_t metrics_port = 4002;  // /metrics and /healthz; 0 disables
  // The OCI registry mirror (registry_mirror.h, docs/oci.md) on proxy_ip:proxy_port; 0
  // disables. Loopback by default: a mirror request names the registry the daemon fetches from,
  // so it is for the node's own container runtime, not for strangers.
  uint16_t proxy_port = 4001;
  std::string proxy_ip = "127.0.0.1";
  // The mirror's upstream for requests that name none (no X-Dragonfly-Registry, no ns):
  // "http(s)://host[:port]", normalised by validation.
  std::string registry_mirror = "https://index.docker.io";
  // Regular expressions (RE2) on mirror request paths: a GET under /v2/ whose path matches one
  // goes P2P as a task keyed by its URL (Dragonfly's proxy.rules; registry_upstream.h). Blob
  // GETs go P2P without a rule. Checked by ValidateDaemonConfig.
  std::vector<std::string> proxy_rules;
  // The mirror port as a forward proxy (docs/oci.md, "As a forward proxy"). CONNECT is refused
  // (403) unless its target is listed here: entries "host:port" or "host" (port 443),
  // normalised by validation. Plain byte tunnels: the daemon relays, it never looks inside.
  std::vector<std::string> proxy_connect_hosts;
  // CONNECT targets whose TLS the daemon terminates with a certificate it signs with the
  // proxy CA, serving the requests inside as mirror requests to https://host:port (blobs go
  // P2P). Same entry form; needs proxy_ca_cert and proxy_ca_key.
  std::vector<std::string> proxy_intercept_hosts;
  // The interception CA (PEM): clients that go through this proxy must trust the certificate.
  // Set both or neither; the key is refused unless only its owner can read it.
  std::string proxy_ca_cert;
  std::string proxy_ca_key;
  // CONNECT tunnels (plain and intercepted) open at once; more get 503.
  uint32_t proxy_max_tunnels = 32;
  // PEM CA certificates trusted for https origins and registries in addition to the system's
  // (a registry with a private CA). Empty: the system's only.
  std::string origin_ca_file;
  std::string sock = "/tmp/dfdaemon.sock";  // DfdaemonDownload local API
  // Permission bits of `sock` (octal in YAML: "0660"). Owner read/write always; group bits let
  // a group of users run dfget against this daemon; bits for others are refused.
  uint32_t sock_mode = 0600;
  std::string data_dir = "/var/lib/dfdaemon";
  std::string idc;
  std::string location;
  bool seed = false;

  // Trust (docs/security.md). A file holding the cluster's shared token: every control RPC this
  // daemon makes carries it and every one it serves must (empty: none, see auth.h).
  std::string auth_token_file;
  // Mutual TLS on the control plane (docs/security.md, "Mutual TLS"): this daemon's certificate
  // chain (with an IP SAN of `ip`), its key (mode 0600) and the cluster's CA, all PEM. All three
  // set: the gRPC port requires client certificates of the CA and every call to the scheduler
  // and to parents presents this certificate. All empty: no TLS. Anything else is an error.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_ca_file;
  // file:// URLs may be fetched only under these directories (empty: file:// is refused).
  std::vector<std::string> allow_file_dirs;
  // Downloads running at once (dfget requests and seed triggers); more get a clear error.
  uint32_t max_running_tasks = 64;

  // Scheduler ("ip:port"); empty = no scheduler, every download goes back to source.
  std::string scheduler;
  uint64_t announce_interval_ms = 2000;
  uint64_t schedule_timeout_ms =
      30000;  // waiting with no parent and no source this long -> back to source
  // Latency probes (docs/measurement.md): every probe_interval (+-10%) the daemon asks the
  // scheduler whom to probe and reports the RTTs; 0 disables probing. Each TCP handshake of a
  // probe gets probe_timeout.
  uint64_t probe_interval_ms = 5 * 60 * 1000;
  uint64_t probe_timeout_ms = 2000;

  // Download engine.
  uint32_t concurrency = 8;             // workers per task (one connection or origin GET each)
  uint32_t per_parent_concurrency = 1;  // connections (workers) to one parent
  uint32_t piece_pipeline_depth = 2;    // requests queued on one parent connection
  uint32_t origin_concurrency = 4;      // ranged GETs in flight to the origin per task
  uint64_t piece_timeout_ms = 60000;
  uint32_t piece_retry_limit = 5;  // attempts per piece before the task fails
  // Endgame: when every missing piece is in flight, one far past its expected time is
  // requested again from a second parent and the first verified copy wins (PeerTask).
  bool endgame = true;
  // Cut-through: ask parents for pieces they are still receiving, and forward pieces still
  // arriving here to children that ask so (docs/piece_protocol.md). A hop then costs a few
  // milliseconds instead of a piece time.
  bool cut_through = true;
  // Among pieces equally rare, a download starts at a piece drawn from its peer id and goes up
  // from there (wrapping), instead of at piece 0: children of one parent then ask it for
  // different pieces (README.md, dfdaemon, "Piece order").
  bool spread_start = false;

  // Uploads.
  uint64_t upload_rate_bytes_per_sec = 0;    // 0 = unlimited; advertised as capacity
  uint64_t download_rate_bytes_per_sec = 0;  // 0 = unknown; advertised, not enforced
  uint32_t concurrent_upload_limit = 64;
  std::string congestion_control = "cubic";

  // Storage GC.
  uint64_t gc_interval_ms = 60000;
  uint64_t task_ttl_ms = 6ull * 3600 * 1000;
  double disk_high_watermark = 0.90;
  double disk_low_watermark = 0.70;

  std::string log_level = "info";
  std::string log_file;
};

// Reads a YAML file into `cfg` (keys as the field names above; sizes and durations accept units:
// "100MB/s" is not accepted for rates, use "upload_rate: 200mbit"). InvalidArgument names the
// key and the problem; unknown keys are errors so that typos do not pass silently.
Status LoadDaemonConfig(const std::string& path, DaemonConfig* cfg);
// The same for YAML text already in memory; `source` names it in messages (as the path does).
Status LoadDaemonConfigFromString(const std::string& yaml, const std::string& source,
                                  DaemonConfig* cfg);

// Checks the values together (ports, watermarks, paths); fills defaults (hostname, ip).
Status ValidateDaemonConfig(DaemonConfig* cfg);

}  // namespace df
