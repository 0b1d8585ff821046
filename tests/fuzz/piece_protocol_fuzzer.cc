// Fuzz target: the piece protocol's frame parsing (src/daemon/piece_protocol.h), as a parent
// reads a child's byte stream (PieceServer::HandleFrame) and as a child reads a parent's answers
// (PieceClient::ReceivePiece). The input is the byte stream.
//
// Invariants: every header and body that decodes re-encodes to the same bytes; a header a parent
// accepts has a body that fits the parent's body buffer; a legal body length never exceeds
// kMaxBodyBytes and an error body fits the child's buffer; an accepted task id is 64 lowercase
// hex characters.
#include <cctype>
#include <cstring>

#include "daemon/piece_protocol.h"
#include "fuzz_input.h"

namespace pp = df::piece_protocol;

namespace {

void CheckHeaderRoundTrip(const uint8_t* bytes) {
  uint8_t again[pp::kHeaderBytes];
  pp::EncodeHeader(pp::DecodeHeader(bytes), again);
  DF_FUZZ_CHECK(std::memcmp(again, bytes, pp::kHeaderBytes) == 0);
}

// The parent's loop: header, verdict, body; stops where the parent closes the connection.
void ReadAsParent(df::fuzz::FuzzInput in) {
  while (in.remaining() >= pp::kHeaderBytes) {
    const auto* header = reinterpret_cast<const uint8_t*>(in.Bytes(pp::kHeaderBytes).data());
    CheckHeaderRoundTrip(header);
    pp::FrameHeader h = pp::DecodeHeader(header);
    if (pp::CheckRequestHeader(h) != pp::RequestHeaderVerdict::kAccept) return;
    // PieceServer reads the body into a kRequestBodyBytes buffer.
    DF_FUZZ_CHECK(h.body_length <= pp::kRequestBodyBytes);
    DF_FUZZ_CHECK(h.type == pp::FrameType::kRequestPiece || h.type == pp::FrameType::kPing);
    if (in.remaining() < h.body_length) return;
    const auto* body = reinterpret_cast<const uint8_t*>(in.Bytes(h.body_length).data());
    if (h.type == pp::FrameType::kPing) {
      // The parent's PONG (PieceServer::HandlePing) must be a frame the child accepts.
      uint8_t pong[pp::kHeaderBytes + pp::kPingBodyBytes];
      pp::EncodeHeader({.type = pp::FrameType::kPong, .body_length = pp::kPingBodyBytes}, pong);
      std::memcpy(pong + pp::kHeaderBytes, body, pp::kPingBodyBytes);
      pp::FrameHeader answer = pp::DecodeHeader(pong);
      DF_FUZZ_CHECK(answer.magic == pp::kMagic && answer.version == pp::kVersion &&
                    pp::BodyLengthValid(answer.type, answer.body_length));
      DF_FUZZ_CHECK(pp::GetU64(pong + pp::kHeaderBytes) == pp::GetU64(body));
      continue;
    }
    pp::PieceRequest request = pp::DecodePieceRequest(body);
    DF_FUZZ_CHECK(request.task_id.size() == pp::kTaskIdBytes);
    if (!pp::IsWireTaskId(request.task_id)) return;  // BAD_REQUEST, connection closed
    for (char c : request.task_id) {
      DF_FUZZ_CHECK(std::isxdigit(static_cast<unsigned char>(c)) &&
                    !std::isupper(static_cast<unsigned char>(c)));
    }
    uint8_t again[pp::kRequestBodyBytes];
    pp::EncodePieceRequest(request.task_id, request.piece_number, again);
    DF_FUZZ_CHECK(std::memcmp(again, body, pp::kRequestBodyBytes) == 0);
  }
}

// The child's side: answers to its requests (PIECE with a payload, PIECE_END, ERROR, PONG).
void ReadAsChild(df::fuzz::FuzzInput in) {
  while (in.remaining() >= pp::kHeaderBytes) {
    const auto* header = reinterpret_cast<const uint8_t*>(in.Bytes(pp::kHeaderBytes).data());
    pp::FrameHeader h = pp::DecodeHeader(header);
    if (h.magic != pp::kMagic || h.version != pp::kVersion ||
        !pp::BodyLengthValid(h.type, h.body_length)) {
      return;  // protocol violation, connection dropped
    }
    DF_FUZZ_CHECK(h.body_length <= pp::kMaxBodyBytes);
    if (in.remaining() < h.body_length) return;
    const auto* body = reinterpret_cast<const uint8_t*>(in.Bytes(h.body_length).data());
    switch (h.type) {
      case pp::FrameType::kPiece: {
        DF_FUZZ_CHECK(h.body_length == pp::kPieceBodyBytes);
        uint8_t again[pp::kPieceBodyBytes];
        pp::EncodePieceHeader(pp::DecodePieceHeader(body), again);
        DF_FUZZ_CHECK(std::memcmp(again, body, pp::kPieceBodyBytes) == 0);
        // The payload follows; the child reads exactly `length` bytes of it (or drops the
        // connection), bounded here by what the input holds.
        in.Bytes(pp::DecodePieceHeader(body).length);
        break;
      }
      case pp::FrameType::kError:
        // PieceClient::ReadErrorFrame reads the body into this many bytes.
        DF_FUZZ_CHECK(h.body_length >= pp::kErrorFixedBytes &&
                      h.body_length <= pp::kErrorFixedBytes + pp::kMaxErrorMessageBytes);
        break;
      case pp::FrameType::kPieceEnd: {
        // PieceClient::ReadPieceEnd reads exactly this body after a cut-through payload.
        DF_FUZZ_CHECK(h.body_length == pp::kPieceEndBodyBytes);
        uint8_t again[pp::kPieceEndBodyBytes];
        pp::EncodePieceEnd(pp::DecodePieceEnd(body), again);
        DF_FUZZ_CHECK(std::memcmp(again, body, pp::kPieceEndBodyBytes) == 0);
        break;
      }
      case pp::FrameType::kPing:
      case pp::FrameType::kPong:
      case pp::FrameType::kRequestPiece:
        break;
      default:
        DF_FUZZ_CHECK(!"BodyLengthValid accepted an unknown frame type");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ReadAsParent(df::fuzz::FuzzInput(data, size));
  ReadAsChild(df::fuzz::FuzzInput(data, size));
  return 0;
}
