// End-to-end: `dfctl preheat` against a real dfscheduler, seed peer and dfdaemon, with Debian's
// docker-registry as the registry (plain HTTP; with htpasswd; with token auth and a token realm
// this test serves). After a preheat, every blob of the image is on the seed peer: a pull through
// a daemon's mirror sends no blob GET to the registry and gets the layers from the seed.
#include <sys/stat.h>

#include "common/net.h"
#include "oci_test_util.h"

namespace df {
namespace {

class OciPreheatTest : public OciMirrorTest {
 protected:
  // A scheduler, a seed peer and one mirror daemon for `registry`, all with the cluster token.
  void StartCluster(const std::string& registry_url) {
    token_file_ = dir_.path() + "/token";
    WriteFile(token_file_, "preheat-test-token-0123456789abcdef\n");
    ::chmod(token_file_.c_str(), 0600);
    scheduler_port_ = bench::FreePort();
    scheduler_ = Process::Start(
        {Bin("scheduler/dfscheduler"), "--listen", SchedulerAddress(), "--metrics",
         "127.0.0.1:" + std::to_string(bench::FreePort()), "--auth-token-file", token_file_},
        dir_.path() + "/dfscheduler.log");
    ASSERT_TRUE(bench::WaitForTcp(scheduler_port_, 10000));
    std::vector<std::string> seed_argv =
        bench::DaemonArgv(bench::BuildDir() + "/src", "seed", dir_.path(), scheduler_port_);
    seed_metrics_port_ = bench::FreePort();
    SetFlag(seed_argv, "--metrics-port", std::to_string(seed_metrics_port_));
    seed_argv.insert(seed_argv.end(), {"--seed", "--auth-token-file", token_file_});
    seed_ = Process::Start(seed_argv, dir_.path() + "/seed.log");
    peer_ = StartMirror("peer", registry_url, scheduler_port_, {"--auth-token-file", token_file_});
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // hosts announced
  }

  std::string SchedulerAddress() const { return "127.0.0.1:" + std::to_string(scheduler_port_); }

  int Dfctl(std::vector<std::string> args, std::string* out, bool with_token = true) {
    std::vector<std::string> argv = {Bin("dfctl/dfctl"), "preheat", "--scheduler",
                                     SchedulerAddress()};
    if (with_token) argv.insert(argv.end(), {"--auth-token-file", token_file_});
    argv.insert(argv.end(), args.begin(), args.end());
    return bench::Run(argv, out, 180000);
  }

  static std::vector<Blob> AllBlobs(const TestImage& image) {
    std::vector<Blob> blobs = image.layers;
    blobs.push_back(image.config);
    return blobs;
  }

  // Bytes the peer daemon downloaded from other peers (the seed), polled for a few seconds: a
  // task's bytes are counted when it ends.
  double PeerBytesFromPeers(double at_least) const {
    double v = 0;
    for (int i = 0; i < 50 && v < at_least; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      v = bench::ScrapeMetric(peer_->metrics_port,
                              "df_daemon_download_bytes_total\\{source=\"peer\"\\}");
    }
    return v;
  }

  // The whole story once the image is in `registry`: preheat (with `creds` as dfctl flags), the
  // registry served each blob to the seed, a pull through the mirror (with `pull_creds`) sends
  // no blob GET to the registry and takes the layers from the seed.
  void PreheatThenPull(const TestImage& image, const DockerRegistry& registry,
                       const std::vector<std::string>& creds,
                       const std::vector<std::string>& pull_creds) {
    std::string out;
    std::vector<std::string> args = {registry.Host() + "/test/img:1", "--plain-http", "--wait",
                                     "--timeout", "60"};
    args.insert(args.end(), creds.begin(), creds.end());
    ASSERT_EQ(Dfctl(args, &out), 0) << out;
    uint64_t layer_bytes = 0;
    std::map<std::string, int> gets;
    for (const Blob& b : AllBlobs(image)) {
      EXPECT_NE(out.find(b.digest + " " + std::to_string(b.size) + " triggered"), std::string::npos)
          << out;
      gets[b.digest] = registry.BlobGets(b.digest);
      // The seed fetched it, once: a stat and one ranged GET per piece.
      const uint64_t pieces = b.size / ChoosePieceLength(static_cast<int64_t>(b.size)) + 1;
      EXPECT_GE(gets[b.digest], 1) << b.digest;
      EXPECT_LE(gets[b.digest], static_cast<int>(1 + pieces)) << b.digest;
      if (b.digest != image.config.digest) layer_bytes += b.size;
    }
    EXPECT_NE(out.find("every blob is on a seed peer"), std::string::npos) << out;

    std::string log;
    std::vector<std::string> extra;
    if (!pull_creds.empty()) extra = pull_creds;
    ASSERT_EQ(Pull(peer_->Host(), dir_.path() + "/out", &log, extra), 0) << log;
    ExpectSameBlobs(image, dir_.path() + "/out");
    EXPECT_EQ(peer_->Requests("p2p"), static_cast<double>(AllBlobs(image).size()));
    EXPECT_EQ(peer_->Requests("fallback"), 0);
    for (const Blob& b : AllBlobs(image)) {
      EXPECT_EQ(registry.BlobGets(b.digest), gets[b.digest])
          << b.digest << ": the pull went to the registry for a preheated blob";
    }
    EXPECT_GE(PeerBytesFromPeers(static_cast<double>(layer_bytes)),
              static_cast<double>(layer_bytes))
        << "the layers did not come from the seed";

    // Preheating again finds every blob seeded: nothing more is fetched.
    ASSERT_EQ(Dfctl(args, &out), 0) << out;
    for (const Blob& b : AllBlobs(image)) {
      EXPECT_NE(out.find(b.digest + " " + std::to_string(b.size) + " seeded"), std::string::npos)
          << out;
      EXPECT_EQ(registry.BlobGets(b.digest), gets[b.digest]);
    }
  }

  std::string token_file_;
  uint16_t scheduler_port_ = 0;
  uint16_t seed_metrics_port_ = 0;
  Process scheduler_;
  Process seed_;
  std::unique_ptr<MirrorDaemon> peer_;
};

TEST_F(OciPreheatTest, PreheatSeedsEveryLayerSoAPullFetchesNoneFromThePlainHttpRegistry) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image =
      MakeImage(dir_.path() + "/img", 21, {3 * 1024 * kKiB, 900 * kKiB, 300 * kKiB, 40 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  StartCluster(registry.Url());
  PreheatThenPull(image, registry, {}, {});
}

TEST_F(OciPreheatTest, PreheatIsAnAuthenticatedCallForAnImageReferenceOnly) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 22, {100 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  StartCluster(registry.Url());
  const std::string ref = registry.Host() + "/test/img:1";
  std::string out;

  EXPECT_EQ(Dfctl({ref, "--plain-http"}, &out, /*with_token=*/false), 1) << out;
  EXPECT_NE(out.find("auth token"), std::string::npos) << out;
  WriteFile(dir_.path() + "/wrong", "not-the-cluster-token-0123456789\n");
  ::chmod((dir_.path() + "/wrong").c_str(), 0600);
  EXPECT_EQ(Dfctl({ref, "--plain-http", "--auth-token-file", dir_.path() + "/wrong"}, &out,
                  /*with_token=*/false),
            1)
      << out;

  // Not an image reference: refused before the scheduler fetches anything.
  for (const std::string& bad :
       {"http://" + ref, registry.Url() + "/v2/test/img/blobs/" + image.layers[0].digest,
        registry.Host() + "/../etc:1", registry.Host() + "/Test/img:1"}) {
    EXPECT_EQ(Dfctl({bad, "--plain-http"}, &out), 1) << bad << "\n" << out;
  }
  EXPECT_EQ(Dfctl({ref, "--plain-http", "--platform", "linux"}, &out), 1) << out;
  EXPECT_NE(out.find("os/arch"), std::string::npos) << out;
  // A tag the registry does not have, a platform the image does not have, a registry that is
  // not there: clear errors.
  EXPECT_EQ(Dfctl({registry.Host() + "/test/img:nope", "--plain-http"}, &out), 1);
  EXPECT_NE(out.find("not found"), std::string::npos) << out;
  EXPECT_EQ(
      Dfctl({"127.0.0.1:" + std::to_string(bench::FreePort()) + "/a:1", "--plain-http"}, &out), 1);
  // HTTPS is the default: this registry speaks plain HTTP.
  EXPECT_EQ(Dfctl({ref}, &out), 1) << out;
  // No blob reached the registry through all of that.
  EXPECT_EQ(registry.BlobGets(image.layers[0].digest), 0);
  EXPECT_EQ(registry.BlobGets(image.config.digest), 0);
}

TEST_F(OciPreheatTest, PreheatAnswersABasicChallengeWithTheCredentials) {
  std::string htpasswd_out;
  ASSERT_EQ(bench::Run({"htpasswd", "-Bbn", kUser, kPassword}, &htpasswd_out), 0) << htpasswd_out;
  const std::string htpasswd = dir_.path() + "/htpasswd";
  WriteFile(htpasswd, htpasswd_out);
  DockerRegistry registry(dir_.path() + "/registry", htpasswd);
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 23, {2 * 1024 * kKiB, 200 * kKiB});
  ASSERT_EQ(Push(image, registry, {"--dest-creds", std::string(kUser) + ":" + kPassword}), 0);
  StartCluster(registry.Url());

  std::string out;
  EXPECT_EQ(Dfctl({registry.Host() + "/test/img:1", "--plain-http"}, &out), 1);
  EXPECT_NE(out.find("wants credentials"), std::string::npos) << out;
  EXPECT_EQ(Dfctl({registry.Host() + "/test/img:1", "--plain-http", "--username", kUser,
                   "--password", "wrong"},
                  &out),
            1);
  EXPECT_NE(out.find("refused"), std::string::npos) << out;
  PreheatThenPull(image, registry, {"--username", kUser, "--password", kPassword},
                  {"--src-creds", std::string(kUser) + ":" + kPassword});
}

TEST_F(OciPreheatTest, PreheatFollowsTheBearerTokenChallengeOfATokenAuthRegistry) {
  TokenRealm realm(dir_.path());
  ASSERT_TRUE(realm.ok());
  DockerRegistry registry(dir_.path() + "/registry", "", realm.RegistryAuthYaml());
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 24, {3 * 1024 * kKiB, 500 * kKiB, 10 * kKiB});
  ASSERT_EQ(Push(image, registry, {"--dest-creds", std::string(kUser) + ":" + kPassword}), 0);
  StartCluster(registry.Url());

  std::string out;
  EXPECT_EQ(Dfctl({registry.Host() + "/test/img:1", "--plain-http"}, &out), 1);
  EXPECT_NE(out.find("token service refused"), std::string::npos) << out;
  const int before = realm.tokens_issued();
  PreheatThenPull(image, registry, {"--username", kUser, "--password", kPassword},
                  {"--src-creds", std::string(kUser) + ":" + kPassword});
  EXPECT_GT(realm.tokens_issued(), before);
}

// Several schedulers (the daemons' `--scheduler a,b`): dfctl, given the same list with a dead
// scheduler first, preheats through the first one that answers; the seed registers each blob's
// task with the scheduler the daemons hash it to, so --wait must ask both. The second
// scheduler's port is chosen so that the hash gives each scheduler some of the blobs.
TEST_F(OciPreheatTest, WithTwoSchedulersPreheatFailsOverAndWaitAsksTheOwnerOfEachBlob) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image =
      MakeImage(dir_.path() + "/img", 23,
                {700 * kKiB, 300 * kKiB, 200 * kKiB, 100 * kKiB, 60 * kKiB, 30 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  token_file_ = dir_.path() + "/token";
  WriteFile(token_file_, "preheat-test-token-0123456789abcdef\n");
  ::chmod(token_file_.c_str(), 0600);

  const std::string s1 = "127.0.0.1:" + std::to_string(bench::FreePort());
  auto owned_by_s2 = [&](const std::string& s2) {
    int n = 0;
    for (const Blob& b : AllBlobs(image)) {
      const std::string id = b.digest.substr(7);  // a digest-keyed task's id
      n += RendezvousScore(s2, id) > RendezvousScore(s1, id);
    }
    return n;
  };
  std::string s2;
  const int blobs = static_cast<int>(AllBlobs(image).size());
  for (int i = 0; i < 50; ++i) {
    s2 = "127.0.0.1:" + std::to_string(bench::FreePort());
    const int n = owned_by_s2(s2);
    if (s2 != s1 && n >= 1 && n < blobs) break;
  }
  const int on_s2 = owned_by_s2(s2);
  ASSERT_TRUE(on_s2 >= 1 && on_s2 < blobs) << "no port split the blobs between the schedulers";
  const std::string list = s1 + "," + s2;

  std::vector<Process> schedulers;
  std::vector<uint16_t> metrics;
  for (const std::string& s : {s1, s2}) {
    metrics.push_back(bench::FreePort());
    schedulers.push_back(Process::Start(
        {Bin("scheduler/dfscheduler"), "--listen", s, "--metrics",
         "127.0.0.1:" + std::to_string(metrics.back()), "--auth-token-file", token_file_},
        dir_.path() + "/dfscheduler-" + s.substr(s.rfind(':') + 1) + ".log"));
    ASSERT_TRUE(
        bench::WaitForTcp(static_cast<uint16_t>(std::stoi(s.substr(s.rfind(':') + 1))), 10000));
  }
  std::vector<std::string> seed_argv =
      bench::DaemonArgv(bench::BuildDir() + "/src", "seed", dir_.path(), 1);
  SetFlag(seed_argv, "--scheduler", list);
  seed_argv.insert(seed_argv.end(), {"--seed", "--auth-token-file", token_file_});
  seed_ = Process::Start(seed_argv, dir_.path() + "/seed.log");
  peer_ = StartMirror(
      "peer", registry.Url(), 0,
      {"--scheduler", list, "--announce-interval", "500ms", "--auth-token-file", token_file_});
  ASSERT_TRUE(peer_->proc.running());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // hosts announced to both

  // A malformed list is a usage error (2) before anything is called.
  std::string bad;
  for (const std::string& l : {s1 + ",," + s2, s1 + "," + s1, s1 + ",nohostport"}) {
    EXPECT_EQ(bench::Run({Bin("dfctl/dfctl"), "preheat", "--scheduler", l, "--auth-token-file",
                          token_file_, registry.Host() + "/test/img:1", "--plain-http"},
                         &bad),
              2)
        << l << ": " << bad;
    EXPECT_NE(bad.find("--scheduler"), std::string::npos) << bad;
  }

  // A dead scheduler first: the preheat moves on to s1.
  const std::string dead = "127.0.0.1:" + std::to_string(bench::FreePort());
  std::string out;
  ASSERT_EQ(bench::Run({Bin("dfctl/dfctl"), "preheat", "--scheduler", dead + "," + list,
                        "--auth-token-file", token_file_, registry.Host() + "/test/img:1",
                        "--plain-http", "--wait", "--timeout", "60"},
                       &out, 180000),
            0)
      << out;
  EXPECT_NE(out.find("trying " + s1), std::string::npos) << out;
  EXPECT_NE(out.find("every blob is on a seed peer"), std::string::npos) << out;
  // Each scheduler saw the seed register the tasks it owns: s2 got some although dfctl called
  // s1 only.
  EXPECT_GE(bench::ScrapeMetric(metrics[1], "df_scheduler_registered_peers_total"), on_s2);
  EXPECT_GE(bench::ScrapeMetric(metrics[0], "df_scheduler_registered_peers_total"), blobs - on_s2);

  std::map<std::string, int> gets;
  for (const Blob& b : AllBlobs(image)) gets[b.digest] = registry.BlobGets(b.digest);
  std::string log;
  ASSERT_EQ(Pull(peer_->Host(), dir_.path() + "/out", &log), 0) << log;
  ExpectSameBlobs(image, dir_.path() + "/out");
  EXPECT_EQ(peer_->Requests("fallback"), 0);
  for (const Blob& b : AllBlobs(image)) {
    EXPECT_EQ(registry.BlobGets(b.digest), gets[b.digest])
        << b.digest << ": the pull went to the registry for a preheated blob";
  }
}

}  // namespace
}  // namespace df
