// URLs as logs, listings and error messages may show them: without the credentials they carry.
// Pure functions, thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace df {

// `url` with the credentials a log or a listing must not show: the userinfo ("user:pass@") and
// the values of query parameters that carry them (signatures, tokens, keys, credentials,
// passwords; names compared case-insensitively, e.g. X-Amz-Signature, token, sig) replaced by
// "REDACTED". Everything else is kept, so that the URL still says what the task is.
std::string RedactUrl(std::string_view url);

// At most `max` bytes of `s` with every byte that may not appear in an HTTP field value
// (control characters) replaced by '?': a string from the network, safe to quote in a log line
// or a status.
std::string Printable(std::string_view s, size_t max = 64);

}  // namespace df
