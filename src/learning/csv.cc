#include "learning/csv.h"

#include <utility>

namespace df::learning {

CsvReader::CsvReader(RecordFn on_record, CsvLimits limits)
    : on_record_(std::move(on_record)), limits_(limits) {}

void CsvReader::Put(char c) {
  if (field_.size() >= limits_.max_field_bytes) return MarkBad();
  field_ += c;
}

void CsvReader::EndField() {
  if (fields_.size() >= limits_.max_fields) return MarkBad();
  fields_.push_back(std::move(field_));
  field_.clear();
  state_ = State::kFieldStart;
}

void CsvReader::EndRecord() {
  if (state_ == State::kSkipping || state_ == State::kSkippingQuoted) {
    // EndField found the record bad: it was counted there.
  } else if (!(fields_.size() == 1 && fields_[0].empty())) {
    ++records_;
    on_record_(fields_);
  }
  fields_.clear();
  field_.clear();
  record_bytes_ = 0;
  state_ = State::kFieldStart;
}

void CsvReader::MarkBad() {
  if (state_ == State::kSkipping || state_ == State::kSkippingQuoted) return;
  ++bad_records_;
  state_ = state_ == State::kQuoted ? State::kSkippingQuoted : State::kSkipping;
  fields_.clear();
  field_.clear();
}

void CsvReader::Feed(std::string_view data) {
  for (char c : data) {
    if (state_ != State::kSkipping && state_ != State::kSkippingQuoted &&
        ++record_bytes_ > limits_.max_record_bytes) {
      MarkBad();
    }
    switch (state_) {
      case State::kFieldStart:
        if (c == '"') {
          state_ = State::kQuoted;
        } else if (c == ',') {
          EndField();
        } else if (c == '\n') {
          EndField();
          EndRecord();
        } else {
          state_ = State::kUnquoted;
          Put(c);
        }
        break;
      case State::kUnquoted:
        if (c == ',') {
          EndField();
        } else if (c == '\n') {
          if (!field_.empty() && field_.back() == '\r') field_.pop_back();
          EndField();
          EndRecord();
        } else if (c == '"') {
          MarkBad();
        } else {
          Put(c);
        }
        break;
      case State::kQuoted:
        if (c == '"') {
          state_ = State::kQuoteInQuoted;
        } else {
          Put(c);
        }
        break;
      case State::kQuoteInQuoted:  // just after a quote inside a quoted field
        if (c == '"') {
          state_ = State::kQuoted;
          Put('"');
        } else if (c == ',') {
          EndField();
        } else if (c == '\n') {
          EndField();
          EndRecord();
        } else if (c != '\r') {
          MarkBad();
        }
        break;
      case State::kSkipping:
        if (c == '\n') {
          EndRecord();
        } else if (c == '"') {
          state_ = State::kSkippingQuoted;
        }
        break;
      case State::kSkippingQuoted:
        if (c == '"') state_ = State::kSkipping;
        break;
    }
  }
}

void CsvReader::Finish() {
  switch (state_) {
    case State::kFieldStart:
      if (!fields_.empty()) {
        EndField();
        EndRecord();
      }
      break;
    case State::kUnquoted:
    case State::kQuoteInQuoted:
      EndField();
      EndRecord();
      break;
    case State::kQuoted:
      MarkBad();
      EndRecord();
      break;
    case State::kSkipping:
    case State::kSkippingQuoted:
      EndRecord();
      break;
  }
  fields_.clear();
  field_.clear();
  record_bytes_ = 0;
  state_ = State::kFieldStart;
}

std::string CsvField(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

}  // namespace df::learning
