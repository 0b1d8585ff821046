// Wire constants and frame encoding of the piece data protocol; see docs/piece_protocol.md.
// All integers on the wire are big-endian. Header-only; every function is pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace df::piece_protocol {

constexpr uint16_t kMagic = 0xDF50;
constexpr uint8_t kVersion = 1;

enum class FrameType : uint8_t {
  kRequestPiece = 1,
  kPiece = 2,
  kError = 3,
  kPing = 4,
  kPong = 5,
  kPieceEnd = 6,  // ends a cut-through PIECE (see kPieceFlagCutThrough)
};

// Frame header flags.
// REQUEST_PIECE: the child accepts the piece while the parent is still receiving it.
constexpr uint32_t kRequestFlagCutThrough = 1;
// PIECE: the payload is forwarded as it arrives at the parent, not yet verified there; the
// header's crc32c is 0, and a PIECE_END frame follows the payload with the CRC32C of the piece
// the parent verified and committed. If the parent's own receive fails, it closes the
// connection in the middle of the payload instead.
constexpr uint32_t kPieceFlagCutThrough = 1;

enum class ErrorCode : uint16_t {
  kNotFound = 1,            // no such task or piece; connection stays open
  kNotReady = 2,            // piece not verified yet; connection stays open
  kBadRequest = 3,          // malformed frame; connection closed
  kUnsupportedVersion = 4,  // connection closed
  kBusy = 5,                // connection limit reached; connection closed
  kInternal = 6,            // parent storage failure; connection closed
};

constexpr size_t kHeaderBytes = 12;
constexpr size_t kTaskIdBytes = 64;
constexpr size_t kRequestBodyBytes = kTaskIdBytes + 4;  // task id + piece number
constexpr size_t kPieceBodyBytes = 24;                  // number, crc32c, offset, length
constexpr size_t kPingBodyBytes = 8;
constexpr size_t kPieceEndBodyBytes = 8;  // number, crc32c
constexpr size_t kErrorFixedBytes = 4;    // code + reserved
constexpr size_t kMaxErrorMessageBytes = 1024;
constexpr size_t kMaxBodyBytes = 4096;  // no frame body is ever larger

// ---- Big-endian helpers.
inline void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
inline void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (56 - 8 * i));
}
inline uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | p[i];
  return v;
}
inline uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

// ---- Frame header.
struct FrameHeader {
  uint16_t magic = kMagic;
  uint8_t version = kVersion;
  FrameType type = FrameType::kPing;
  uint32_t flags = 0;
  uint32_t body_length = 0;
};

inline void EncodeHeader(const FrameHeader& h, uint8_t* out /* kHeaderBytes */) {
  PutU16(out, h.magic);
  out[2] = h.version;
  out[3] = static_cast<uint8_t>(h.type);
  PutU32(out + 4, h.flags);
  PutU32(out + 8, h.body_length);
}

inline FrameHeader DecodeHeader(const uint8_t* in /* kHeaderBytes */) {
  FrameHeader h;
  h.magic = GetU16(in);
  h.version = in[2];
  h.type = static_cast<FrameType>(in[3]);
  h.flags = GetU32(in + 4);
  h.body_length = GetU32(in + 8);
  return h;
}

// True when `body_length` is legal for `type` (exact size, or within the error frame's bounds).
// Unknown types are never legal.
inline bool BodyLengthValid(FrameType type, uint32_t body_length) {
  switch (type) {
    case FrameType::kRequestPiece:
      return body_length == kRequestBodyBytes;
    case FrameType::kPiece:
      return body_length == kPieceBodyBytes;
    case FrameType::kPing:
    case FrameType::kPong:
      return body_length == kPingBodyBytes;
    case FrameType::kPieceEnd:
      return body_length == kPieceEndBodyBytes;
    case FrameType::kError:
      return body_length >= kErrorFixedBytes &&
             body_length <= kErrorFixedBytes + kMaxErrorMessageBytes;
  }
  return false;
}

// ---- Bodies.
struct PieceHeader {
  uint32_t piece_number = 0;
  uint32_t crc32c = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
};

inline void EncodePieceHeader(const PieceHeader& p, uint8_t* out /* kPieceBodyBytes */) {
  PutU32(out, p.piece_number);
  PutU32(out + 4, p.crc32c);
  PutU64(out + 8, p.offset);
  PutU64(out + 16, p.length);
}

inline PieceHeader DecodePieceHeader(const uint8_t* in /* kPieceBodyBytes */) {
  return PieceHeader{GetU32(in), GetU32(in + 4), GetU64(in + 8), GetU64(in + 16)};
}

// A PIECE_END body: the piece number and the CRC32C of the piece as the parent committed it.
struct PieceEnd {
  uint32_t piece_number = 0;
  uint32_t crc32c = 0;
};

inline void EncodePieceEnd(const PieceEnd& e, uint8_t* out /* kPieceEndBodyBytes */) {
  PutU32(out, e.piece_number);
  PutU32(out + 4, e.crc32c);
}

inline PieceEnd DecodePieceEnd(const uint8_t* in /* kPieceEndBodyBytes */) {
  return PieceEnd{GetU32(in), GetU32(in + 4)};
}

// A REQUEST_PIECE body. `task_id` views the decoded bytes (valid while they are) and is not
// checked yet: see IsWireTaskId.
struct PieceRequest {
  std::string_view task_id;
  uint32_t piece_number = 0;
};

// Precondition: `task_id` has kTaskIdBytes bytes.
inline void EncodePieceRequest(std::string_view task_id, uint32_t piece_number,
                               uint8_t* out /* kRequestBodyBytes */) {
  std::memcpy(out, task_id.data(), kTaskIdBytes);
  PutU32(out + kTaskIdBytes, piece_number);
}

inline PieceRequest DecodePieceRequest(const uint8_t* in /* kRequestBodyBytes */) {
  return PieceRequest{std::string_view(reinterpret_cast<const char*>(in), kTaskIdBytes),
                      GetU32(in + kTaskIdBytes)};
}

// ---- What a parent accepts from a child.
enum class RequestHeaderVerdict {
  kAccept,              // read body_length (<= kRequestBodyBytes) bytes of body next
  kBadMagic,            // answer BAD_REQUEST, close
  kUnsupportedVersion,  // answer UNSUPPORTED_VERSION, close
  kUnexpectedType,      // not REQUEST_PIECE or PING, or a wrong body length: BAD_REQUEST, close
};

// Checks a header a parent read from a child, before it reads the body: magic, then version,
// then type and body length (the first problem found is the verdict). A parent accepts only
// REQUEST_PIECE and PING, each with its exact body length.
inline RequestHeaderVerdict CheckRequestHeader(const FrameHeader& h) {
  if (h.magic != kMagic) return RequestHeaderVerdict::kBadMagic;
  if (h.version != kVersion) return RequestHeaderVerdict::kUnsupportedVersion;
  bool accepted_type = h.type == FrameType::kRequestPiece || h.type == FrameType::kPing;
  if (!accepted_type || !BodyLengthValid(h.type, h.body_length)) {
    return RequestHeaderVerdict::kUnexpectedType;
  }
  return RequestHeaderVerdict::kAccept;
}

// True for exactly 64 lowercase hex characters (a task id).
inline bool IsWireTaskId(std::string_view id) {
  if (id.size() != kTaskIdBytes) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace df::piece_protocol
