// Latency probes end to end: a real dfscheduler and three real dfdaemons probing each other every
// second; the scheduler's /api/v1/probes shows every host as a source and as a target.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.h"
#include "common/fd.h"

namespace df {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

// The body of GET `path` on 127.0.0.1:port when the reply is 200; "" otherwise.
std::string HttpGet(uint16_t port, const std::string& path) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return "";
  const std::string req = "GET " + path + " HTTP/1.0\r\n\r\n";
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return "";
  }
  std::string reply;
  char buf[65536];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) reply.append(buf, n);
  if (reply.rfind("HTTP/1.1 200", 0) != 0) return "";
  const size_t body = reply.find("\r\n\r\n");
  return body == std::string::npos ? "" : reply.substr(body + 4);
}

Json GetJson(uint16_t port, const std::string& path) {
  return Json::parse(HttpGet(port, path), nullptr, /*allow_exceptions=*/false);
}

TEST(Probes, ThreeDaemonsProbeEachOtherAndTheSchedulerShowsIt) {
  bench::TempDir dir;
  const std::string bin = bench::BuildDir() + "/src";
  const uint16_t grpc_port = bench::FreePort();
  const uint16_t metrics_port = bench::FreePort();
  bench::Process scheduler = bench::Process::Start(
      {bin + "/scheduler/dfscheduler", "--listen", "127.0.0.1:" + std::to_string(grpc_port),
       "--metrics", "127.0.0.1:" + std::to_string(metrics_port), "--evaluator", "latency",
       "--log-level", "warn"},
      dir.path() + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(grpc_port, 10000));
  ASSERT_TRUE(bench::WaitForTcp(metrics_port, 10000));
  std::vector<bench::Process> daemons;
  for (int i = 0; i < 3; ++i) {
    const std::string name = "peer" + std::to_string(i);
    auto argv = bench::DaemonArgv(bin, name, dir.path(), grpc_port);
    argv.insert(argv.end(), {"--probe-interval", "1s", "--log-level", "warn"});
    daemons.push_back(bench::Process::Start(argv, dir.path() + "/" + name + ".log"));
    ASSERT_TRUE(bench::WaitForUnixSocket(dir.path() + "/" + name + ".sock", 10000));
  }

  const auto start = std::chrono::steady_clock::now();
  std::set<std::string> hosts, srcs, dsts;
  bool positive = true;
  while (std::chrono::steady_clock::now() - start < 15s) {
    hosts.clear();
    srcs.clear();
    dsts.clear();
    positive = true;
    Json h = GetJson(metrics_port, "/api/v1/hosts");
    Json p = GetJson(metrics_port, "/api/v1/probes");
    for (const auto& host : h.is_array() ? h : Json::array()) hosts.insert(host["id"]);
    for (const auto& e : p.is_array() ? p : Json::array()) {
      srcs.insert(e["src"]);
      dsts.insert(e["dst"]);
      positive = positive && e["average_rtt_ns"].get<int64_t>() > 0;
    }
    if (hosts.size() == 3 && srcs == hosts && dsts == hosts) break;
    std::this_thread::sleep_for(200ms);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(hosts.size(), 3u);
  EXPECT_EQ(srcs, hosts) << "every host probed";
  EXPECT_EQ(dsts, hosts) << "every host was probed";
  EXPECT_TRUE(positive);
  std::printf("[ figures ] 3 dfdaemons with --probe-interval 1s: full probe graph after %.1f s\n",
              seconds);
  for (auto& d : daemons) d.Stop();
  scheduler.Stop();
}

}  // namespace
}  // namespace df
