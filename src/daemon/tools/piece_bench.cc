// df_piece_bench: one parent -> one child piece throughput over the piece data protocol.
//
// Imports FILE into a parent PieceStore as a finished task (skipped when the store already
// holds it), starts a PieceServer on loopback, and fetches every piece with PieceClients
// (--connections of them, pieces handed out in order) into a fresh task of a child PieceStore,
// committing each piece as the daemon does. Prints one line:
//   bytes=<n> seconds=<s> rate_mib_per_sec=<r> connections=<c> piece_length=<p>
// The timed part is from the first request to the last commit. Used by
// bench/piece_throughput.sh, which compares it with nginx + curl on the same file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/version.h"
#include "common/crc32c.h"
#include "common/digest.h"
#include "common/fd.h"
#include "common/ids.h"
#include "common/log.h"
#include "common/piece.h"
#include "daemon/piece_client.h"
#include "daemon/piece_server.h"
#include "storage/piece_store.h"

namespace df {
namespace {

struct BenchOptions {
  std::string file;
  std::string parent_dir;
  std::string child_dir;
  uint64_t piece_length = 0;  // 0 = the daemon's rule
  int connections = 1;
  size_t chunk_bytes = PieceClientOptions{}.chunk_bytes;
  std::string congestion_control = "cubic";
  uint64_t rate_limit_bytes_per_sec = 0;
  // Diagnostic: the child writes to /dev/null and commits nothing (what curl -o /dev/null does).
  bool discard = false;
  // The child checks each piece against its origin sha256 before committing it, as a peer does
  // with pieces from a parent (docs/security.md); the expected digests are computed untimed.
  bool verify_sha256 = false;
};

// Thread CPU time (user + system) of the calling thread, in seconds.
double ThreadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Copies `file` into `task` piece by piece and commits each piece with its CRC32C.
Status ImportFile(const std::string& file, TaskStorage& task) {
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ErrnoStatus("open " + file, errno);
  PieceLayout layout = task.layout();
  std::vector<char> buf(layout.piece_length);
  for (uint32_t i = 0; i < layout.total_pieces(); ++i) {
    PieceNumber n{i};
    size_t length = layout.length(n);
    auto offset = static_cast<off_t>(layout.offset(n));
    if (::pread(in.get(), buf.data(), length, offset) != static_cast<ssize_t>(length)) {
      return ErrnoStatus("read " + file, errno ? errno : EIO);
    }
    if (::pwrite(task.content_fd(), buf.data(), length, offset) != static_cast<ssize_t>(length)) {
      return ErrnoStatus("write " + task.content_path(), errno ? errno : EIO);
    }
    DF_RETURN_IF_ERROR(task.CommitPiece(n, Crc32c(buf.data(), length)));
  }
  return Status::Ok();
}

Result<std::shared_ptr<TaskStorage>> OpenSource(PieceStore& store, const BenchOptions& o,
                                                const std::string& task_id, int64_t size) {
  TaskMeta meta{.task_id = task_id,
                .url = "file://" + o.file,
                .content_length = size,
                .piece_length = o.piece_length};
  auto task = store.OpenTask(meta);
  if (!task.ok() || (*task)->done()) return task;
  std::fprintf(stderr, "importing %s into %s\n", o.file.c_str(), o.parent_dir.c_str());
  DF_RETURN_IF_ERROR(ImportFile(o.file, **task));
  return task;
}

// Fetches pieces handed out by `next` until none is left; returns the first error.
Status FetchAll(const BenchOptions& o, uint16_t port, const std::string& task_id, TaskStorage& dest,
                std::atomic<uint32_t>& next, const std::vector<std::array<uint8_t, 32>>& digests) {
  PieceClientOptions copts;
  copts.chunk_bytes = o.chunk_bytes;
  copts.congestion_control = o.congestion_control;
  PieceClient client("127.0.0.1", port, copts);
  PieceLayout layout = dest.layout();
  UniqueFd null_fd(o.discard ? ::open("/dev/null", O_WRONLY | O_CLOEXEC) : -1);
  int dest_fd = o.discard ? null_fd.get() : dest.content_fd();
  for (uint32_t i = next++; i < layout.total_pieces(); i = next++) {
    PieceNumber n{i};
    auto r = client.FetchPiece(task_id, n, layout.offset(n), layout.length(n), dest_fd);
    if (!r.ok()) return r.status();
    if (o.discard) continue;
    if (o.verify_sha256) {
      auto got = Sha256Range(dest_fd, layout.offset(n), layout.length(n));
      if (!got.ok()) return got.status();
      if (got.value() != digests[i]) return DataLoss("piece " + std::to_string(i) + " digest");
    }
    DF_RETURN_IF_ERROR(dest.CommitPiece(n, r->crc32c));
  }
  return Status::Ok();
}

// Fetches pieces handed out by `next` until none is left; returns the first error. Adds the
// thread's CPU time to `cpu_seconds`.
Status FetchWorker(const BenchOptions& o, uint16_t port, const std::string& task_id,
                   TaskStorage& dest, std::atomic<uint32_t>& next,
                   const std::vector<std::array<uint8_t, 32>>& digests,
                   std::atomic<double>& cpu_seconds) {
  double cpu_start = ThreadCpuSeconds();
  Status s = FetchAll(o, port, task_id, dest, next, digests);
  double used = ThreadCpuSeconds() - cpu_start;
  for (double cur = cpu_seconds.load(); !cpu_seconds.compare_exchange_weak(cur, cur + used);) {
  }
  return s;
}

Status Run(const BenchOptions& o) {
  struct stat st {};
  if (::stat(o.file.c_str(), &st) != 0) return ErrnoStatus("stat " + o.file, errno);
  BenchOptions opts = o;
  if (opts.piece_length == 0) opts.piece_length = ChoosePieceLength(st.st_size);
  std::string task_id =
      TaskId(TaskIdInput{.url = "file://" + o.file, .piece_length = opts.piece_length});

  auto parent_store = PieceStore::Open(o.parent_dir);
  if (!parent_store.ok()) return parent_store.status();
  auto source = OpenSource(**parent_store, opts, task_id, st.st_size);
  if (!source.ok()) return source.status();

  PieceServerOptions sopts;
  sopts.ip = "127.0.0.1";
  sopts.port = 0;
  sopts.congestion_control = opts.congestion_control;
  sopts.upload_rate_bytes_per_sec = opts.rate_limit_bytes_per_sec;
  PieceStore* store = parent_store->get();
  PieceServer server(sopts, [store](const std::string& id) { return store->FindTask(id); });
  DF_RETURN_IF_ERROR(server.Start());

  auto child_store = PieceStore::Open(o.child_dir);
  if (!child_store.ok()) return child_store.status();
  (void)(*child_store)->DeleteTask(task_id);  // every run starts empty
  TaskMeta meta{
      .task_id = task_id, .content_length = st.st_size, .piece_length = opts.piece_length};
  auto dest = (*child_store)->OpenTask(meta);
  if (!dest.ok()) return dest.status();

  std::vector<std::array<uint8_t, 32>> digests;  // what the seed reports, computed untimed
  if (opts.verify_sha256) {
    PieceLayout layout = (*source)->layout();
    for (uint32_t i = 0; i < layout.total_pieces(); ++i) {
      auto d = Sha256Range((*source)->content_fd(), layout.offset(PieceNumber{i}),
                           layout.length(PieceNumber{i}));
      if (!d.ok()) return d.status();
      digests.push_back(d.value());
    }
  }
  std::atomic<uint32_t> next{0};
  std::atomic<double> cpu_seconds{0};
  std::vector<Status> results(static_cast<size_t>(opts.connections));
  std::vector<std::thread> workers;
  auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < opts.connections; ++c) {
    workers.emplace_back([&, c] {
      results[static_cast<size_t>(c)] =
          FetchWorker(opts, server.port(), task_id, **dest, next, digests, cpu_seconds);
    });
  }
  for (auto& w : workers) w.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  server.Stop();
  for (const Status& s : results) DF_RETURN_IF_ERROR(s);
  if (!opts.discard && !(*dest)->done())
    return Internal("child task not done after fetching every piece");
  auto bytes = static_cast<double>(st.st_size);
  std::printf(
      "bytes=%lld seconds=%.3f rate_mib_per_sec=%.1f connections=%d piece_length=%llu "
      "client_cpu_seconds=%.3f\n",
      static_cast<long long>(st.st_size), seconds, bytes / seconds / (1 << 20), opts.connections,
      static_cast<unsigned long long>(opts.piece_length), cpu_seconds.load());
  (void)(*child_store)->DeleteTask(task_id);
  return Status::Ok();
}

}  // namespace
}  // namespace df

int main(int argc, char** argv) {
  df::BenchOptions o;
  CLI::App app{"Piece data protocol throughput: one parent -> one child on loopback"};
  app.set_version_flag("--version", df::VersionLine("df_piece_bench"));
  app.add_option("--file", o.file, "file to serve")->required();
  app.add_option("--parent-dir", o.parent_dir, "parent PieceStore (imported once)")->required();
  app.add_option("--child-dir", o.child_dir, "child PieceStore")->required();
  app.add_option("--piece-length", o.piece_length, "bytes; 0 = the daemon's rule");
  app.add_option("--connections", o.connections, "parallel connections")->check(CLI::Range(1, 64));
  app.add_option("--chunk-bytes", o.chunk_bytes, "client receive buffer")
      ->check(CLI::Range(size_t{4096}, size_t{1} << 28));
  app.add_option("--congestion-control", o.congestion_control, "per-socket TCP congestion control");
  app.add_option("--rate-limit", o.rate_limit_bytes_per_sec, "server upload limit, bytes/s");
  app.add_flag("--verify-sha256", o.verify_sha256,
               "check each piece against its sha256 before committing it (as a peer does)");
  app.add_flag("--discard", o.discard, "diagnostic: write received pieces to /dev/null");
  CLI11_PARSE(app, argc, argv);
  (void)df::InitLogging("df_piece_bench", "warn");
  df::Status s = df::Run(o);
  if (!s.ok()) {
    std::fprintf(stderr, "df_piece_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
