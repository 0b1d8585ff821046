// HTTP/1.1 field syntax (RFC 9110) shared by everything that reads or forwards header fields:
// the metrics server's request parser and the daemon's check of headers a client asks it to send
// to an origin.
#pragma once

#include <algorithm>
#include <cctype>
#include <string_view>

namespace df::http {

// RFC 9110 tchar.
inline bool IsTokenChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// A header name or a request method.
inline bool IsToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// A field value byte: visible, space, tab or obs-text; never another control byte (CR, LF, NUL)
// or DEL.
inline bool IsFieldValueChar(char c) {
  auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

inline bool IsFieldValue(std::string_view s) {
  return std::all_of(s.begin(), s.end(), IsFieldValueChar);
}

}  // namespace df::http
