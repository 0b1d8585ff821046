// End-to-end: containerd (Debian's, started by the test in a temporary root) pulls an image with
// `ctr images pull --hosts-dir` through dfdaemon registry mirrors, configured with what
// `dfdaemon print-config containerd` prints, from a real docker-registry. Two containerd
// instances stand for two nodes (one instance would share its content store between
// namespaces and fetch each blob once anyway). Skips when containerd, ctr, docker-registry or
// skopeo is missing, or when not root (containerd unpacks layers into its snapshotter).
#include "oci_test_util.h"

namespace df {
namespace {

constexpr const char* kContainerdBin = "/usr/bin/containerd";
constexpr const char* kCtrBin = "/usr/bin/ctr";

// One containerd with its own root, state and socket under `dir`; no CRI, no shims started (a
// pull only needs the content store and the native snapshotter). Stopped by pid at the end.
class Containerd {
 public:
  explicit Containerd(const std::string& dir) : dir_(dir) {
    std::filesystem::create_directories(dir);
    WriteFile(dir + "/config.toml",
              "version = 2\n"
              "root = \"" +
                  dir + "/root\"\n" + "state = \"" + dir + "/state\"\n" +
                  "disabled_plugins = [\"io.containerd.grpc.v1.cri\", "
                  "\"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", "
                  "\"io.containerd.snapshotter.v1.devmapper\", "
                  "\"io.containerd.snapshotter.v1.aufs\"]\n"
                  "[grpc]\n  address = \"" +
                  Socket() + "\"\n" + "[ttrpc]\n  address = \"" + Socket() + ".ttrpc\"\n" +
                  "[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n");
    proc_ =
        Process::Start({kContainerdBin, "--config", dir + "/config.toml"}, dir + "/containerd.log");
    for (int i = 0; i < 100 && !ok_; ++i) {
      std::string out;
      ok_ = std::filesystem::exists(Socket()) &&
            bench::Run({kCtrBin, "--address", Socket(), "version"}, &out, 5000) == 0;
      if (!ok_) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~Containerd() { proc_.Stop(); }
  bool ok() const { return ok_; }
  std::string Socket() const { return dir_ + "/containerd.sock"; }

  // `ctr -n df ARGS...` against this instance.
  int Ctr(const std::vector<std::string>& args, std::string* out) const {
    std::vector<std::string> argv = {kCtrBin, "--address", Socket(), "--namespace", "df"};
    argv.insert(argv.end(), args.begin(), args.end());
    return bench::Run(argv, out, 120000);
  }
  // The bytes of a blob in the content store ("" when absent).
  std::string Blob(const std::string& digest) const {
    const std::string path =
        dir_ + "/root/io.containerd.content.v1.content/blobs/sha256/" + digest.substr(7);
    return std::filesystem::exists(path) ? ReadFile(path) : "";
  }

 private:
  std::string dir_;
  Process proc_;
  bool ok_ = false;
};

class OciContainerdTest : public OciMirrorTest {
 protected:
  void SetUp() override {
    OciMirrorTest::SetUp();
    if (IsSkipped()) return;
    if (::access(kContainerdBin, X_OK) != 0 || ::access(kCtrBin, X_OK) != 0) {
      GTEST_SKIP() << "needs containerd and ctr (scripts/install-deps.sh)";
    }
    if (::geteuid() != 0) GTEST_SKIP() << "containerd needs root to unpack layers";
  }

  // certs.d/<registry host>/hosts.toml as `dfdaemon print-config containerd` writes it for
  // `registry` and the mirror `daemon`; returns the hosts dir.
  std::string HostsDir(const std::string& name, const DockerRegistry& registry,
                       const MirrorDaemon& daemon) {
    std::string toml;
    EXPECT_EQ(bench::Run({Bin("daemon/dfdaemon"), "print-config", "containerd", "--registry",
                          registry.Url(), "--mirror", "http://" + daemon.Host()},
                         &toml),
              0)
        << toml;
    const std::string dir = dir_.path() + "/" + name + "-certs.d";
    std::filesystem::create_directories(dir + "/" + registry.Host());
    WriteFile(dir + "/" + registry.Host() + "/hosts.toml", toml);
    return dir;
  }

  static int PullImage(const Containerd& ctd, const std::string& hosts_dir,
                       const DockerRegistry& registry, std::string* log) {
    return ctd.Ctr({"images", "pull", "--hosts-dir", hosts_dir, "--snapshotter", "native",
                    "--platform", "linux/amd64", registry.Host() + "/test/img:1"},
                   log);
  }

  // Every layer and the config are in containerd's content store, byte-identical to the pushed
  // ones, and the image is unpacked (ctr images check: complete, and a snapshot per layer).
  static void ExpectPulled(const TestImage& image, const Containerd& ctd,
                           const DockerRegistry& registry) {
    std::vector<Blob> blobs = image.layers;
    blobs.push_back(image.config);
    for (const Blob& b : blobs) {
      EXPECT_EQ(ctd.Blob(b.digest), ReadFile(b.path)) << b.digest;
    }
    std::string out;
    ASSERT_EQ(ctd.Ctr({"images", "check"}, &out), 0) << out;
    EXPECT_NE(out.find(registry.Host() + "/test/img:1"), std::string::npos) << out;
    EXPECT_NE(out.find("complete"), std::string::npos) << out;
    ASSERT_EQ(ctd.Ctr({"snapshots", "--snapshotter", "native", "ls"}, &out), 0) << out;
    EXPECT_GE(std::count(out.begin(), out.end(), '\n'), 1 + static_cast<long>(image.layers.size()))
        << out;
  }
};

// One node: the hosts.toml header names the upstream, every blob becomes a P2P task, and
// containerd gets the image unchanged.
TEST_F(OciContainerdTest, CtrPullsThroughTheMirrorThatPrintConfigConfigures) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 11, {700 * kKiB, 40 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);
  // The mirror's default upstream is somewhere else: only the header can make this work.
  auto daemon = StartMirror("peer", "http://127.0.0.1:9");
  Containerd ctd(dir_.path() + "/ctd");
  ASSERT_TRUE(ctd.ok()) << ReadFile(dir_.path() + "/ctd/containerd.log");

  std::string log;
  ASSERT_EQ(PullImage(ctd, HostsDir("node", registry, *daemon), registry, &log), 0) << log;
  ExpectPulled(image, ctd, registry);
  EXPECT_EQ(daemon->Requests("p2p"), 3) << log;  // 2 layers and the config
}

// Two nodes, each a containerd pulling through its own dfdaemon, with a scheduler and a seed:
// both get every layer, and the registry serves each layer's bytes once for the whole cluster
// (the seed's stat and one ranged GET per piece).
TEST_F(OciContainerdTest, TwoNodesPullingTogetherFetchEachLayerFromTheRegistryOnce) {
  DockerRegistry registry(dir_.path() + "/registry");
  ASSERT_TRUE(registry.ok());
  TestImage image = MakeImage(dir_.path() + "/img", 12, {6 * 1024 * kKiB, 300 * kKiB});
  ASSERT_EQ(Push(image, registry), 0);

  const uint16_t scheduler_port = StartSchedulerAndSeed();
  auto a = StartMirror("peer-a", registry.Url(), scheduler_port);
  auto b = StartMirror("peer-b", registry.Url(), scheduler_port);
  Containerd ctd_a(dir_.path() + "/ctd-a");
  Containerd ctd_b(dir_.path() + "/ctd-b");
  ASSERT_TRUE(ctd_a.ok() && ctd_b.ok());
  const std::string hosts_a = HostsDir("node-a", registry, *a);
  const std::string hosts_b = HostsDir("node-b", registry, *b);
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // hosts announced

  std::string log_a, log_b;
  auto pull_a =
      std::async(std::launch::async, [&] { return PullImage(ctd_a, hosts_a, registry, &log_a); });
  auto pull_b =
      std::async(std::launch::async, [&] { return PullImage(ctd_b, hosts_b, registry, &log_b); });
  ASSERT_EQ(pull_a.get(), 0) << log_a;
  ASSERT_EQ(pull_b.get(), 0) << log_b;
  ExpectPulled(image, ctd_a, registry);
  ExpectPulled(image, ctd_b, registry);
  EXPECT_EQ(a->Requests("p2p"), 3);
  EXPECT_EQ(b->Requests("p2p"), 3);

  for (const Blob& layer : image.layers) {
    const int pieces =
        static_cast<int>(layer.size / ChoosePieceLength(static_cast<int64_t>(layer.size)) + 1);
    const int gets = registry.BlobGets(layer.digest);
    EXPECT_GE(gets, 1);
    EXPECT_LE(gets, 1 + pieces) << layer.digest << ": more than one node fetched it itself";
  }
}

}  // namespace
}  // namespace df
