// CsvReader: an incremental RFC 4180 parser with bounds, for the records dataset
// (docs/measurement.md, "Records dataset").
//
// Bytes are fed in chunks of any size (a file read in blocks, or a gRPC stream's chunks); every
// complete record is handed to the callback as a vector of fields. Fields are separated by ',',
// records by "\n" (a "\r\n" ending is accepted: the '\r' is dropped). A field that starts with a
// quote runs to the closing quote, `""` inside it is one quote, and it may hold commas, CR and LF.
//
// Bounds: a field longer than `max_field_bytes`, a record with more than `max_fields` fields, or
// a record longer than `max_record_bytes` is *bad*: it is skipped up to its end (the next record
// separator outside quotes) and counted in bad_records(), and parsing continues. A quote inside
// an unquoted field, or a character after a closing quote other than ',' or a line end, makes
// the record bad too. Memory stays bounded by the limits whatever the input: the reader never
// holds more than one record.
//
// Thread-compatible (one thread feeds a reader).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace df::learning {

// `field` quoted for CSV (RFC 4180) when it holds a comma, a quote, CR or LF: wrapped in quotes,
// quotes doubled. Other fields are returned as they are. What every dataset writer uses.
std::string CsvField(std::string_view field);

struct CsvLimits {
  size_t max_field_bytes = 4096;
  size_t max_fields = 64;
  size_t max_record_bytes = 64 << 10;
};

class CsvReader {
 public:
  // Called once per complete, well-formed record (an empty line is skipped, not reported).
  using RecordFn = std::function<void(const std::vector<std::string>& fields)>;

  CsvReader(RecordFn on_record, CsvLimits limits = CsvLimits());

  // Parses `data`, calling on_record for each record it completes.
  void Feed(std::string_view data);
  // Ends the input: a last record without a trailing newline is completed (an unterminated
  // quoted field makes it bad). Feed after Finish starts a new input.
  void Finish();

  uint64_t records() const { return records_; }          // well-formed records reported
  uint64_t bad_records() const { return bad_records_; }  // records skipped

 private:
  enum class State { kFieldStart, kUnquoted, kQuoted, kQuoteInQuoted, kSkipping, kSkippingQuoted };

  void Put(char c);
  void EndField();
  void EndRecord();
  void MarkBad();  // the current record is bad: skip to its end

  RecordFn on_record_;
  const CsvLimits limits_;
  State state_ = State::kFieldStart;
  std::vector<std::string> fields_;
  std::string field_;
  size_t record_bytes_ = 0;
  uint64_t records_ = 0;
  uint64_t bad_records_ = 0;
};

}  // namespace df::learning
