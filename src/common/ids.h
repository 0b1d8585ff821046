// Identifiers of the domain: task, peer and host ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace df {

// What makes two downloads the same task.
struct TaskIdInput {
  std::string url;
  std::string tag;
  std::string application;
  uint64_t piece_length = 0;                       // 0 = chosen from the size (see piece.h)
  std::vector<std::string> filtered_query_params;  // names dropped from the URL's query
};

// Removes the query parameters named in `filtered` from `url` (order of the rest is kept).
// "http://o/f?sig=1&a=2", {"sig"} -> "http://o/f?a=2".
std::string FilterQueryParams(std::string_view url, const std::vector<std::string>& filtered);

// Task id = lowercase hex sha256 of (filtered URL, tag, application, piece length), fields
// separated by NUL so that no two different inputs collide by concatenation.
std::string TaskId(const TaskIdInput& in);

// Task id of an OCI blob: its content digest ("sha256:HEX" -> HEX), so the same layer pulled
// from two registries is one task. Returns "" when `digest` is not "sha256:" + 64 hex digits.
std::string TaskIdFromDigest(std::string_view digest);

// Host id: "hostname-ip", stable across restarts of the same daemon on the same address.
std::string HostId(std::string_view hostname, std::string_view ip);

// Peer id: host id + a random suffix; one per download of a task on a host.
std::string NewPeerId(std::string_view host_id);

}  // namespace df
