// dfbench: brings up a whole cluster on loopback (nginx origin, dfscheduler, a seed peer and N
// peers), downloads one generated file to every peer at once, and prints a summary: time per
// peer, bytes from the origin and from other peers, bytes the origin served, sha256 of every copy.
#include <limits.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "common/version.h"
#include "bench/local_cluster.h"
#include "common/digest.h"
#include "common/piece.h"
#include "common/units.h"

namespace {

std::string SelfSrcDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "src";
  buf[n] = 0;
  // <build>/src/bench/dfbench -> <build>/src
  return std::filesystem::path(buf).parent_path().parent_path().string();
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  // Ctrl-C or SIGTERM: exit() runs no destructors of locals, but every process the cluster
  // started dies with us (PR_SET_PDEATHSIG in the harness); only the work dir may stay behind.
  std::signal(SIGINT, [](int) { std::_Exit(130); });
  std::signal(SIGTERM, [](int) { std::_Exit(143); });
  CLI::App app{"dfbench: run a local P2P cluster on loopback and download one file to every peer"};
  app.set_version_flag("--version", df::VersionLine("dfbench"));
  int peers = 8;
  std::string size_text = "1GiB", piece_text, work_dir, evaluator = "default", origin_rate;
  bool json = false, keep = false;
  app.add_option("--peers", peers, "Number of peers (besides the seed)")
      ->capture_default_str()
      ->check(CLI::Range(1, 200));
  app.add_option("--size", size_text, "File size, e.g. 512MiB, 1GiB")->capture_default_str();
  app.add_option("--piece-length", piece_text, "Piece length, e.g. 4MiB (default: from the size)");
  app.add_option("--evaluator", evaluator, "Scheduler evaluator")->capture_default_str();
  app.add_option("--origin-rate", origin_rate, "nginx per-connection rate limit, e.g. 50m (MB/s)");
  app.add_option("--work-dir", work_dir,
                 "Directory for the cluster's files (default: a new temp dir)");
  std::vector<std::string> scheduler_args;
  app.add_option("--scheduler-arg", scheduler_args,
                 "Extra dfscheduler flag, repeatable; give it with '=' when it starts with '-' "
                 "(--scheduler-arg=--dataset-dir=DIR)");
  app.add_flag("--keep", keep, "Keep the work dir (logs, storage) afterwards");
  app.add_flag("--json", json, "Print the summary as one JSON object on the last line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // usage errors exit 2
  }
  auto size = df::ParseSize(size_text);
  if (!size.ok() || size.value() == 0) {
    std::fprintf(stderr, "dfbench: --size: %s\n",
                 size.ok() ? "must be > 0" : size.status().message().c_str());
    return 2;
  }
  uint64_t piece_length = 0;
  if (!piece_text.empty()) {
    auto p = df::ParseSize(piece_text);
    if (!p.ok() || !df::IsValidPieceLength(p.value())) {
      std::fprintf(stderr,
                   "dfbench: --piece-length must be a power of two between 64KiB and 1GiB\n");
      return 2;
    }
    piece_length = p.value();
  }
  std::unique_ptr<df::bench::TempDir> tmp;
  if (work_dir.empty()) {
    tmp = std::make_unique<df::bench::TempDir>();
    work_dir = tmp->path();
  }
  df::bench::ClusterOptions opts;
  opts.bin_dir = SelfSrcDir();
  opts.scheduler_args.insert(opts.scheduler_args.end(), scheduler_args.begin(),
                             scheduler_args.end());
  opts.work_dir = work_dir;
  opts.peers = peers;
  opts.evaluator = evaluator;
  opts.origin_limit_rate = origin_rate;
  df::bench::LocalCluster cluster(opts);
  std::fprintf(stderr,
               "dfbench: generating %s and starting origin, scheduler, seed and %d peers in %s\n",
               df::FormatBytes(static_cast<double>(size.value())).c_str(), peers, work_dir.c_str());
  std::filesystem::create_directories(cluster.OriginRoot());
  std::string sha = df::bench::MakeFile(cluster.OriginRoot() + "/file.bin", size.value());
  df::Status s = cluster.Start();
  if (!s.ok()) {
    std::fprintf(stderr, "dfbench: %s\n", s.message().c_str());
    keep = true;
    return 1;
  }
  std::string url = cluster.OriginUrl("file.bin");
  std::vector<std::future<df::bench::PeerResult>> futures;
  for (int i = 0; i < peers; ++i) {
    futures.push_back(
        std::async(std::launch::async, [&, i] { return cluster.Download(i, url, piece_length); }));
  }
  std::vector<df::bench::PeerResult> results;
  for (auto& f : futures) results.push_back(f.get());
  uint64_t origin_bytes = cluster.OriginBytesServed();

  bool all_ok = true;
  double last = 0;
  nlohmann::json jpeers = nlohmann::json::array();
  std::printf("%-8s %9s %14s %14s %s\n", "peer", "seconds", "from origin", "from peers", "sha256");
  for (auto& r : results) {
    bool sha_ok = false;
    if (r.ok) {
      auto got = df::Sha256File(r.output_path);
      sha_ok = got.ok() && got.value() == sha;
    }
    all_ok = all_ok && sha_ok;
    last = std::max(last, r.seconds);
    std::printf("%-8s %9.2f %14s %14s %s\n", r.name.c_str(), r.seconds,
                df::FormatBytes(static_cast<double>(r.bytes_from_origin)).c_str(),
                df::FormatBytes(static_cast<double>(r.bytes_from_peers)).c_str(),
                sha_ok ? "ok" : ("FAILED " + r.error).c_str());
    jpeers.push_back({{"name", r.name},
                      {"seconds", r.seconds},
                      {"bytes_from_origin", r.bytes_from_origin},
                      {"bytes_from_peers", r.bytes_from_peers},
                      {"sha256_ok", sha_ok},
                      {"error", r.error}});
  }
  std::printf(
      "file %s, %d peers: last peer finished after %.2f s (%.0f MB/s per peer); origin served %s "
      "(%.2fx the file); every sha256 %s\n",
      df::FormatBytes(static_cast<double>(size.value())).c_str(), peers, last,
      static_cast<double>(size.value()) / last / 1e6,
      df::FormatBytes(static_cast<double>(origin_bytes)).c_str(),
      static_cast<double>(origin_bytes) / static_cast<double>(size.value()),
      all_ok ? "matched" : "DID NOT match");
  if (json) {
    nlohmann::json j = {{"peers", peers},
                        {"file_bytes", size.value()},
                        {"last_peer_seconds", last},
                        {"origin_bytes_served", origin_bytes},
                        {"sha256_ok", all_ok},
                        {"evaluator", evaluator},
                        {"per_peer", jpeers}};
    std::printf("%s\n", j.dump().c_str());
  }
  if (keep && tmp) std::fprintf(stderr, "dfbench: kept %s\n", work_dir.c_str());
  if (keep && tmp) (void)tmp.release();
  return all_ok ? 0 : 1;
}
