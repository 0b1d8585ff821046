// dfdaemon: the peer on every host. Parses flags and config, runs a Daemon until SIGINT/SIGTERM.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <thread>

#include "common/version.h"
#include "daemon/control_client.h"
#include "common/log.h"
#include "common/units.h"
#include "daemon/daemon.h"
#include "daemon/runtime_config.h"

namespace {

// Sizes, rates and durations are taken as strings and parsed with units after CLI11.
struct DurationFlags {
  std::string announce_interval, schedule_timeout, probe_interval, probe_timeout, piece_timeout,
      gc_interval, task_ttl, upload_rate, download_rate;
};

df::Status ApplyDurations(const DurationFlags& f, df::DaemonConfig* c) {
  auto dur = [](const std::string& s, uint64_t* out) -> df::Status {
    if (s.empty()) return df::Status::Ok();
    auto r = df::ParseDurationMs(s);
    if (!r.ok()) return r.status();
    *out = r.value();
    return df::Status::Ok();
  };
  DF_RETURN_IF_ERROR(dur(f.announce_interval, &c->announce_interval_ms));
  DF_RETURN_IF_ERROR(dur(f.schedule_timeout, &c->schedule_timeout_ms));
  DF_RETURN_IF_ERROR(dur(f.probe_interval, &c->probe_interval_ms));
  DF_RETURN_IF_ERROR(dur(f.probe_timeout, &c->probe_timeout_ms));
  DF_RETURN_IF_ERROR(dur(f.piece_timeout, &c->piece_timeout_ms));
  DF_RETURN_IF_ERROR(dur(f.gc_interval, &c->gc_interval_ms));
  DF_RETURN_IF_ERROR(dur(f.task_ttl, &c->task_ttl_ms));
  auto rate = [](const std::string& s, uint64_t* out) -> df::Status {
    if (s.empty()) return df::Status::Ok();
    if (s == "0") {
      *out = 0;
      return df::Status::Ok();
    }
    auto r = df::ParseRateBytesPerSec(s);
    if (!r.ok()) return r.status();
    *out = r.value();
    return df::Status::Ok();
  };
  DF_RETURN_IF_ERROR(rate(f.upload_rate, &c->upload_rate_bytes_per_sec));
  DF_RETURN_IF_ERROR(rate(f.download_rate, &c->download_rate_bytes_per_sec));
  return df::Status::Ok();
}

}  // namespace

// `dfdaemon print-config containerd|docker|podman [--registry R] [--mirror URL]`.
int PrintConfigMain(int argc, char** argv) {
  CLI::App app{
      "dfdaemon print-config: print what a container runtime needs to pull through this "
      "host's registry mirror (docs/oci.md)"};
  df::RuntimeConfigRequest req;
  app.add_option("runtime", req.runtime,
                 "containerd, docker or podman (podman: also skopeo, "
                 "Buildah, CRI-O)")
      ->required();
  app.add_option("--registry", req.registry,
                 "Registry to mirror: host[:port], http(s)://host[:port], or _default "
                 "(containerd: every registry)")
      ->capture_default_str();
  app.add_option("--mirror", req.mirror, "Where the mirror listens: http://IP:--proxy-port")
      ->capture_default_str();
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  auto text = df::RenderRuntimeConfig(req);
  if (!text.ok()) {
    std::fprintf(stderr, "dfdaemon print-config: %s\n", text.status().message().c_str());
    return 2;
  }
  std::fputs(text.value().c_str(), stdout);
  return 0;
}

// `dfdaemon stop|status [--sock PATH] [--config FILE]`: the local API's daemon calls.
int ControlMain(int argc, char** argv) {
  const std::string command = argv[1];
  CLI::App app{"dfdaemon " + command + ": " +
               (command == "stop" ? "stop the dfdaemon serving a socket, and wait until it exits"
                                  : "show the dfdaemon serving a socket")};
  app.set_version_flag("--version", df::VersionLine("dfdaemon"));
  df::DaemonConfig cfg;
  std::string config_path, sock;
  int timeout_ms = 20000;
  app.add_option("-c,--config", config_path, "The daemon's YAML config (for its sock)");
  app.add_option("--sock", sock,
                 "Unix socket of the daemon (default: the config's, else " + cfg.sock + ")");
  if (command == "stop") {
    app.add_option("--timeout-ms", timeout_ms, "How long to wait for it to exit")
        ->capture_default_str();
  }
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (sock.empty() && !config_path.empty()) {
    df::Status s = df::LoadDaemonConfig(config_path, &cfg);
    if (!s.ok()) {
      std::fprintf(stderr, "dfdaemon: %s\n", s.message().c_str());
      return 2;
    }
  }
  if (sock.empty()) sock = cfg.sock;
  return command == "stop" ? df::RunStopCommand(sock, timeout_ms) : df::RunStatusCommand(sock);
}

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "stop" || std::string(argv[1]) == "status")) {
    return ControlMain(argc, argv);
  }
  if (argc >= 2 && std::string(argv[1]) == "print-config") return PrintConfigMain(argc, argv);
  // Block the stop signals in every thread; the main thread waits for them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  CLI::App app{
      "dfdaemon: the peer of the P2P distribution system. Downloads tasks for dfget "
      "(local API on a unix socket) and serves verified pieces to other peers.\n"
      "Also: dfdaemon status|stop [--sock PATH]: show or stop the dfdaemon of a socket;\n"
      "dfdaemon print-config containerd|docker|podman [--registry R]: runtime configuration "
      "for the registry mirror (docs/oci.md)."};
  app.set_version_flag("--version", df::VersionLine("dfdaemon"));
  std::string config_path;
  app.add_option("-c,--config", config_path, "YAML config file (flags override it)");
  // Flags are parsed twice: once to find --config, then on top of the file's values. --help
  // waits for the second pass, when every option is known.
  app.allow_extras();
  app.set_help_flag();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2
  }
  df::DaemonConfig cfg;
  if (!config_path.empty()) {
    df::Status s = df::LoadDaemonConfig(config_path, &cfg);
    if (!s.ok()) {
      std::fprintf(stderr, "dfdaemon: %s\n", s.message().c_str());
      return 2;
    }
  }
  app.allow_extras(false);
  app.set_help_flag("-h,--help", "Print this help message and exit");
  DurationFlags durations;
  app.add_flag("--seed", cfg.seed,
               "Run as a seed peer (fetches new tasks from the origin when the scheduler asks)");
  app.add_option("--scheduler", cfg.scheduler,
                 "Scheduler address HOST:PORT (empty: always back to source)");
  app.add_option("--data-dir", cfg.data_dir, "Storage directory")->capture_default_str();
  app.add_option("--sock", cfg.sock, "Unix socket of the local API (dfget)")->capture_default_str();
  app.add_option("--ip", cfg.ip,
                 "Address advertised to the scheduler and peers (default: first non-loopback)");
  app.add_option("--listen-ip", cfg.listen_ip,
                 "Address the gRPC and piece servers bind (default: --ip; 0.0.0.0 = every one)");
  app.add_option("--auth-token-file", cfg.auth_token_file,
                 "File with the cluster's shared token for control RPCs (docs/security.md)");
  app.add_option("--tls-cert,--tls-cert-file", cfg.tls_cert_file,
                 "Mutual TLS: PEM certificate of this daemon, with an IP SAN of --ip "
                 "(with --tls-key, --tls-ca; docs/security.md)");
  app.add_option("--tls-key,--tls-key-file", cfg.tls_key_file,
                 "Mutual TLS: PEM private key of the certificate (mode 0600)");
  app.add_option("--tls-ca,--tls-ca-file", cfg.tls_ca_file,
                 "Mutual TLS: PEM CA that signs every node of the cluster");
  app.add_option("--allow-file-dir", cfg.allow_file_dirs,
                 "Directory under which file:// URLs may be read (repeatable; default: none)");
  app.add_option("--max-running-tasks", cfg.max_running_tasks, "Downloads running at once")
      ->capture_default_str();
  app.add_option("--hostname", cfg.hostname, "Host name (default: the system's)");
  app.add_option("--grpc-port", cfg.grpc_port,
                 "Upload gRPC port (availability streams, seed trigger; 0 = any)")
      ->capture_default_str();
  app.add_option("--piece-port", cfg.piece_port, "Piece data port (0 = any)")
      ->capture_default_str();
  app.add_option("--metrics-port", cfg.metrics_port, "Port of /metrics and /healthz (0 = off)")
      ->capture_default_str();
  app.add_option("--proxy-port", cfg.proxy_port,
                 "Port of the OCI registry mirror on --proxy-ip (0 = off; docs/oci.md)")
      ->capture_default_str();
  app.add_option("--proxy-ip", cfg.proxy_ip,
                 "Address the registry mirror binds; it fetches from whatever registry a request "
                 "names, so keep it to this node unless every client is trusted (docs/oci.md)")
      ->capture_default_str();
  app.add_option("--registry-mirror", cfg.registry_mirror,
                 "Mirror upstream for requests without X-Dragonfly-Registry or ns, "
                 "http(s)://host[:port]")
      ->capture_default_str();
  app.add_option("--proxy-rule", cfg.proxy_rules,
                 "Regular expression (RE2) on mirror request paths: matching GETs under /v2/ go "
                 "P2P as tasks keyed by their URL (repeatable; blob GETs always do; docs/oci.md)");
  app.add_option("--proxy-connect-host", cfg.proxy_connect_hosts,
                 "host[:port] (443 by default) that CONNECT may tunnel to through the mirror "
                 "port (repeatable; none by default: CONNECT gets 403; docs/oci.md)");
  app.add_option("--proxy-intercept-host", cfg.proxy_intercept_hosts,
                 "host[:port] whose CONNECT tunnels are intercepted: TLS is terminated with a "
                 "certificate signed by --proxy-ca-cert and its blobs go P2P (repeatable)");
  app.add_option("--proxy-ca-cert", cfg.proxy_ca_cert,
                 "PEM CA certificate that signs intercepted hosts' certificates (clients must "
                 "trust it)");
  app.add_option("--proxy-ca-key", cfg.proxy_ca_key,
                 "PEM private key of --proxy-ca-cert (mode 0600 or stricter)");
  app.add_option("--proxy-max-tunnels", cfg.proxy_max_tunnels,
                 "CONNECT tunnels open at once; more get 503")
      ->capture_default_str();
  app.add_option("--origin-ca-file", cfg.origin_ca_file,
                 "PEM CA certificates trusted for https origins and registries, besides the "
                 "system's");
  app.add_option("--idc", cfg.idc, "Data centre / rack of this host");
  app.add_option("--location", cfg.location, "Location 'country|region|zone'");
  app.add_option("--concurrency", cfg.concurrency,
                 "Workers per task (each one parent connection or origin GET)")
      ->capture_default_str();
  app.add_option("--per-parent-concurrency", cfg.per_parent_concurrency,
                 "Connections to one parent")
      ->capture_default_str();
  app.add_option("--piece-pipeline-depth", cfg.piece_pipeline_depth,
                 "Piece requests queued on one parent connection")
      ->capture_default_str();
  app.add_option("--origin-concurrency", cfg.origin_concurrency,
                 "Ranged GETs in flight to the origin per task")
      ->capture_default_str();
  app.add_option("--piece-retry-limit", cfg.piece_retry_limit, "Attempts per piece")
      ->capture_default_str();
  app.add_option("--endgame", cfg.endgame,
                 "Re-request the last, overdue pieces from a second parent (true/false)")
      ->capture_default_str();
  app.add_option("--cut-through", cfg.cut_through,
                 "Fetch and forward pieces while they are still arriving (true/false)")
      ->capture_default_str();
  app.add_option("--spread-start", cfg.spread_start,
                 "Among equally rare pieces start at one drawn from the peer id, not at piece 0 "
                 "(true/false)")
      ->capture_default_str();
  app.add_option("--upload-rate", durations.upload_rate,
                 "Upload capacity to advertise and enforce, e.g. 200mbit (0 = unlimited)");
  app.add_option("--download-rate", durations.download_rate,
                 "Download capacity to advertise to the scheduler, e.g. 200mbit (0 = unknown)");
  app.add_option("--concurrent-upload-limit", cfg.concurrent_upload_limit,
                 "Concurrent uploads advertised")
      ->capture_default_str();
  app.add_option("--congestion-control", cfg.congestion_control,
                 "TCP congestion control of piece sockets")
      ->capture_default_str();
  app.add_option("--announce-interval", durations.announce_interval,
                 "Host announce interval, e.g. 2s");
  app.add_option("--schedule-timeout", durations.schedule_timeout,
                 "Back to source after this long without a parent, e.g. 30s");
  app.add_option("--probe-interval", durations.probe_interval,
                 "Latency probe round interval, e.g. 5m (default 5m; 0 = no probing)");
  app.add_option("--probe-timeout", durations.probe_timeout,
                 "Timeout of one probe TCP handshake, e.g. 2s (default 2s)");
  app.add_option("--piece-timeout", durations.piece_timeout,
                 "Timeout of one piece transfer, e.g. 60s");
  app.add_option("--gc-interval", durations.gc_interval, "Storage GC interval, e.g. 60s");
  app.add_option("--task-ttl", durations.task_ttl,
                 "Finished tasks unused this long are removed, e.g. 6h");
  app.add_option("--disk-high-watermark", cfg.disk_high_watermark,
                 "GC starts above this used fraction")
      ->capture_default_str();
  app.add_option("--disk-low-watermark", cfg.disk_low_watermark,
                 "GC stops below this used fraction")
      ->capture_default_str();
  app.add_option("--log-level", cfg.log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--log-file", cfg.log_file, "Log to this file instead of stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2
  }
  df::Status s = ApplyDurations(durations, &cfg);
  if (s.ok()) s = df::ValidateDaemonConfig(&cfg);
  if (s.ok()) s = df::InitLogging("dfdaemon", cfg.log_level, cfg.log_file);
  if (!s.ok()) {
    std::fprintf(stderr, "dfdaemon: %s\n", s.message().c_str());
    return 2;
  }
  df::Daemon daemon(cfg);
  s = daemon.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "dfdaemon: %s\n", s.message().c_str());
    DF_LOG_ERROR("start failed: {}", s.ToString());
    return 1;
  }
  // Stop requests come only from SIGINT/SIGTERM; the main thread then shuts down once.
  std::thread signals([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    DF_LOG_INFO("signal {}: shutting down", sig);
    daemon.RequestStop();
  });
  daemon.Wait();
  // A stop over the local API (dfdaemon stop) ends Wait() without a signal: wake the signal
  // thread with one (blocked everywhere, so only its sigwait takes it).
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  // A shutdown that hangs (a peer that never closes its stream, a stuck disk) must not keep the
  // process alive: after 15 s exit anyway; storage is crash-safe by design.
  std::thread([] {
    std::this_thread::sleep_for(std::chrono::seconds(15));
    std::fprintf(stderr, "dfdaemon: shutdown took longer than 15 s, exiting\n");
    std::_Exit(1);
  }).detach();
  daemon.Shutdown();
  return 0;
}
