#include "daemon/control_client.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "common/local_socket.h"
#include "dfdaemon.grpc.pb.h"

namespace df {

namespace dv1 = df::dfdaemon::v1;

namespace {

// A stub for the daemon at `sock`, or null with the reason printed (not running, not trusted).
std::unique_ptr<dv1::DfdaemonDownload::Stub> Connect(const std::string& sock, bool quiet_absent) {
  std::string untrusted = UntrustedSocketReason(sock);
  if (!untrusted.empty()) {
    std::fprintf(stderr, "dfdaemon: refusing to use %s\n", untrusted.c_str());
    return nullptr;
  }
  int err = LocalSocketConnectError(sock);
  if (err == EACCES) {
    std::fprintf(stderr, "dfdaemon: %s\n", PermissionDeniedMessage(sock).c_str());
    return nullptr;
  }
  if (err != 0) {
    if (!quiet_absent)
      std::fprintf(stderr, "dfdaemon: no dfdaemon is running at %s\n", sock.c_str());
    return nullptr;
  }
  auto channel = grpc::CreateChannel("unix:" + sock, grpc::InsecureChannelCredentials());
  return dv1::DfdaemonDownload::NewStub(channel);
}

grpc::Status Call(const std::function<grpc::Status(grpc::ClientContext*)>& rpc) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return rpc(&ctx);
}

}  // namespace

int RunStatusCommand(const std::string& sock) {
  auto stub = Connect(sock, false);
  if (!stub) return kControlNotRunning;
  dv1::DaemonStatus st;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) {
    return stub->GetDaemonStatus(ctx, dv1::GetDaemonStatusRequest(), &st);
  });
  if (!s.ok()) {
    std::fprintf(stderr, "dfdaemon: status from %s: %s\n", sock.c_str(), s.error_message().c_str());
    return s.error_code() == grpc::StatusCode::UNAVAILABLE ? kControlNotRunning : kControlFailed;
  }
  std::printf(
      "running: yes\npid: %u\nversion: %s\nuptime_seconds: %llu\nsock: %s\n"
      "data_dir: %s\nlog: %s\nhost_id: %s\nip: %s\ngrpc_port: %u\npiece_port: %u\n"
      "metrics: %s\nscheduler: %s\nseed: %s\nrunning_tasks: %u\ncached_tasks: %u\n"
      "registry_mirror: %s\n",
      st.pid(), st.version().c_str(), static_cast<unsigned long long>(st.uptime_seconds()),
      st.sock().c_str(), st.data_dir().c_str(),
      st.log_file().empty() ? "stderr" : st.log_file().c_str(), st.host_id().c_str(),
      st.ip().c_str(), st.grpc_port(), st.piece_port(),
      st.metrics_port() ? (st.ip() + ":" + std::to_string(st.metrics_port())).c_str() : "off",
      st.scheduler().empty() ? "none (back to source)" : st.scheduler().c_str(),
      st.seed() ? "yes" : "no", st.running_tasks(), st.cached_tasks(),
      st.proxy_port() ? (st.ip() + ":" + std::to_string(st.proxy_port()) + " (default upstream " +
                         st.registry_mirror() + ")")
                            .c_str()
                      : "off");
  return kControlOk;
}

int RunStopCommand(const std::string& sock, int timeout_ms) {
  auto stub = Connect(sock, true);
  if (!stub) {
    if (LocalSocketConnectError(sock) != 0 && UntrustedSocketReason(sock).empty()) {
      std::fprintf(stderr, "dfdaemon: no dfdaemon is running at %s\n", sock.c_str());
      return kControlOk;
    }
    return kControlNotRunning;
  }
  dv1::StopDaemonResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) {
    return stub->StopDaemon(ctx, dv1::StopDaemonRequest(), &resp);
  });
  if (!s.ok()) {
    std::fprintf(stderr, "dfdaemon: stop %s: %s\n", sock.c_str(), s.error_message().c_str());
    return kControlFailed;
  }
  // Stopped = the socket lock is free: the process exited (or at least released everything).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (FlockHeld(sock + ".lock") || LocalSocketConnectError(sock) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "dfdaemon: pid %u at %s did not stop within %d ms\n", resp.pid(),
                   sock.c_str(), timeout_ms);
      return kControlFailed;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::fprintf(stderr, "dfdaemon: stopped pid %u at %s\n", resp.pid(), sock.c_str());
  return kControlOk;
}

}  // namespace df
