// dfcache: the local dfdaemon's cache, managed over its local API (unix socket only):
//   dfcache list | stat URL|TASK | delete URL|TASK | import FILE --url URL | export URL|TASK -O
//   FILE | gc
// A URL names the task dfget would download for it (with the same --tag, --application,
// --piece-length and --filter); a 64-hex-digit argument is a task id.
//
// Exit codes: 0 success, 1 failed (not in the cache, digest mismatch...), 2 bad usage, 3 no
// dfdaemon at the socket (dfcache never starts one).
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/fd.h"
#include "common/local_socket.h"
#include "common/task_spec.h"
#include "common/units.h"
#include "common/version.h"
#include "dfcache/format.h"
#include "dfdaemon.grpc.pb.h"
#include "dfget/output.h"

namespace dv1 = df::dfdaemon::v1;

namespace {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoDaemon = 3;

int Fail(int code, const std::string& msg) {
  std::fprintf(stderr, "dfcache: %s\n", msg.c_str());
  return code;
}

struct Options {
  std::string sock = "/tmp/dfdaemon.sock";
  std::string target;  // URL or task id
  std::string file, url, output, digest, tag, application, piece_length_text;
  std::vector<std::string> filters;
};

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsTaskId(const std::string& s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// The spec of `url` as dfget would build it from the same flags.
df::Result<df::TaskSpec> SpecOf(const Options& o, const std::string& url) {
  df::TaskSpec spec;
  spec.url = url;
  spec.tag = o.tag;
  spec.application = o.application;
  spec.filtered_query_params = o.filters;
  if (!o.piece_length_text.empty()) {
    auto pl = df::ParseSize(o.piece_length_text);
    if (!pl.ok()) return df::InvalidArgument("--piece-length: " + pl.status().message());
    spec.piece_length = pl.value();
  }
  if (!o.digest.empty()) spec.digest = o.digest;
  df::UrlPolicy any;  // the daemon applies its own policy; here only the id is computed
  any.allow_any_file = true;
  DF_RETURN_IF_ERROR(df::ValidateTaskSpec(spec, any));
  return spec;
}

df::Result<std::string> TaskIdOf(const Options& o) {
  if (IsTaskId(o.target)) return o.target;
  auto spec = SpecOf(o, o.target);
  if (!spec.ok()) return spec.status();
  return df::TaskSpecId(*spec);
}

class Client {
 public:
  explicit Client(std::unique_ptr<dv1::DfdaemonDownload::Stub> stub) : stub_(std::move(stub)) {}
  dv1::DfdaemonDownload::Stub* operator->() { return stub_.get(); }
  static std::unique_ptr<grpc::ClientContext> Context(int seconds = 30) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }

 private:
  std::unique_ptr<dv1::DfdaemonDownload::Stub> stub_;
};

// Exit code for a failed RPC, with its message printed.
int RpcFail(const std::string& what, const grpc::Status& s) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return Fail(kExitNoDaemon, what + ": dfdaemon went away: " + s.error_message());
  }
  int code = s.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? kExitUsage : kExitFailed;
  return Fail(code, what + ": " + s.error_message());
}

int List(Client& c) {
  dv1::ListTasksResponse resp;
  auto ctx = Client::Context();
  if (auto s = c->ListTasks(ctx.get(), dv1::ListTasksRequest(), &resp); !s.ok()) {
    return RpcFail("list", s);
  }
  const int64_t now = NowUnixMs();
  std::printf("%-64s  %-16s  %10s  %-9s  %s\n", "TASK", "STATE", "SIZE", "LAST USE", "URL");
  for (const auto& t : resp.tasks()) {
    std::string size =
        t.content_length() >= 0 ? df::FormatBytes(static_cast<double>(t.content_length())) : "?";
    std::printf(
        "%-64s  %-16s  %10s  %-9s  %s\n", t.task_id().c_str(),
        df::FormatTaskState(t.done(), t.running(), t.finished_pieces(), t.total_pieces()).c_str(),
        size.c_str(), df::FormatAge(t.accessed_unix_ms(), now).c_str(),
        df::RedactUrl(t.url()).c_str());
  }
  return 0;
}

int Stat(Client& c, const Options& o) {
  auto id = TaskIdOf(o);
  if (!id.ok()) return Fail(kExitUsage, id.status().message());
  dv1::StatTaskRequest req;
  req.set_task_id(*id);
  dv1::StatTaskResponse r;
  auto ctx = Client::Context();
  grpc::Status s = c->StatTask(ctx.get(), req, &r);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    return Fail(kExitFailed, o.target + " is not in the cache (task " + *id + ")");
  }
  if (!s.ok()) return RpcFail("stat", s);
  std::printf(
      "task: %s\nurl: %s\nsize: %lld\npiece_length: %llu\npieces: %u/%u\nstate: %s\n"
      "content: %s\n",
      r.task_id().c_str(), df::RedactUrl(r.url()).c_str(),
      static_cast<long long>(r.content_length()), static_cast<unsigned long long>(r.piece_length()),
      r.finished_pieces(), r.total_pieces(), r.done() ? "done" : "partial",
      r.content_path().c_str());
  return 0;
}

int Delete(Client& c, const Options& o) {
  auto id = TaskIdOf(o);
  if (!id.ok()) return Fail(kExitUsage, id.status().message());
  dv1::DeleteTaskRequest req;
  req.set_task_id(*id);
  dv1::DeleteTaskResponse r;
  auto ctx = Client::Context();
  grpc::Status s = c->DeleteTask(ctx.get(), req, &r);
  if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
    return Fail(kExitFailed, o.target + " is not in the cache (task " + *id + ")");
  }
  if (!s.ok()) return RpcFail("delete", s);
  std::fprintf(stderr, "dfcache: deleted task %s\n", id->c_str());
  return 0;
}

int Import(Client& c, const Options& o) {
  auto spec = SpecOf(o, o.url);
  if (!spec.ok()) return Fail(kExitUsage, spec.status().message());
  // dfcache reads the file with the user's permissions; the daemon never opens a given path.
  df::UniqueFd fd(::open(o.file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Fail(kExitFailed, "open " + o.file + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Fail(kExitUsage, o.file + " is not a regular file");
  }
  auto ctx = Client::Context(3600);
  dv1::ImportTaskResponse resp;
  auto writer = c->ImportTask(ctx.get(), &resp);
  dv1::ImportTaskRequest msg;
  auto* h = msg.mutable_header();
  h->set_url(spec->url);
  h->set_tag(spec->tag);
  h->set_application(spec->application);
  h->set_piece_length(spec->piece_length);
  h->set_content_length(static_cast<uint64_t>(st.st_size));
  h->set_digest(spec->digest);
  bool open = writer->Write(msg);
  std::string chunk(1 << 20, '\0');
  uint64_t sent = 0;
  while (open && sent < static_cast<uint64_t>(st.st_size)) {
    ssize_t n = ::read(fd.get(), chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ctx->TryCancel();
      return Fail(kExitFailed, "read " + o.file + ": " +
                                   (n == 0 ? "it shrank while read" : std::strerror(errno)));
    }
    msg.set_data(chunk.data(), static_cast<size_t>(n));
    open = writer->Write(msg);
    sent += static_cast<uint64_t>(n);
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return RpcFail("import " + o.file, s);
  std::fprintf(stderr, "dfcache: %s task %s (%s)\n",
               resp.already_cached() ? "already cached:" : "imported", resp.task_id().c_str(),
               df::RedactUrl(spec->url).c_str());
  return 0;
}

// Copies a finished task to -O: placed atomically by the daemon for a file, streamed by dfcache
// for '-', a fifo or a character device. Never goes to peers or the origin.
int Export(Client& c, const Options& o) {
  if (IsTaskId(o.target)) {
    return Fail(kExitUsage, "export takes the URL (the daemon needs it to name the task)");
  }
  auto id = TaskIdOf(o);
  if (!id.ok()) return Fail(kExitUsage, id.status().message());
  {
    dv1::StatTaskRequest req;
    req.set_task_id(*id);
    dv1::StatTaskResponse r;
    auto ctx = Client::Context();
    grpc::Status s = c->StatTask(ctx.get(), req, &r);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND || (s.ok() && !r.done())) {
      return Fail(kExitFailed, o.target + " is not (fully) in the cache");
    }
    if (!s.ok()) return RpcFail("export", s);
  }
  auto target = df::ResolveOutput(o.output);
  if (!target.ok()) return Fail(kExitUsage, target.status().message());
  dv1::DownloadRequest req;
  req.set_url(o.target);
  req.set_tag(o.tag);
  req.set_application(o.application);
  auto spec = SpecOf(o, o.target);
  req.set_piece_length(spec->piece_length);
  for (const auto& f : o.filters) req.add_filtered_query_params(f);
  req.set_digest(o.digest);
  req.set_disable_back_to_source(true);
  if (target->kind == df::OutputTarget::kStream) {
    req.set_keep_output_in_cache_only(true);
  } else {
    req.set_output_path(target->path);
  }
  auto ctx = Client::Context(3600);
  auto reader = c->Download(ctx.get(), req);
  dv1::DownloadResponse resp, last;
  while (reader->Read(&resp)) last = resp;
  grpc::Status s = reader->Finish();
  if (!s.ok()) return RpcFail("export", s);
  if (last.state() != dv1::DOWNLOAD_STATE_SUCCEEDED) {
    return Fail(last.error_code() == dv1::ERROR_INVALID_ARGUMENT ? kExitUsage : kExitFailed,
                "export: " + last.error_message());
  }
  if (target->kind == df::OutputTarget::kStream) {
    df::ContentStreamer streamer(target->fd);
    df::Status st = streamer.Open(last.content_path());
    if (st.ok())
      st = streamer.CopyUpTo(static_cast<uint64_t>(std::max<int64_t>(0, last.content_length())));
    if (!st.ok()) return Fail(kExitFailed, target->path + ": " + st.message());
  }
  return 0;
}

int Gc(Client& c) {
  dv1::GarbageCollectResponse r;
  auto ctx = Client::Context(600);
  if (auto s = c->GarbageCollect(ctx.get(), dv1::GarbageCollectRequest(), &r); !s.ok()) {
    return RpcFail("gc", s);
  }
  std::fprintf(stderr, "dfcache: gc removed %u tasks\n", r.deleted_tasks());
  return 0;
}

void AddSpecFlags(CLI::App* cmd, Options& o) {
  cmd->add_option("--tag", o.tag, "Tag of the task (as given to dfget)");
  cmd->add_option("--application", o.application, "Application of the task (as given to dfget)");
  cmd->add_option("--piece-length", o.piece_length_text, "Piece length (as given to dfget)");
  cmd->add_option("--filter", o.filters, "Query parameter dropped from the task id (repeatable)");
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"dfcache: list, inspect, delete, import and export the local dfdaemon's cache"};
  app.set_version_flag("--version", df::VersionLine("dfcache"));
  app.require_subcommand(1);
  Options o;
  app.add_option("--daemon-sock", o.sock, "Unix socket of the local dfdaemon")
      ->capture_default_str();
  auto* list = app.add_subcommand("list", "Every task: id, state, size, last use, URL");
  auto* stat = app.add_subcommand("stat", "One task's details");
  stat->add_option("target", o.target, "URL or task id")->required();
  AddSpecFlags(stat, o);
  auto* del = app.add_subcommand("delete", "Remove a task's content and metadata");
  del->add_option("target", o.target, "URL or task id")->required();
  AddSpecFlags(del, o);
  auto* imp = app.add_subcommand("import", "Seed the cache with a file you already have");
  imp->add_option("file", o.file, "The file")->required();
  imp->add_option("--url", o.url, "The URL it is the content of")->required();
  imp->add_option("--digest", o.digest, "sha256:HEX the file must match");
  AddSpecFlags(imp, o);
  auto* exp = app.add_subcommand("export", "Copy a cached task out (never downloads)");
  exp->add_option("target", o.target, "URL")->required();
  exp->add_option("-O,--output", o.output, "Output file, or '-' for stdout")->required();
  exp->add_option("--digest", o.digest, "sha256:HEX the content must match");
  AddSpecFlags(exp, o);
  auto* gc = app.add_subcommand("gc", "Run garbage collection now (TTL, disk watermarks)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;
  }
  if (std::string why = df::UntrustedSocketReason(o.sock); !why.empty()) {
    return Fail(kExitNoDaemon, "refusing to use " + why);
  }
  if (int err = df::LocalSocketConnectError(o.sock); err != 0) {
    return Fail(kExitNoDaemon, err == EACCES ? df::PermissionDeniedMessage(o.sock)
                                             : "no dfdaemon is running at " + o.sock);
  }
  Client c(dv1::DfdaemonDownload::NewStub(
      grpc::CreateChannel("unix:" + o.sock, grpc::InsecureChannelCredentials())));
  if (list->parsed()) return List(c);
  if (stat->parsed()) return Stat(c, o);
  if (del->parsed()) return Delete(c, o);
  if (imp->parsed()) return Import(c, o);
  if (exp->parsed()) return Export(c, o);
  if (gc->parsed()) return Gc(c);
  return kExitUsage;
}
