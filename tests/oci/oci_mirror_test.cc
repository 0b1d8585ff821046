// End-to-end: images pulled with skopeo through dfdaemon's registry mirror from a real
// docker-registry (Debian's), with a real dfscheduler and seed peer where the swarm matters.
// The image is built by the test (random tar.gz layers, config, OCI manifest and index in an
// oci: layout) and pushed with skopeo. Skips when docker-registry or skopeo is missing.
#include "oci_test_util.h"

namespace df {
namespace {

TEST_F(OciMirrorTest, SkopeoPullsAnImageWhoseBlobsBecomeP2PTasks) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 1, {3 * 1024 * kKiB, 700 * kKiB, 20 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  auto daemon = StartMirror("peer", registry.Url());

  std::string log;
  ASSERT_EQ(Pull(daemon->Host(), dir_.path() + "/out1", &log), 0) << log;
  ExpectSameBlobs(image, dir_.path() + "/out1");
  EXPECT_EQ(daemon->Requests("p2p"), 4) << "three layers and the config, each a task";
  EXPECT_EQ(daemon->Requests("fallback"), 0);
  EXPECT_GE(daemon->Requests("pass_through"), 1) << "the manifest";

  // The task is named after the digest.
  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  auto r = cli.Get(("/v2/test/img/blobs/" + image.layers[1].digest).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("X-Dragonfly-Task-ID"), image.layers[1].digest.substr(7));
  EXPECT_EQ(r->body, ReadFile(image.layers[1].path));

  // A second pull is served from the daemon's cache: no blob GET reaches the registry again.
  std::vector<int> gets;
  for (const Blob& b : image.layers) gets.push_back(registry.BlobGets(b.digest));
  ASSERT_EQ(Pull(daemon->Host(), dir_.path() + "/out2", &log), 0) << log;
  ExpectSameBlobs(image, dir_.path() + "/out2");
  for (size_t i = 0; i < image.layers.size(); ++i) {
    EXPECT_GE(gets[i], 1);
    EXPECT_EQ(registry.BlobGets(image.layers[i].digest), gets[i]) << "layer " << i;
  }

  // The same layer in another repository is the same task: served from this host's copy.
  std::string out;
  ASSERT_EQ(Skopeo(dir_.path(),
                   {"copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    "docker://" + registry.Host() + "/test/img:1",
                    "docker://" + registry.Host() + "/other/copy:2"},
                   &out),
            0)
      << out;
  const int before = registry.BlobGets(image.layers[0].digest);  // skopeo may have read it
  r = cli.Get(("/v2/other/copy/blobs/" + image.layers[0].digest).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("X-Dragonfly-Task-ID"), image.layers[0].digest.substr(7));
  EXPECT_EQ(r->body, ReadFile(image.layers[0].path));
  EXPECT_EQ(registry.BlobGets(image.layers[0].digest), before);
}

TEST_F(OciMirrorTest, TwoDaemonsPullingTheSameImageFetchEachLayerFromTheRegistryOnce) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 2, {6 * 1024 * kKiB, 300 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);

  const uint16_t scheduler_port = StartSchedulerAndSeed();
  auto a = StartMirror("peer-a", registry.Url(), scheduler_port);
  auto b = StartMirror("peer-b", registry.Url(), scheduler_port);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // hosts announced

  std::string log_a, log_b;
  auto pull_a = std::async(std::launch::async,
                           [&] { return Pull(a->Host(), dir_.path() + "/out-a", &log_a); });
  auto pull_b = std::async(std::launch::async,
                           [&] { return Pull(b->Host(), dir_.path() + "/out-b", &log_b); });
  ASSERT_EQ(pull_a.get(), 0) << log_a;
  ASSERT_EQ(pull_b.get(), 0) << log_b;
  ExpectSameBlobs(image, dir_.path() + "/out-a");
  ExpectSameBlobs(image, dir_.path() + "/out-b");
  EXPECT_EQ(a->Requests("p2p"), 3);
  EXPECT_EQ(b->Requests("p2p"), 3);

  // Only the seed went to the registry for the big layer: a stat and one ranged GET per piece,
  // not that once per daemon.
  const Blob& big = image.layers[0];
  const int pieces =
      static_cast<int>(big.size / ChoosePieceLength(static_cast<int64_t>(big.size)) + 1);
  const int big_layer_gets = registry.BlobGets(big.digest);
  EXPECT_GE(big_layer_gets, 1);
  EXPECT_LE(big_layer_gets, 1 + pieces) << "more than one daemon fetched the layer itself";
  // A task's bytes are counted when it ends, which may be just after the last byte was streamed
  // to skopeo: poll for a few seconds.
  double from_peers = 0;
  for (int i = 0; i < 50 && from_peers < 2.0 * image.layers[0].size; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    from_peers = 0;
    for (const auto* d : {a.get(), b.get()}) {
      from_peers +=
          std::max(0.0, bench::ScrapeMetric(d->metrics_port,
                                            "df_daemon_download_bytes_total\\{source=\"peer\"\\}"));
    }
  }
  EXPECT_GE(from_peers, 2.0 * image.layers[0].size);
}

// The upstream of a request: X-Dragonfly-Registry (containerd's hosts.toml), then `ns`, then
// --registry-mirror.
TEST_F(OciMirrorTest, TheRegistryHeaderChoosesTheUpstreamBeforeNsAndTheDefault) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 8, {200 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  // The default upstream is a port where nothing listens.
  auto daemon = StartMirror("peer", "http://127.0.0.1:" + std::to_string(bench::FreePort()));
  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  const std::string path = "/v2/test/img/blobs/" + image.layers[0].digest;

  auto r = cli.Get(path.c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502) << "the default upstream is down";
  EXPECT_EQ(r->get_header_value("X-Dragonfly-Error-Type"), "backend");

  const httplib::Headers via_header = {{"X-Dragonfly-Registry", registry.Url()}};
  r = cli.Get((path + "?ns=unreachable.invalid").c_str(), via_header);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, ReadFile(image.layers[0].path));
  httplib::Headers manifest_headers = via_header;
  manifest_headers.emplace("Accept", "application/vnd.oci.image.manifest.v1+json");
  r = cli.Get("/v2/test/img/manifests/1?ns=unreachable.invalid", manifest_headers);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find(image.layers[0].digest), std::string::npos) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/vnd.oci.image.manifest.v1+json");
  EXPECT_FALSE(r->get_header_value("Docker-Content-Digest").empty());

  // `ns` names a host reached over https: this plain-HTTP registry does not answer it.
  r = cli.Get(("/v2/?ns=" + registry.Host()).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502);
}

TEST_F(OciMirrorTest, RangeRequestsGet206WithContentRange) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 3, {1024 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  auto daemon = StartMirror("peer", registry.Url());
  const Blob& layer = image.layers[0];
  const std::string bytes = ReadFile(layer.path);
  const std::string path = "/v2/test/img/blobs/" + layer.digest;
  const std::string size = std::to_string(layer.size);
  httplib::Client cli("127.0.0.1", daemon->proxy_port);

  auto r = cli.Get(path.c_str(), {{"Range", "bytes=100-1099"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->get_header_value("Content-Range"), "bytes 100-1099/" + size);
  EXPECT_EQ(r->body, bytes.substr(100, 1000));

  r = cli.Get(path.c_str(), {{"Range", "bytes=-10"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, bytes.substr(bytes.size() - 10));

  r = cli.Get(path.c_str(), {{"Range", "bytes=" + size + "-"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 416);
  EXPECT_EQ(r->get_header_value("Content-Range"), "bytes */" + size);
  EXPECT_EQ(daemon->Requests("p2p"), 3) << "every range served from the one task";

  // The first line about the blob's task (its id is the digest's hex) names it and its URL.
  const std::string id = layer.digest.substr(layer.digest.find(':') + 1);
  std::istringstream log(ReadFile(dir_.path() + "/peer.log"));
  std::string first;
  for (std::string line; first.empty() && std::getline(log, line);) {
    if (line.find(id) != std::string::npos) first = line;
  }
  EXPECT_NE(first.find("task_id=" + id), std::string::npos) << first;
  EXPECT_NE(first.find(" url=" + registry.Url() + path), std::string::npos) << first;
}

// A static file server is a registry as far as blob GETs and HEADs go: nginx, rate-limited, lets
// the test see the response start while the task is still downloading.
TEST_F(OciMirrorTest, ABlobIsStreamedWhileItsTaskIsStillDownloading) {
  const std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root + "/v2/test/img/blobs");
  const uint64_t size = 16 * 1024 * kKiB;
  const std::string tmp = dir_.path() + "/blob";
  const std::string digest = "sha256:" + bench::MakeFile(tmp, size, 42);
  std::filesystem::rename(tmp, root + "/v2/test/img/blobs/" + digest);
  // nginx lets a request send a second of its rate at once: 1 MiB pieces take about 1 s each,
  // 4 at once, so about 4 s for the 16 pieces.
  bench::NginxOrigin origin(root, "512k");
  ASSERT_TRUE(origin.ok());
  auto daemon = StartMirror("peer", "http://127.0.0.1:" + std::to_string(origin.port()));

  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  cli.set_read_timeout(60, 0);
  std::string body;
  uint32_t pieces_at_first_byte = 0;
  auto r = cli.Get(("/v2/test/img/blobs/" + digest).c_str(), httplib::Headers{},
                   [](const httplib::Response&) { return true; },
                   [&](const char* data, size_t n) {
                     if (body.empty()) {
                       pieces_at_first_byte = bench::DaemonFinishedPieces(
                           dir_.path() + "/peer.sock", digest.substr(7));
                     }
                     body.append(data, n);
                     return true;
                   });
  ASSERT_TRUE(r) << httplib::to_string(r.error()) << " after " << body.size()
                 << " bytes; daemon log:\n"
                 << ReadFile(dir_.path() + "/peer.log");
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(body.size(), size);
  EXPECT_EQ("sha256:" + Sha256File(root + "/v2/test/img/blobs/" + digest).value(), digest);
  Sha256 got;
  got.Update(body.data(), body.size());
  EXPECT_EQ("sha256:" + got.FinalHex(), digest);
  const uint64_t pieces = size / ChoosePieceLength(static_cast<int64_t>(size));
  ASSERT_GE(pieces, 4u);
  EXPECT_LT(pieces_at_first_byte, pieces) << "the response waited for the whole blob";
  EXPECT_EQ(daemon->Requests("p2p"), 1);
  EXPECT_EQ(daemon->Requests("fallback"), 0);
}

// A Range request does not wait for the whole blob: its bytes go out as the pieces holding
// them finish (each checked against its origin digest or fetched from the registry).
TEST_F(OciMirrorTest, ARangeIsStreamedWhileItsTaskIsStillDownloading) {
  const std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root + "/v2/test/img/blobs");
  const uint64_t size = 16 * 1024 * kKiB;
  const std::string tmp = dir_.path() + "/blob";
  const std::string digest = "sha256:" + bench::MakeFile(tmp, size, 44);
  const std::string path = root + "/v2/test/img/blobs/" + digest;
  std::filesystem::rename(tmp, path);
  bench::NginxOrigin origin(root, "512k");  // about 4 s for the blob, as above
  ASSERT_TRUE(origin.ok());
  auto daemon = StartMirror("peer", "http://127.0.0.1:" + std::to_string(origin.port()));

  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  cli.set_read_timeout(60, 0);
  const uint64_t first = 1024 * kKiB + 7, last = 5 * 1024 * kKiB - 1;
  std::string body;
  uint32_t pieces_at_first_byte = 0;
  auto r = cli.Get(
      ("/v2/test/img/blobs/" + digest).c_str(),
      httplib::Headers{{"Range", "bytes=" + std::to_string(first) + "-" + std::to_string(last)}},
      [](const httplib::Response&) { return true; },
      [&](const char* data, size_t n) {
        if (body.empty()) {
          pieces_at_first_byte =
              bench::DaemonFinishedPieces(dir_.path() + "/peer.sock", digest.substr(7));
        }
        body.append(data, n);
        return true;
      });
  ASSERT_TRUE(r) << httplib::to_string(r.error()) << " after " << body.size() << " bytes";
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(
      r->get_header_value("Content-Range"),
      "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" + std::to_string(size));
  EXPECT_EQ(r->get_header_value("X-Dragonfly-Task-ID"), digest.substr(7));
  EXPECT_TRUE(body == ReadFile(path).substr(first, last - first + 1)) << "wrong bytes";
  const uint64_t pieces = size / ChoosePieceLength(static_cast<int64_t>(size));
  ASSERT_GE(pieces, 4u);
  EXPECT_LT(pieces_at_first_byte, pieces) << "the range waited for the whole blob";
  EXPECT_EQ(daemon->Requests("p2p"), 1);
  EXPECT_EQ(daemon->Requests("fallback"), 0);
}

TEST_F(OciMirrorTest, AStoppingDaemonCutsAStreamingResponseAndExitsPromptly) {
  const std::string root = dir_.path() + "/origin";
  std::filesystem::create_directories(root + "/v2/test/img/blobs");
  const uint64_t size = 16 * 1024 * kKiB;
  const std::string tmp = dir_.path() + "/blob";
  const std::string digest = "sha256:" + bench::MakeFile(tmp, size, 43);
  std::filesystem::rename(tmp, root + "/v2/test/img/blobs/" + digest);
  bench::NginxOrigin origin(root, "512k");  // about 4 s for the blob
  ASSERT_TRUE(origin.ok());
  auto daemon = StartMirror("peer", "http://127.0.0.1:" + std::to_string(origin.port()));

  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  cli.set_read_timeout(60, 0);
  size_t received = 0;
  auto stopped_at = std::chrono::steady_clock::now();
  int exit_code = -2;
  auto r = cli.Get(("/v2/test/img/blobs/" + digest).c_str(), httplib::Headers{},
                   [](const httplib::Response&) { return true; },
                   [&](const char*, size_t n) {
                     if (received == 0) {
                       daemon->proc.Kill(SIGTERM);
                       stopped_at = std::chrono::steady_clock::now();
                     }
                     received += n;
                     return true;
                   });
  exit_code = daemon->proc.Wait(10000);
  EXPECT_EQ(exit_code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, std::chrono::seconds(5));
  EXPECT_FALSE(r) << "a cut response must not end cleanly";
  EXPECT_LT(received, size);
}

TEST_F(OciMirrorTest, ACorruptBlobIsRefusedNotServed) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 4, {512 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  const Blob& layer = image.layers[0];
  {
    std::fstream f(registry.BlobDataPath(layer.digest),
                   std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekp(1000);
    f.write("CORRUPT", 7);
  }
  auto daemon = StartMirror("peer", registry.Url());
  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  // Either the task failed before the response started (a 502 from the direct fetch, which
  // finds the same wrong bytes), or the streamed response is cut before its end: never a
  // complete 200.
  auto r = cli.Get(("/v2/test/img/blobs/" + layer.digest).c_str());
  if (r) {
    EXPECT_EQ(r->status, 502);
    EXPECT_EQ(r->get_header_value("X-Dragonfly-Error-Type"), "backend");
    EXPECT_NE(r->body.find("do not match"), std::string::npos) << r->body;
  }
  // A range is streamed from pieces checked one by one (here: fetched from the registry by this
  // host), not against the blob's digest, which a range cannot be: it carries the registry's own
  // bytes for it, or, when the blob's task failed before the range started, the same 502.
  r = cli.Get(("/v2/test/img/blobs/" + layer.digest).c_str(), {{"Range", "bytes=0-99"}});
  ASSERT_TRUE(r);
  if (r->status == 206) {
    EXPECT_EQ(r->body, ReadFile(registry.BlobDataPath(layer.digest)).substr(0, 100));
  } else {
    EXPECT_EQ(r->status, 502);
    EXPECT_EQ(r->get_header_value("X-Dragonfly-Error-Type"), "backend");
  }

  std::string log;
  EXPECT_NE(Pull(daemon->Host(), dir_.path() + "/out", &log), 0) << "skopeo got a bad layer";
  EXPECT_TRUE(daemon->proc.running());
}

TEST_F(OciMirrorTest, AFailedTaskFallsBackToTheRegistryWithoutTheClientNoticing) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 5, {800 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  // One task at a time, held by a download from an origin that accepts and never answers: the
  // blob's task cannot start (Unavailable), so the mirror goes to the registry itself.
  int hang = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(hang, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(hang, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(hang, reinterpret_cast<sockaddr*>(&addr), &len);
  auto daemon = StartMirror("peer", registry.Url(), 0, {"--max-running-tasks", "1"});
  Process dfget = Process::Start(
      {Bin("dfget/dfget"), "--no-progress", "--daemon-sock", dir_.path() + "/peer.sock",
       "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/hang", "-O",
       dir_.path() + "/hang.out"},
      dir_.path() + "/dfget.log");
  for (int i = 0;
       i < 100 && bench::ScrapeMetric(daemon->metrics_port, "df_daemon_running_tasks") < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(bench::ScrapeMetric(daemon->metrics_port, "df_daemon_running_tasks"), 1);

  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  auto r = cli.Get(("/v2/test/img/blobs/" + image.layers[0].digest).c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, ReadFile(image.layers[0].path));
  EXPECT_EQ(r->get_header_value("Docker-Content-Digest"), image.layers[0].digest);
  EXPECT_EQ(daemon->Requests("fallback"), 1);
  EXPECT_EQ(daemon->Requests("p2p"), 0);
  dfget.Stop();
  ::close(hang);
}

TEST_F(OciMirrorTest, APrivateRegistrysChallengePassesThroughAndItsLayersNeedCredentials) {
  std::string htpasswd_out;
  ASSERT_EQ(bench::Run({"htpasswd", "-Bbn", "alice", "s3cret"}, &htpasswd_out), 0) << htpasswd_out;
  const std::string htpasswd = dir_.path() + "/htpasswd";
  WriteFile(htpasswd, htpasswd_out);
  DockerRegistry registry(dir_.path() + "/registry", htpasswd);
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 6, {600 * kKiB});
  ASSERT_EQ(Push(image, registry, {"--dest-creds", "alice:s3cret"}), 0);
  auto daemon = StartMirror("peer", registry.Url());
  httplib::Client cli("127.0.0.1", daemon->proxy_port);

  // The challenge reaches the client as the registry sent it.
  auto r = cli.Get("/v2/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Basic realm=\"test-realm\"");

  std::string log;
  EXPECT_NE(Pull(daemon->Host(), dir_.path() + "/anon", &log), 0) << "pulled without creds";
  ASSERT_EQ(Pull(daemon->Host(), dir_.path() + "/out", &log, {"--src-creds", "alice:s3cret"}), 0)
      << log;
  ExpectSameBlobs(image, dir_.path() + "/out");
  // The tasks fetched from the registry with the client's Authorization (else they would have
  // failed on the registry's 401 and the blobs come by the fallback).
  EXPECT_EQ(daemon->Requests("p2p"), 2);
  EXPECT_EQ(daemon->Requests("fallback"), 0);

  // The layer is cached here now, yet a request the registry would refuse does not get it.
  const std::string path = "/v2/test/img/blobs/" + image.layers[0].digest;
  r = cli.Get(path.c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_TRUE(r->body.find(ReadFile(image.layers[0].path).substr(0, 64)) == std::string::npos);
  cli.set_basic_auth("alice", "wrong");
  r = cli.Get(path.c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  cli.set_basic_auth("alice", "s3cret");
  r = cli.Get(path.c_str());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, ReadFile(image.layers[0].path));
}

// A connection to `port` on loopback; -1 when it cannot connect. Owned by the caller.
int ConnectLoopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{15, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `request` as is on a new connection; returns the status line.
std::string RawRequest(uint16_t port, const std::string& request) {
  const int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  (void)::write(fd, request.data(), request.size());
  char buf[256] = {0};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  std::string reply(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return reply.substr(0, reply.find("\r\n"));
}

TEST_F(OciMirrorTest, MalformedRequestsGet4xxAndTheDaemonKeepsServing) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  auto daemon = StartMirror("peer", registry.Url());
  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  const std::string hex(64, 'a');
  auto status = [&](const std::string& path, const httplib::Headers& h = {}) {
    auto r = cli.Get(path.c_str(), h);
    return r ? r->status : -1;
  };
  EXPECT_EQ(status("/v2/test/img/blobs/sha256:zz"), 400);
  EXPECT_EQ(status("/v2/test/img/blobs/sha256:" + hex.substr(1)), 400);
  EXPECT_EQ(status("/v2/test/img/blobs/sha512:" + hex + hex), 400);
  EXPECT_EQ(status("/v2/Test/img/blobs/sha256:" + hex), 400);
  EXPECT_EQ(status("/v2/a..b/blobs/sha256:" + hex), 400);
  EXPECT_EQ(status("/v2/" + std::string(300, 'a') + "/blobs/sha256:" + hex), 400);
  EXPECT_EQ(status("/v2/" + std::string(20000, 'a') + "/manifests/1"), 414);
  EXPECT_EQ(status("/v2/?ns=a%20b"), 400);
  EXPECT_EQ(status("/v2/?ns=evil.example/x"), 400);
  EXPECT_EQ(status("/v2/", {{"X-Dragonfly-Registry", "ftp://example.com"}}), 400);
  EXPECT_EQ(status("/v2/", {{"X-Dragonfly-Registry", "http://user@example.com"}}), 400);
  EXPECT_EQ(status("/v2/", {{"X-Dragonfly-Registry", "http://example.com/path"}}), 400);
  EXPECT_EQ(status("/etc/passwd"), 404);
  EXPECT_EQ(status("/v2/../debug/vars"), 404);
  auto post = cli.Post("/v2/test/img/blobs/uploads/", "", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  // A forward proxy request names its upstream: validated as any other.
  EXPECT_EQ(RawRequest(daemon->proxy_port,
                       "GET ftp://example.com/v2/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
                .substr(0, 12),
            "HTTP/1.1 400");
  EXPECT_EQ(RawRequest(daemon->proxy_port,
                       "GET http://u@example.com/v2/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
                .substr(0, 12),
            "HTTP/1.1 400");
  EXPECT_EQ(RawRequest(daemon->proxy_port, "\x16\x03\x01garbage\r\n\r\n").substr(0, 12),
            "HTTP/1.1 400");

  // Still serving, and still passing the registry's own answers through.
  EXPECT_TRUE(daemon->proc.running());
  EXPECT_EQ(status("/v2/"), 200);
  EXPECT_EQ(status("/v2/test/img/manifests/1"), 404);
  std::string out;
  ASSERT_EQ(
      bench::Run({Bin("daemon/dfdaemon"), "status", "--sock", dir_.path() + "/peer.sock"}, &out), 0)
      << out;
  EXPECT_NE(out.find("registry_mirror: 127.0.0.1:" + std::to_string(daemon->proxy_port) +
                     " (default upstream " + registry.Url() + ")"),
            std::string::npos)
      << out;
}

TEST_F(OciMirrorTest, SkopeoUsesTheMirrorFromRegistriesConf) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 7, {400 * kKiB, 30 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  auto daemon = StartMirror("peer", registry.Url());

  // What `dfdaemon print-config podman` prints for this registry and mirror.
  std::string conf;
  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "print-config", "podman", "--registry",
                        registry.Url(), "--mirror", "http://" + daemon->Host()},
                       &conf),
            0)
      << conf;
  EXPECT_NE(conf.find("location = \"" + daemon->Host() + "\""), std::string::npos) << conf;
  const std::string conf_path = dir_.path() + "/registries.conf";
  WriteFile(conf_path, conf);
  std::string log;
  ASSERT_EQ(
      Skopeo(dir_.path(),
             {"copy", "docker://" + registry.Host() + "/test/img:1", "dir:" + dir_.path() + "/out"},
             &log, conf_path),
      0)
      << log;
  ExpectSameBlobs(image, dir_.path() + "/out");
  // skopeo falls back to the registry silently when a mirror fails: the blobs must have come
  // through the mirror's tasks.
  EXPECT_EQ(daemon->Requests("p2p"), 3);
}

TEST_F(OciMirrorTest, PrintConfigWritesEachRuntimesMirrorConfiguration) {
  std::string out;
  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "print-config", "containerd"}, &out), 0) << out;
  EXPECT_NE(out.find("server = \"https://index.docker.io\""), std::string::npos) << out;
  EXPECT_NE(out.find("[host.\"http://127.0.0.1:4001\"]"), std::string::npos) << out;
  EXPECT_NE(out.find("capabilities = [\"pull\", \"resolve\"]"), std::string::npos) << out;
  EXPECT_NE(out.find("X-Dragonfly-Registry = \"https://index.docker.io\""), std::string::npos);
  ASSERT_EQ(bench::Run({Bin("daemon/dfdaemon"), "print-config", "docker"}, &out), 0) << out;
  EXPECT_NE(out.find("\"registry-mirrors\": [\"http://127.0.0.1:4001\"]"), std::string::npos);
  EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "print-config", "rkt"}, &out), 2) << out;
  EXPECT_EQ(
      bench::Run({Bin("daemon/dfdaemon"), "print-config", "containerd", "--registry", "ftp://x"},
                 &out),
      2)
      << out;
}

// Dragonfly's proxy.rules: a rule makes manifests fetched by digest P2P tasks keyed by their URL,
// served with the registry's Content-Type; other paths still pass through; a bad rule stops the
// daemon at start with a clear message.
TEST_F(OciMirrorTest, AProxyRuleMakesMatchingPathsP2PTasks) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 12, {100 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  const httplib::Headers accept = {{"Accept", "application/vnd.oci.image.manifest.v1+json"}};
  httplib::Client direct("127.0.0.1", registry.port());
  auto m = direct.Get("/v2/test/img/manifests/1", accept);
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  const std::string digest = m->get_header_value("Docker-Content-Digest");
  ASSERT_EQ(digest.size(), 71u) << digest;

  auto daemon =
      StartMirror("peer", registry.Url(), 0, {"--proxy-rule", "/manifests/sha256:[0-9a-f]{64}$"});
  httplib::Client cli("127.0.0.1", daemon->proxy_port);
  const std::string by_digest = "/v2/test/img/manifests/" + digest;
  for (int i = 0; i < 2; ++i) {
    auto r = cli.Get(by_digest.c_str(), accept);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, m->body);
    EXPECT_FALSE(r->get_header_value("X-Dragonfly-Task-ID").empty()) << "not a task";
    EXPECT_EQ(r->get_header_value("Content-Type"), "application/vnd.oci.image.manifest.v1+json");
    EXPECT_EQ(r->get_header_value("Docker-Content-Digest"), digest);
  }
  EXPECT_EQ(daemon->Requests("p2p"), 2);
  // The second GET came from this host's copy of the task.
  const int gets = registry.Gets("/manifests/" + digest);
  EXPECT_GE(gets, 1);
  auto r = cli.Get(by_digest.c_str(), accept);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, m->body);
  EXPECT_EQ(registry.Gets("/manifests/" + digest), gets);
  // A range of it, from the task.
  httplib::Headers ranged = accept;
  ranged.emplace("Range", "bytes=0-9");
  r = cli.Get(by_digest.c_str(), ranged);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, m->body.substr(0, 10));

  // By tag: no rule matches, it passes through (a task would keep serving the first answer).
  r = cli.Get("/v2/test/img/manifests/1", accept);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->get_header_value("X-Dragonfly-Task-ID").empty());
  // A digest the registry does not have: its HEAD says 404, and so does the mirror.
  r = cli.Get(("/v2/test/img/manifests/sha256:" + std::string(64, '0')).c_str(), accept);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(r->get_header_value("X-Dragonfly-Task-ID").empty());

  std::vector<std::string> argv =
      bench::DaemonArgv(bench::BuildDir() + "/src", "bad", dir_.path(), 0);
  argv.insert(argv.end(), {"--proxy-rule", "blobs/(sha256"});
  std::string out;
  EXPECT_EQ(bench::Run(argv, &out, 20000), 2) << out;
  EXPECT_NE(out.find("proxy_rules[0]: bad regular expression 'blobs/(sha256'"), std::string::npos)
      << out;
}

// Reads from `fd` until `terminator` has been read (included), EOF or a timeout.
std::string ReadUntil(int fd, const std::string& terminator) {
  std::string got;
  char c = 0;
  while (got.size() < (1 << 20) && ::read(fd, &c, 1) == 1) {
    got += c;
    if (!terminator.empty() && got.size() >= terminator.size() &&
        got.compare(got.size() - terminator.size(), terminator.size(), terminator) == 0) {
      break;
    }
  }
  return got;
}

// A host name other than "localhost" that resolves to a loopback address, for clients that
// never proxy "localhost" or loopback literals (Go's HTTPS_PROXY handling): this host's name
// when it does; "" otherwise.
std::string ProxyableLoopbackName() {
  char name[256] = {0};
  if (::gethostname(name, sizeof name - 1) != 0 || std::string(name) == "localhost") return "";
  addrinfo hints{};
  hints.ai_family = AF_INET;
  addrinfo* res = nullptr;
  if (::getaddrinfo(name, nullptr, &hints, &res) != 0 || !res) return "";
  const auto* a = reinterpret_cast<const sockaddr_in*>(res->ai_addr);
  const bool loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  ::freeaddrinfo(res);
  return loopback ? name : "";
}

// The mirror port as a forward proxy refuses to be an open relay: a CONNECT to a host nobody
// listed is 403, malformed or oversized CONNECT heads are 400, and the daemon keeps serving.
// Strangers on the mirror port: 200 connections that never send a byte (more than the 64 worker
// threads) do not keep a client with a request waiting, an endless header line is cut at 64 KiB
// with the connection instead of being buffered whole, and so is a head of 1,000 short lines.
TEST_F(OciMirrorTest, IdleConnectionsAndEndlessHeadersDoNotLockOutAClient) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  auto daemon = StartMirror("peer", registry.Url());
  const uint16_t p = daemon->proxy_port;
  std::vector<int> idle;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectLoopback(p);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // accepted, all of them
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(RawRequest(p, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 404 Not Found");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));

  const int fd = ConnectLoopback(p);
  ASSERT_GE(fd, 0);
  const std::string head = "GET /probe HTTP/1.1\r\nHost: x\r\nX-Big: ";
  (void)::write(fd, head.data(), head.size());
  const std::string chunk(64 << 10, 'a');
  for (int i = 0; i < 16; ++i) {  // 1 MiB, never ended by CRLF
    if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) break;
  }
  // Without the bound the daemon would wait for the line's end until its 30 s read timeout; with
  // it the connection is answered with a 4xx or closed at once.
  const auto sent_at = std::chrono::steady_clock::now();
  const std::string reply = ReadUntil(fd, "\r\n");
  ::close(fd);
  EXPECT_TRUE(reply.empty() || reply.rfind("HTTP/1.1 4", 0) == 0) << reply;
  EXPECT_LT(std::chrono::steady_clock::now() - sent_at, std::chrono::seconds(5));
  for (int f : idle) ::close(f);
  EXPECT_EQ(RawRequest(p, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 404 Not Found");

  // Lines are bounded as well as bytes: 100 short header fields are a request (Apache's limit),
  // 1,000 of them (12 KiB, far under the byte bound) are not.
  auto with_fields = [](int n) {
    std::string req = "GET /probe HTTP/1.1\r\nHost: x\r\n";
    for (int i = 0; i < n; ++i) req += "X-" + std::to_string(i) + ": y\r\n";
    return req + "\r\n";
  };
  EXPECT_EQ(RawRequest(p, with_fields(100)), "HTTP/1.1 404 Not Found");
  const std::string many = RawRequest(p, with_fields(1000));
  EXPECT_TRUE(many.empty() || many.rfind("HTTP/1.1 4", 0) == 0) << many;
  EXPECT_NE(many, "HTTP/1.1 404 Not Found") << "1,000 header lines were read as a request";
  EXPECT_EQ(RawRequest(p, "GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 404 Not Found");
}

TEST_F(OciMirrorTest, ConnectToAnUnlistedHostIs403AndBadConnectHeadsAre400) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  const std::string dead = "127.0.0.1:" + std::to_string(bench::FreePort());  // nobody listens
  auto daemon = StartMirror("peer", registry.Url(), 0, {"--proxy-connect-host", dead});
  const uint16_t p = daemon->proxy_port;
  EXPECT_EQ(RawRequest(p, "CONNECT " + registry.Host() + " HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 403 Forbidden");
  EXPECT_EQ(RawRequest(p, "CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n"), "HTTP/1.1 403 Forbidden");
  for (const std::string& bad :
       {std::string("CONNECT garbage\r\n\r\n"), std::string("CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n"),
        std::string("CONNECT http://127.0.0.1:80/ HTTP/1.1\r\n\r\n"),
        std::string("CONNECT u@127.0.0.1:80 HTTP/1.1\r\n\r\n"),
        std::string("CONNECT 127.0.0.1:80 HTTP/1.1\r\nno colon here\r\n\r\n"),
        std::string("CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: \0\r\n\r\n", 39),
        "CONNECT 127.0.0.1:80 HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n",
        "CONNECT " + std::string(20000, 'a') + ":80 HTTP/1.1\r\n\r\n"}) {
    EXPECT_EQ(RawRequest(p, bad), "HTTP/1.1 400 Bad Request") << bad.substr(0, 60);
  }
  // Bytes that only start like a CONNECT are an HTTP request like any other.
  EXPECT_EQ(RawRequest(p, "CONNEC /v2/ HTTP/1.1\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  // A CONNECT later on a kept-alive connection is refused by the mirror's HTTP server.
  EXPECT_EQ(RawRequest(p, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nCONNECT " + registry.Host() +
                              " HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK");
  // An allowed host that does not answer: 502.
  EXPECT_EQ(RawRequest(p, "CONNECT " + dead + " HTTP/1.1\r\n\r\n"), "HTTP/1.1 502 Bad Gateway");
  // Still serving.
  EXPECT_TRUE(daemon->proc.running());
  httplib::Client cli("127.0.0.1", p);
  auto r = cli.Get("/v2/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(daemon->Requests("error"), 0) << "CONNECTs are counted apart";
  EXPECT_GE(bench::ScrapeMetric(daemon->metrics_port,
                                "df_daemon_proxy_connects_total\\{outcome=\"refused\"\\}"),
            2);
}

// A client that uses the daemon as its HTTP proxy sends absolute-form requests: the target's
// scheme://host:port is the upstream (not --registry-mirror), and blobs still go P2P.
TEST_F(OciMirrorTest, AbsoluteFormProxyRequestsAreMirrorRequestsToTheirHost) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 13, {300 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  auto daemon = StartMirror("peer", "http://127.0.0.1:1");  // a default that would fail
  const Blob& layer = image.layers[0];
  const std::string url = registry.Url() + "/v2/test/img/blobs/" + layer.digest;
  for (int i = 0; i < 2; ++i) {
    const int fd = ConnectLoopback(daemon->proxy_port);
    ASSERT_GE(fd, 0);
    const std::string req = "GET " + url + " HTTP/1.1\r\nHost: " + registry.Host() +
                            "\r\nX-Dragonfly-Registry: http://127.0.0.1:1\r\n"
                            "Connection: close\r\n\r\n";
    ASSERT_EQ(::write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
    const std::string reply = ReadUntil(fd, "");
    ::close(fd);
    ASSERT_EQ(reply.substr(0, 15), "HTTP/1.1 200 OK") << reply.substr(0, 200);
    EXPECT_NE(reply.find("X-Dragonfly-Task-ID: " + layer.digest.substr(7)), std::string::npos);
    EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), ReadFile(layer.path));
  }
  EXPECT_EQ(daemon->Requests("p2p"), 2);
  EXPECT_LE(registry.BlobGets(layer.digest), 1) << "the second GET came from the task's copy";
  // curl with the daemon as its proxy: the manifest passes through.
  std::string out;
  EXPECT_EQ(bench::Run({"curl", "-sf", "--proxy", "http://" + daemon->Host(), "-H",
                        "Accept: application/vnd.oci.image.manifest.v1+json",
                        registry.Url() + "/v2/test/img/manifests/1"},
                       &out),
            0)
      << out;
  EXPECT_NE(out.find(layer.digest), std::string::npos) << out;
}

// A host on --proxy-connect-host gets a plain byte tunnel: the client talks to the registry
// itself through it.
TEST_F(OciMirrorTest, ConnectToAnAllowedHostIsAPlainTunnel) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 14, {200 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  auto daemon = StartMirror("peer", registry.Url(), 0, {"--proxy-connect-host", registry.Host()});
  const int fd = ConnectLoopback(daemon->proxy_port);
  ASSERT_GE(fd, 0);
  const std::string connect =
      "CONNECT " + registry.Host() + " HTTP/1.1\r\nHost: " + registry.Host() + "\r\n\r\n";
  ASSERT_EQ(::write(fd, connect.data(), connect.size()), static_cast<ssize_t>(connect.size()));
  EXPECT_EQ(ReadUntil(fd, "\r\n\r\n"), "HTTP/1.1 200 Connection Established\r\n\r\n");
  const Blob& layer = image.layers[0];
  const std::string get = "GET /v2/test/img/blobs/" + layer.digest +
                          " HTTP/1.1\r\nHost: " + registry.Host() + "\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::write(fd, get.data(), get.size()), static_cast<ssize_t>(get.size()));
  const std::string reply = ReadUntil(fd, "");
  ::close(fd);
  ASSERT_EQ(reply.substr(0, 15), "HTTP/1.1 200 OK") << reply.substr(0, 300);
  EXPECT_EQ(reply.find("X-Dragonfly-Task-ID"), std::string::npos) << "not the mirror's answer";
  EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), ReadFile(layer.path));
  EXPECT_EQ(registry.BlobGets(layer.digest), 1);
  EXPECT_EQ(bench::ScrapeMetric(daemon->metrics_port,
                                "df_daemon_proxy_connects_total\\{outcome=\"tunnel\"\\}"),
            1);
  // curl --proxytunnel: a CONNECT of its own, then the request inside the tunnel. (skopeo through
  // a plain tunnel to a TLS registry: InterceptedHttpsRegistryWithTokenAuthGoesP2P.)
  std::string out;
  EXPECT_EQ(bench::Run({"curl", "-sf", "--proxytunnel", "--proxy", "http://" + daemon->Host(),
                        registry.Url() + "/v2/"},
                       &out),
            0)
      << out;
  EXPECT_EQ(bench::ScrapeMetric(daemon->metrics_port,
                                "df_daemon_proxy_connects_total\\{outcome=\"tunnel\"\\}"),
            2);
  // The tunnel's first bytes in the same write as the head are the registry's: the head is read
  // up to its empty line and not a byte further.
  const int pipelined = ConnectLoopback(daemon->proxy_port);
  ASSERT_GE(pipelined, 0);
  const std::string both =
      connect + "GET /v2/ HTTP/1.1\r\nHost: " + registry.Host() + "\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::write(pipelined, both.data(), both.size()), static_cast<ssize_t>(both.size()));
  const std::string answers = ReadUntil(pipelined, "");
  ::close(pipelined);
  EXPECT_EQ(answers.rfind("HTTP/1.1 200 Connection Established\r\n\r\nHTTP/1.1 200 OK", 0), 0u)
      << answers.substr(0, 300);
}

// docker-registry over TLS with token auth (a realm the test serves): skopeo pulls through two
// daemons as its HTTPS proxy, trusting only the daemons' interception CA for the registry. Every
// layer arrives intact, and the registry serves each blob at most once: the second daemon gets
// them from the first.
TEST_F(OciMirrorTest, InterceptedHttpsRegistryWithTokenAuthGoesP2P) {
  const std::string host = ProxyableLoopbackName();
  if (host.empty()) GTEST_SKIP() << "needs a host name (not localhost) that resolves to loopback";
  const std::string d = dir_.path();
  // The registry's own CA and certificate, which the daemons trust (--origin-ca-file), and the
  // interception CA, which skopeo trusts (--src-cert-dir).
  auto openssl = [](std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    std::string out;
    EXPECT_EQ(bench::Run(args, &out), 0) << out;
  };
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", d + "/registry-ca.key", "-out", d + "/registry-ca.crt", "-days", "1", "-subj",
           "/CN=test-registry-ca"});
  openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
           d + "/registry.key", "-out", d + "/registry.csr", "-subj", "/CN=" + host});
  WriteFile(d + "/san.ext", "subjectAltName=DNS:" + host + ",DNS:localhost,IP:127.0.0.1\n");
  openssl({"x509", "-req", "-in", d + "/registry.csr", "-CA", d + "/registry-ca.crt", "-CAkey",
           d + "/registry-ca.key", "-CAcreateserial", "-out", d + "/registry.crt", "-days", "1",
           "-extfile", d + "/san.ext"});
  openssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
           "-keyout", d + "/proxy-ca.key", "-out", d + "/proxy-ca.crt", "-days", "1", "-subj",
           "/CN=test-proxy-ca"});
  ::chmod((d + "/proxy-ca.key").c_str(), 0600);
  std::filesystem::create_directories(d + "/proxy-certs");
  std::filesystem::copy_file(d + "/proxy-ca.crt", d + "/proxy-certs/ca.crt");
  std::filesystem::create_directories(d + "/registry-certs");
  std::filesystem::copy_file(d + "/registry-ca.crt", d + "/registry-certs/ca.crt");

  TokenRealm realm(d);
  ASSERT_TRUE(realm.ok());
  DockerRegistry registry(d + "/registry", "", realm.RegistryAuthYaml(), d + "/registry.crt",
                          d + "/registry.key");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(d + "/img", 15, {2 * 1024 * kKiB, 500 * kKiB, 30 * kKiB});
  const std::string creds = std::string(kUser) + ":" + kPassword;
  ASSERT_EQ(Push(image, registry, {"--dest-creds", creds}), 0);

  const uint16_t scheduler_port = bench::FreePort();
  Process scheduler = Process::Start(
      {Bin("scheduler/dfscheduler"), "--listen", "127.0.0.1:" + std::to_string(scheduler_port),
       "--metrics", "127.0.0.1:" + std::to_string(bench::FreePort()), "--log-level", "warn"},
      d + "/dfscheduler.log");
  ASSERT_TRUE(bench::WaitForTcp(scheduler_port, 10000));
  const std::string target = host + ":" + std::to_string(registry.port());
  const std::vector<std::string> proxy_flags = {"--proxy-intercept-host", target,
                                                "--proxy-ca-cert",        d + "/proxy-ca.crt",
                                                "--proxy-ca-key",         d + "/proxy-ca.key",
                                                "--origin-ca-file",       d + "/registry-ca.crt"};
  auto a = StartMirror("peer-a", "http://127.0.0.1:1", scheduler_port, proxy_flags);
  auto b = StartMirror("peer-b", "http://127.0.0.1:1", scheduler_port, proxy_flags);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // hosts announced

  // skopeo with the daemon as its HTTPS proxy, trusting the CAs in `cert_dir`.
  auto pull = [&](const MirrorDaemon& daemon, const std::string& out, std::string* log,
                  const std::string& cert_dir) {
    const std::string conf = d + "/empty-registries.conf";
    WriteFile(conf, "");
    return bench::Run({"env",        "-u",
                       "NO_PROXY",   "-u",
                       "no_proxy",   "-u",
                       "HTTP_PROXY", "-u",
                       "http_proxy", "HTTPS_PROXY=http://" + daemon.Host(),
                       kSkopeoBin,   "--registries-conf",
                       conf,         "--insecure-policy",
                       "copy",       "--src-cert-dir",
                       cert_dir,     "--src-creds",
                       creds,        "docker://" + target + "/test/img:1",
                       "dir:" + out},
                      log, 120000);
  };
  std::string log;
  ASSERT_EQ(pull(*a, d + "/out-a", &log, d + "/proxy-certs"), 0) << log;
  ExpectSameBlobs(image, d + "/out-a");
  ASSERT_EQ(pull(*b, d + "/out-b", &log, d + "/proxy-certs"), 0) << log;
  ExpectSameBlobs(image, d + "/out-b");
  EXPECT_EQ(a->Requests("p2p"), 4) << "three layers and the config";
  EXPECT_EQ(b->Requests("p2p"), 4);
  EXPECT_EQ(a->Requests("fallback") + b->Requests("fallback"), 0);
  std::vector<Blob> blobs = image.layers;
  blobs.push_back(image.config);
  for (const Blob& blob : blobs) {
    // One GET per piece (a stat is a HEAD): the bytes say whether a second daemon went there:
    // every byte of the blob left the registry exactly once.
    EXPECT_GE(registry.BlobGets(blob.digest), 1) << blob.digest;
    EXPECT_EQ(registry.BlobBytesServed(blob.digest), blob.size)
        << blob.digest << " (" << registry.BlobGets(blob.digest) << " GETs) served more than once";
  }
  EXPECT_GE(realm.tokens_issued(), 2) << "each skopeo ran the registry's token flow";
  for (const auto* daemon : {a.get(), b.get()}) {
    EXPECT_GE(bench::ScrapeMetric(daemon->metrics_port,
                                  "df_daemon_proxy_connects_total\\{outcome=\"intercept\"\\}"),
              1);
  }
  // A daemon that only tunnels the registry (--proxy-connect-host): skopeo, trusting the
  // registry's own CA, talks TLS with the registry itself through it; the blobs come from the
  // registry again (nothing inside a plain tunnel goes P2P).
  auto c = StartMirror("peer-c", "http://127.0.0.1:1", 0, {"--proxy-connect-host", target});
  ASSERT_EQ(pull(*c, d + "/out-c", &log, d + "/registry-certs"), 0) << log;
  ExpectSameBlobs(image, d + "/out-c");
  EXPECT_EQ(c->Requests("p2p"), 0);
  for (const Blob& blob : blobs) {
    EXPECT_EQ(registry.BlobBytesServed(blob.digest), 2 * blob.size) << blob.digest;
  }
  EXPECT_GE(bench::ScrapeMetric(c->metrics_port,
                                "df_daemon_proxy_connects_total\\{outcome=\"tunnel\"\\}"),
            1);
  // Without the interception CA, skopeo refuses the daemon's certificate.
  std::filesystem::create_directories(d + "/no-certs");
  const std::string conf = d + "/empty-registries.conf";
  EXPECT_NE(bench::Run({"env", "-u", "NO_PROXY", "-u", "no_proxy",
                        "HTTPS_PROXY=http://" + a->Host(), kSkopeoBin, "--registries-conf", conf,
                        "--insecure-policy", "inspect", "--cert-dir", d + "/no-certs", "--creds",
                        creds, "docker://" + target + "/test/img:1"},
                       &log, 60000),
            0)
      << log;
}

}  // namespace
}  // namespace df
