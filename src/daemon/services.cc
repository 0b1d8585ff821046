#include "daemon/services.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <thread>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/http_syntax.h"
#include "common/task_info.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/redact.h"
#include "daemon/piece_protocol.h"

namespace df {

namespace dv1 = df::dfdaemon::v1;
using std::chrono::steady_clock;

dv1::ErrorCode ErrorCodeOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return dv1::ERROR_NONE;
    case StatusCode::kInvalidArgument:
      return dv1::ERROR_INVALID_ARGUMENT;
    case StatusCode::kNotFound:
      return dv1::ERROR_ORIGIN_NOT_FOUND;
    case StatusCode::kPermissionDenied:
      return dv1::ERROR_ORIGIN_FORBIDDEN;
    case StatusCode::kHttpError:
      return dv1::ERROR_ORIGIN_HTTP;
    case StatusCode::kUnavailable:
      return dv1::ERROR_ORIGIN_UNREACHABLE;
    case StatusCode::kDataLoss:
      return dv1::ERROR_DIGEST_MISMATCH;
    case StatusCode::kNoSpace:
      return dv1::ERROR_NO_SPACE;
    case StatusCode::kIoError:
      return dv1::ERROR_IO;
    case StatusCode::kDeadlineExceeded:
      return dv1::ERROR_TIMEOUT;
    case StatusCode::kCancelled:
      return dv1::ERROR_CANCELLED;
    case StatusCode::kInternal:
    case StatusCode::kAborted:
      return dv1::ERROR_INTERNAL;
  }
  return dv1::ERROR_INTERNAL;
}

namespace {

Status ValidateOutput(const dv1::DownloadRequest& req) {
  if (req.keep_output_in_cache_only()) return Status::Ok();
  const std::string& out = req.output_path();
  if (out.empty() || out[0] != '/') return InvalidArgument("output path must be absolute");
  if (out.back() == '/') return InvalidArgument("output path " + out + " is a directory");
  std::string dir = out.substr(0, out.rfind('/'));
  if (dir.empty()) dir = "/";
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgument("output directory " + dir + " does not exist");
  }
  return CheckOutputReplaceable(out);  // a directory, symlink or device is refused up front
}

// Every task id is 64 lowercase hex digits (ids.h). Anything else is refused before a lookup,
// and never echoed: an unbounded id quoted in the status would overflow the caller's metadata.
grpc::Status CheckTaskIdFormat(const std::string& id) {
  if (piece_protocol::IsWireTaskId(id)) return grpc::Status::OK;
  return {grpc::StatusCode::INVALID_ARGUMENT,
          "task id of " + std::to_string(id.size()) + " bytes is not 64 lowercase hex digits"};
}

void FillProgress(const TaskProgress& p, dv1::DownloadResponse* r) {
  r->set_peer_id(p.peer_id);
  r->set_content_length(p.content_length);
  r->set_completed_length(p.completed_length);
  r->set_finished_pieces(p.finished_pieces);
  r->set_total_pieces(p.total_pieces);
  r->set_piece_length(p.piece_length);
  r->set_bytes_from_origin(p.bytes_from_origin);
  r->set_bytes_from_peers(p.bytes_from_peers);
}

constexpr int kProgressIntervalMs = 100;

// What a local client needs to follow the content as it arrives (DownloadResponse 13-15).
void FillStreamState(const std::shared_ptr<TaskStorage>& storage, uint32_t* prefix_pieces,
                     dv1::DownloadResponse* r) {
  if (!storage) return;
  r->set_content_path(storage->content_path());
  r->set_ready_length(storage->FinishedPrefixBytes(prefix_pieces));
  r->set_receiving_length(storage->ReceivingBytes());
}

// Sends the final FAILED message; the RPC itself succeeds so that the client reads the error.
grpc::Status SendFailure(grpc::ServerWriter<dv1::DownloadResponse>* writer,
                         dv1::DownloadResponse resp, const Status& s) {
  resp.set_state(dv1::DOWNLOAD_STATE_FAILED);
  resp.set_error_code(ErrorCodeOf(s));
  resp.set_error_message(s.message());
  writer->Write(resp);
  return grpc::Status::OK;
}

}  // namespace

Status ValidateRequestHeaders(const std::map<std::string, std::string>& headers) {
  if (headers.size() > kMaxRequestHeaders) {
    return InvalidArgument(std::to_string(headers.size()) + " request headers; at most " +
                           std::to_string(kMaxRequestHeaders) + " are allowed");
  }
  size_t bytes = 0;
  for (const auto& [name, value] : headers) {
    bytes += name.size() + value.size();
    if (bytes > kMaxRequestHeaderBytes) {
      return InvalidArgument("request headers exceed " + std::to_string(kMaxRequestHeaderBytes) +
                             " bytes");
    }
    if (!http::IsToken(name)) {
      return InvalidArgument("request header name '" + Printable(name) + "' is not a token");
    }
    if (!http::IsFieldValue(value)) {
      return InvalidArgument("request header " + name + " has a control character in its value");
    }
  }
  return Status::Ok();
}

TaskRequest RequestOf(const TaskSpec& spec, std::map<std::string, std::string> headers) {
  TaskRequest req;
  req.task_id = TaskSpecId(spec);
  req.url = spec.url;
  req.headers = std::move(headers);
  req.tag = spec.tag;
  req.application = spec.application;
  req.digest = spec.digest;
  req.piece_length = spec.piece_length;
  req.filtered_query_params = spec.filtered_query_params;
  req.id_from_digest = spec.id_from_digest;
  return req;
}

grpc::Status DownloadService::Download(grpc::ServerContext* ctx, const dv1::DownloadRequest* req,
                                       grpc::ServerWriter<dv1::DownloadResponse>* writer) {
  dv1::DownloadResponse resp;
  TaskSpec spec = SpecOf(*req);
  std::map<std::string, std::string> headers(req->request_headers().begin(),
                                             req->request_headers().end());
  Status valid = ValidateTaskSpec(spec, trust_->url_policy);
  if (valid.ok()) valid = ValidateRequestHeaders(headers);
  if (valid.ok()) valid = ValidateOutput(*req);
  if (!valid.ok()) {
    // The message may quote the URL or a header: only its kind is logged (the client has it).
    DF_LOG_INFO("download request refused url={} reason={}", RedactUrl(spec.url),
                StatusCodeName(valid.code()));
    return SendFailure(writer, resp, valid);
  }

  TaskRequest treq = RequestOf(spec, std::move(headers));
  treq.disable_back_to_source = req->disable_back_to_source();
  resp.set_task_id(treq.task_id);
  DF_LOG_INFO("download requested by a local client task_id={} url={}", treq.task_id,
              RedactUrl(treq.url));
  // Every end of the client's stream says why (the task itself logs its own end).
  auto fail = [&](const Status& s) {
    DF_LOG_WARN("download stream ended task_id={} reason={}", treq.task_id, s.ToString());
    return SendFailure(writer, resp, s);
  };

  auto acquired = manager_->Acquire(treq);
  if (!acquired.ok()) return fail(acquired.status());
  auto task = std::move(acquired).value();
  auto deadline = req->timeout_ms()
                      ? steady_clock::now() + std::chrono::milliseconds(req->timeout_ms())
                      : steady_clock::time_point::max();
  resp.set_state(dv1::DOWNLOAD_STATE_STARTED);
  resp.set_content_length(-1);  // not known yet (proto3's default 0 would say "empty")
  writer->Write(resp);
  uint32_t prefix_pieces = 0;  // finished prefix so far (FinishedPrefixBytes' cursor)
  for (;;) {
    // 10 updates a second: a progress bar redraws from them, and a client streaming the file
    // (dfget -O -) copies the finished prefix as it grows.
    bool finished = task->WaitFinished(kProgressIntervalMs);
    TaskProgress p = task->Progress();
    FillProgress(p, &resp);
    FillStreamState(task->storage(), &prefix_pieces, &resp);
    if (finished) {
      if (!p.status.ok()) return fail(p.status);
      break;
    }
    if (ctx->IsCancelled()) {
      // The task goes on for the cache (and for other clients); only this stream ends.
      DF_LOG_INFO("download stream ended task_id={} reason=client cancelled (went away)",
                  treq.task_id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    if (steady_clock::now() > deadline) {
      return fail(
          Status(StatusCode::kDeadlineExceeded, "client timeout: download did not finish within " +
                                                    std::to_string(req->timeout_ms()) + " ms"));
    }
    resp.set_state(dv1::DOWNLOAD_STATE_RUNNING);
    writer->Write(resp);
  }
  auto storage = task->storage();
  if (!req->digest().empty()) {
    Status d = VerifyDigest(storage->content_path(), req->digest());
    if (!d.ok()) {
      DF_LOG_WARN("digest mismatch task_id={}: {}", treq.task_id, d.message());
      // A wrong --digest must not cost a good cache: delete the content only when it no longer
      // matches its own per-piece CRC32Cs, so that a retry fetches it again.
      Status intact = storage->VerifyContent();
      if (!intact.ok()) {
        DF_LOG_WARN("deleting corrupt cached content task_id={}: {}", treq.task_id,
                    intact.message());
        (void)store_->DeleteTask(treq.task_id);
        d = DataLoss(d.message() + "; the cached copy was corrupt and was deleted (" +
                     intact.message() + "), a retry downloads it again");
      }
      return fail(d);
    }
  }
  if (!req->keep_output_in_cache_only()) {
    Status o =
        PlaceOutput(storage->content_path(), resp.content_length() > 0 ? resp.content_length() : 0,
                    req->output_path());
    if (!o.ok()) return fail(o);
  }
  resp.set_ready_length(resp.content_length() > 0 ? resp.content_length() : 0);
  resp.set_receiving_length(0);
  resp.set_state(dv1::DOWNLOAD_STATE_SUCCEEDED);
  writer->Write(resp);
  DF_LOG_INFO("download stream ended task_id={} reason=succeeded bytes={}", treq.task_id,
              resp.content_length());
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoStatTask(const dv1::StatTaskRequest* req,
                                         dv1::StatTaskResponse* resp) {
  if (grpc::Status id = CheckTaskIdFormat(req->task_id()); !id.ok()) return id;
  auto t = store_->FindTask(req->task_id());
  if (!t) return grpc::Status(grpc::StatusCode::NOT_FOUND, "task " + req->task_id() + " not found");
  TaskMeta m = t->meta();
  resp->set_task_id(m.task_id);
  resp->set_url(m.url);
  resp->set_content_length(m.content_length);
  resp->set_piece_length(m.piece_length);
  if (m.content_length >= 0 && m.piece_length > 0)
    resp->set_total_pieces(t->layout().total_pieces());
  resp->set_finished_pieces(t->finished_count());
  resp->set_done(t->done());
  resp->set_content_path(t->content_path());
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoDeleteTask(const dv1::DeleteTaskRequest* req) {
  if (grpc::Status id = CheckTaskIdFormat(req->task_id()); !id.ok()) return id;
  DF_LOG_INFO("task {} cancelled and deleted over the local API", req->task_id());
  manager_->Cancel(req->task_id());
  Status s = store_->DeleteTask(req->task_id());
  if (s.code() == StatusCode::kNotFound)
    return grpc::Status(grpc::StatusCode::NOT_FOUND, s.message());
  if (!s.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, s.message());
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoListTasks(dv1::ListTasksResponse* resp) {
  for (const TaskMeta& listed : store_->ListTasks()) {
    // FindTask drops a task whose content file was removed by hand: the list shows what is.
    auto t = store_->FindTask(listed.task_id);
    if (!t) continue;
    TaskMeta m = t->meta();
    dv1::CachedTask* c = resp->add_tasks();
    c->set_task_id(m.task_id);
    c->set_url(m.url);
    c->set_content_length(m.content_length);
    c->set_piece_length(m.piece_length);
    if (m.content_length >= 0 && m.piece_length > 0)
      c->set_total_pieces(t->layout().total_pieces());
    c->set_finished_pieces(t->finished_count());
    c->set_done(t->done());
    auto running = manager_->Find(m.task_id);
    c->set_running(running && !running->Progress().finished && !running->cancelled());
    c->set_created_unix_ms(m.created_unix_ms);
    c->set_accessed_unix_ms(m.accessed_unix_ms);
  }
  return grpc::Status::OK;
}

Result<std::vector<uint32_t>> DownloadService::ReceiveImport(
    grpc::ServerReader<dv1::ImportTaskRequest>* reader, TaskStorage& storage,
    const PieceLayout& layout, const std::string& digest) {
  std::vector<uint32_t> crcs(layout.total_pieces(), 0);
  std::optional<Sha256> sha;
  if (!digest.empty()) sha.emplace();
  uint64_t offset = 0;
  dv1::ImportTaskRequest msg;
  while (reader->Read(&msg)) {
    if (msg.part_case() != dv1::ImportTaskRequest::kData) {
      return InvalidArgument("import: a second header");
    }
    const std::string& data = msg.data();
    if (data.size() > layout.content_length - offset) {
      return InvalidArgument("import: more bytes than the content length " +
                             std::to_string(layout.content_length));
    }
    // Split at piece boundaries: each piece's CRC32C covers its own bytes only.
    size_t used = 0;
    while (used < data.size()) {
      PieceNumber n{static_cast<uint32_t>(offset / layout.piece_length)};
      uint64_t piece_end = layout.offset(n) + layout.length(n);
      size_t len = static_cast<size_t>(std::min<uint64_t>(data.size() - used, piece_end - offset));
      crcs[n.value] = Crc32cExtend(crcs[n.value], data.data() + used, len);
      if (sha) sha->Update(data.data() + used, len);
      DF_RETURN_IF_ERROR(WriteAllAt(storage.content_fd(), data.data() + used, len, offset,
                                    "write " + storage.content_path()));
      used += len;
      offset += len;
    }
  }
  if (offset != layout.content_length) {
    return InvalidArgument("import: got " + std::to_string(offset) + " bytes of " +
                           std::to_string(layout.content_length));
  }
  if (sha) {
    auto want = ParseDigest(digest);
    if (!want.ok()) return want.status();
    std::string got = sha->FinalHex();
    if (got != want->hex) {
      return DataLoss("digest mismatch: want sha256:" + want->hex + ", got sha256:" + got);
    }
  }
  return crcs;
}

namespace {

grpc::Status ToGrpc(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return grpc::Status::OK;
    case StatusCode::kInvalidArgument:
      return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
    case StatusCode::kDataLoss:
      return {grpc::StatusCode::DATA_LOSS, s.message()};
    case StatusCode::kNotFound:
      return {grpc::StatusCode::NOT_FOUND, s.message()};
    case StatusCode::kNoSpace:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, s.message()};
    default:
      return {grpc::StatusCode::INTERNAL, s.message()};
  }
}

}  // namespace

grpc::Status DownloadService::ImportTask(grpc::ServerContext*,
                                         grpc::ServerReader<dv1::ImportTaskRequest>* reader,
                                         dv1::ImportTaskResponse* resp) {
  dv1::ImportTaskRequest first;
  if (!reader->Read(&first) || first.part_case() != dv1::ImportTaskRequest::kHeader) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "import: the first message must be the header"};
  }
  const dv1::ImportTaskHeader& h = first.header();
  TaskSpec spec;
  spec.url = h.url();
  spec.tag = h.tag();
  spec.application = h.application();
  spec.piece_length = h.piece_length();
  spec.digest = h.digest();
  Status valid = ValidateTaskSpec(spec, trust_->url_policy);
  if (!valid.ok()) return ToGrpc(valid);
  if (h.content_length() > static_cast<uint64_t>(INT64_MAX)) {
    return {grpc::StatusCode::INVALID_ARGUMENT, "import: content length out of range"};
  }
  const int64_t length = static_cast<int64_t>(h.content_length());
  auto layout = ExpectedLayout(spec.piece_length, length);
  if (!layout.ok()) return ToGrpc(layout.status());
  const std::string id = TaskSpecId(spec);
  resp->set_task_id(id);
  if (auto running = manager_->Find(id); running && !running->Progress().finished) {
    return {grpc::StatusCode::FAILED_PRECONDITION,
            "a download of task " + id + " is running; import it once it is over"};
  }
  if (auto existing = store_->FindTask(id);
      existing && existing->done() && !existing->ContentModifiedSinceDone()) {
    resp->set_already_cached(true);
    return grpc::Status::OK;
  }
  (void)store_->DeleteTask(id);  // a partial or stale copy: the import replaces it
  TaskMeta meta;
  meta.task_id = id;
  meta.url = spec.url;
  meta.digest = spec.digest;
  auto storage = store_->OpenTask(meta);
  if (!storage.ok()) return ToGrpc(storage.status());
  Status s = (*storage)->SetContentLength(length, layout->piece_length);
  Result<std::vector<uint32_t>> crcs = s.ok()
                                           ? ReceiveImport(reader, **storage, *layout, spec.digest)
                                           : Result<std::vector<uint32_t>>(s);
  for (uint32_t n = 0; crcs.ok() && s.ok() && n < crcs->size(); ++n) {
    s = (*storage)->CommitPiece(PieceNumber{n}, (*crcs)[n]);
  }
  if (!crcs.ok()) s = crcs.status();
  if (!s.ok()) {
    // A digest mismatch among them: the import is refused, nothing of it kept.
    DF_LOG_WARN("import of task {} url={} refused: {}", id, RedactUrl(spec.url), s.ToString());
    storage->reset();
    (void)store_->DeleteTask(id);  // nothing half-imported stays
    return ToGrpc(s);
  }
  DF_LOG_INFO("imported task {} url={}, {} bytes", id, RedactUrl(spec.url), length);
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoGarbageCollect(dv1::GarbageCollectResponse* resp) {
  if (!control_) return {grpc::StatusCode::UNIMPLEMENTED, "no daemon control"};
  manager_->Reap();  // finished downloads nobody follows no longer hold their storage
  auto deleted = store_->CollectGarbage(control_->gc_policy);
  if (!deleted.ok()) return ToGrpc(deleted.status());
  resp->set_deleted_tasks(static_cast<uint32_t>(*deleted));
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoGetDaemonStatus(dv1::DaemonStatus* resp) {
  if (!control_ || !control_->fill_status) {
    return {grpc::StatusCode::UNIMPLEMENTED, "no daemon control"};
  }
  control_->fill_status(resp);
  return grpc::Status::OK;
}

grpc::Status DownloadService::DoStopDaemon(dv1::StopDaemonResponse* resp) {
  if (!control_ || !control_->request_stop) {
    return {grpc::StatusCode::UNIMPLEMENTED, "no daemon control"};
  }
  DF_LOG_INFO("stop requested over the local API");
  resp->set_pid(static_cast<uint32_t>(::getpid()));
  control_->request_stop();
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<dv1::PieceAvailability>* UploadService::SyncPieces(
    grpc::CallbackServerContext* ctx, const dv1::SyncPiecesRequest* req) {
  // Refused callers are not logged: strangers could flood the log.
  grpc::Status refused = trust_->auth.Check(*ctx);
  if (refused.ok()) refused = CheckTaskIdFormat(req->task_id());
  if (!refused.ok()) return AvailabilityStreams::Refuse(refused);
  return streams_.Open(*req);
}

grpc::Status UploadService::CheckTrigger(const grpc::ServerContextBase& ctx) const {
  if (!trust_->seed) {
    return {grpc::StatusCode::FAILED_PRECONDITION, "this daemon is not a seed peer"};
  }
  if (trust_->auth.authenticates_callers()) return trust_->auth.Check(ctx);
  // No token, no TLS: the scheduler is recognised by its address, the narrowest check left.
  std::string ip = PeerIp(ctx.peer());
  for (const std::string& allowed : trust_->scheduler_ips) {
    if (ip == allowed) return grpc::Status::OK;
  }
  return {grpc::StatusCode::PERMISSION_DENIED,
          "seed downloads are triggered only by this daemon's scheduler"};
}

grpc::Status UploadService::DoTriggerDownloadTask(const grpc::ServerContextBase* ctx,
                                                  const dv1::TriggerDownloadTaskRequest* req) {
  if (grpc::Status allowed = CheckTrigger(*ctx); !allowed.ok()) {
    DF_LOG_WARN("refused seed trigger from {}: {}", ctx->peer(), allowed.error_message());
    return allowed;
  }
  const auto& info = req->task();
  TaskSpec spec = SpecOf(info);
  std::map<std::string, std::string> headers(info.request_headers().begin(),
                                             info.request_headers().end());
  Status s = ValidateTaskSpec(spec, trust_->url_policy);
  if (s.ok()) s = ValidateRequestHeaders(headers);
  if (!s.ok()) return {grpc::StatusCode::INVALID_ARGUMENT, s.message()};
  s = CheckTaskId(spec, info.task_id());
  if (!s.ok()) return {grpc::StatusCode::PERMISSION_DENIED, s.message()};
  TaskRequest treq = RequestOf(spec, std::move(headers));
  DF_LOG_INFO("seed download triggered for task {} url={}", treq.task_id, RedactUrl(treq.url));
  auto task = manager_->Acquire(treq);
  if (!task.ok()) return {grpc::StatusCode::RESOURCE_EXHAUSTED, task.status().message()};
  return grpc::Status::OK;
}

}  // namespace df
