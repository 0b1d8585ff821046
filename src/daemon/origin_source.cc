#include "daemon/origin_source.h"

#include <algorithm>
#include <memory>

#include "common/crc32c.h"
#include "common/digest.h"
#include "common/fd.h"
#include "common/redact.h"

namespace df {

namespace {
constexpr int64_t kConnectTimeoutMs = 10000;

Status Cancelled() { return Status(StatusCode::kCancelled, "download cancelled"); }
}  // namespace

OriginSource::OriginSource(BackendRegistry* backends, std::string url,
                           std::map<std::string, std::string> headers, int64_t timeout_ms)
    : backends_(backends),
      url_(std::move(url)),
      headers_(std::move(headers)),
      timeout_ms_(timeout_ms) {}

Result<Backend*> OriginSource::BackendFor() const { return backends_->ForUrl(url_); }

Result<ObjectInfo> OriginSource::Stat(const Backoff& backoff) const {
  auto backend = BackendFor();
  if (!backend.ok()) return backend.status();
  // Each try is bounded by the timeout.
  const BackendRequest req{url_, headers_, timeout_ms_, kConnectTimeoutMs};
  auto info = backend.value()->Stat(req);
  for (int attempt = 1; !info.ok() && attempt < kStatAttempts &&
                        (info.status().code() == StatusCode::kUnavailable ||
                         info.status().code() == StatusCode::kDeadlineExceeded);
       ++attempt) {
    if (!backoff(std::chrono::milliseconds(250 << attempt))) return Cancelled();
    info = backend.value()->Stat(req);
  }
  if (!info.ok()) return info.status();
  if (info->content_length < 0) {
    return Status(StatusCode::kHttpError,
                  RedactUrl(url_) +
                      ": origin did not report a size (chunked responses are not supported yet)");
  }
  return info;
}

Status OriginSource::FetchPiece(const PieceLayout& layout, PieceNumber n, int fd,
                                TaskStorage* storage, const KeepGoing& keep_going,
                                PieceChecksums* out) const {
  auto backend = BackendFor();
  if (!backend.ok()) return backend.status();
  const uint64_t start = layout.offset(n);
  uint64_t offset = start;
  uint32_t crc = 0;
  Sha256 digest;
  storage->BeginReceive(n);
  ByteSink sink = [&](const char* data, size_t len) -> Status {
    crc = Crc32cExtend(crc, data, len);
    digest.Update(data, len);
    DF_RETURN_IF_ERROR(WriteAllAt(fd, data, len, offset, "write piece"));
    offset += len;
    storage->AdvanceReceive(n, offset - start);
    return keep_going() ? Status::Ok() : Cancelled();
  };
  const BackendRequest req{url_, headers_, timeout_ms_, kConnectTimeoutMs};
  DF_RETURN_IF_ERROR(
      backend.value()->Read(req, start, static_cast<int64_t>(layout.length(n)), sink));
  out->crc32c = crc;
  out->sha256 = digest.FinalBytes();
  return Status::Ok();
}

Status OriginSource::StreamWhole(const PieceLayout& layout, int fd, const KeepGoing& keep_going,
                                 const OnPiece& on_piece) const {
  auto backend = BackendFor();
  if (!backend.ok()) return backend.status();
  uint64_t offset = 0;
  uint32_t piece = 0;
  uint32_t crc = 0;
  auto digest = std::make_unique<Sha256>();
  ByteSink sink = [&](const char* data, size_t len) -> Status {
    while (len > 0) {
      const PieceNumber n{piece};
      const uint64_t piece_end = layout.offset(n) + layout.length(n);
      const size_t take = static_cast<size_t>(std::min<uint64_t>(len, piece_end - offset));
      crc = Crc32cExtend(crc, data, take);
      digest->Update(data, take);
      DF_RETURN_IF_ERROR(WriteAllAt(fd, data, take, offset, "write piece"));
      offset += take;
      data += take;
      len -= take;
      if (offset == piece_end) {
        DF_RETURN_IF_ERROR(on_piece(n, PieceChecksums{crc, digest->FinalBytes()}));
        digest = std::make_unique<Sha256>();
        crc = 0;
        ++piece;
      }
    }
    return keep_going() ? Status::Ok() : Cancelled();
  };
  // No overall timeout (the whole object may take long); the backend ends a stalled transfer.
  const BackendRequest req{url_, headers_, 0, kConnectTimeoutMs};
  // Never more than the layout's size: the sink indexes pieces by offset.
  DF_RETURN_IF_ERROR(
      backend.value()->Read(req, 0, static_cast<int64_t>(layout.content_length), sink));
  if (offset != layout.content_length)
    return DataLoss(RedactUrl(url_) + ": origin sent a short body");
  return Status::Ok();
}

}  // namespace df
