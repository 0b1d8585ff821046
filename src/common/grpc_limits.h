// Limits every gRPC server of the system applies to the connections strangers can open.
//
// gRPC has no cap on connections: what bounds a flood is that idle connections are closed,
// dead ones are found by keepalive pings, and one connection cannot open unbounded streams.
#pragma once

#include <grpcpp/grpcpp.h>

namespace df {

struct GrpcServerLimits {
  int max_connection_idle_ms = 120'000;  // a connection with no call for this long is closed
  int keepalive_time_ms = 60'000;        // server pings a silent connection this often
  int keepalive_timeout_ms = 20'000;     // and closes it when the ping is not answered
  int max_concurrent_streams = 1024;     // per connection
};

// Applies `limits` to `builder`; call before BuildAndStart().
inline void ApplyServerLimits(grpc::ServerBuilder& builder, const GrpcServerLimits& limits = {}) {
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, limits.max_connection_idle_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, limits.keepalive_time_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, limits.keepalive_timeout_ms);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients (peers) ping every 10 s or more; faster pings are a flood, answered with GOAWAY.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams);
}

}  // namespace df
