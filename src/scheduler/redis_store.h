// RedisStore: the Store of several schedulers sharing one Redis (hiredis). Every call is a few
// round trips at most; a batch (PutCapacities, PutPairEstimates, AppendRecords) is one pipelined
// round trip, AddProbe and DeleteHost are one Lua script each (atomic: two schedulers writing the
// same edge, or deleting a host while another probes it, never leave a half-written edge).
//
// Key layout (every key, its type and fields: docs/measurement.md, "Redis layout"). Probe keys are
// Dragonfly's, so its tools read ours:
//   scheduler:network-topology:<src>:<dst>   hash  averageRTT (ns), createdAt, updatedAt (RFC 3339)
//   scheduler:probes:<src>:<dst>             list  JSON {"rtt":ns,"createdAt":RFC 3339}, oldest
//   first scheduler:probed-count:<host>            string integer (INCRBY)
// Ours: scheduler:hosts:<id> (hash), scheduler:host-ids (set), scheduler:capacity:<host> (hash),
// scheduler:capacity-ids (set), scheduler:bandwidth:<child>:<parent> (hash),
// scheduler:bandwidth-keys (set), scheduler:bandwidth-of:<host> (set), scheduler:records (list),
// and the probe indexes scheduler:network-topology-srcs, scheduler:network-topology-ids:<src>,
// scheduler:network-topology-in:<dst> (sets). Listing reads the index sets, never KEYS.
//
// Failure: one connection behind a mutex, with connect and command timeouts (RedisOptions). A call
// that finds Redis down returns Unavailable within about one timeout and drops the connection;
// the next call reconnects, but not before `reconnect_interval_ms` after the failure (in between,
// calls fail at once without touching the network), so a dead Redis costs its callers nothing. A
// value read back that does not parse (a number, a JSON sample, a protobuf) is skipped with a
// warning, never fatal. A Redis error reply to a write (e.g. WRONGTYPE on a key someone else wrote)
// is Internal.
//
// Thread-safe: calls are serialised on the one connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/store.h"

struct redisContext;
struct redisReply;

namespace df::scheduler {

// Where Redis is and how long to wait for it.
struct RedisOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  int db = 0;
  std::string username;  // Redis 6 ACL user; empty: the default user
  std::string password;  // empty: no AUTH
  int connect_timeout_ms = 500;
  int command_timeout_ms = 500;
  int reconnect_interval_ms = 500;  // after a failure, no connect attempt for this long
};

// Parses "redis://HOST:PORT[/DB]" or "redis://:PASSWORD@HOST:PORT[/DB]" (HOST may be a
// bracketed IPv6 literal; PORT defaults to 6379, DB to 0). InvalidArgument naming what is wrong.
Result<RedisOptions> ParseRedisUrl(std::string_view url);

class RedisStore final : public Store {
 public:
  // Does not connect: the first call does (so a scheduler starts while Redis is down).
  explicit RedisStore(RedisOptions options);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  std::string_view name() const override { return "redis"; }
  Status Ping() override;

  Status PutHost(const df::scheduler::v1::Host& host, int64_t now_unix_ms) override;
  Status DeleteHost(const std::string& host_id) override;
  Result<std::vector<StoredHost>> ListHosts() override;

  Status AddProbe(const std::string& src_host_id, const std::string& dst_host_id,
                  const ProbeSample& sample, size_t queue_length) override;
  Status AddProbedCount(const std::string& host_id, uint64_t n) override;
  Result<std::vector<uint64_t>> ProbedCounts(const std::vector<std::string>& host_ids) override;
  Result<std::vector<ProbeEdge>> ListProbes(const std::string& src_host_id) override;

  Status PutCapacities(const std::vector<LearnedCapacity>& capacities) override;
  Result<std::vector<LearnedCapacity>> ListCapacities() override;
  Status PutPairEstimates(const std::vector<PairEstimate>& estimates) override;
  Result<std::vector<PairEstimate>> ListPairEstimates() override;

  Status AppendRecords(const std::vector<BandwidthRecord>& records, size_t max_records) override;
  Result<std::vector<BandwidthRecord>> ListRecords(size_t limit) override;

  // One Redis command as its arguments (binary-safe), and its reply.
  using Command = std::vector<std::string>;
  struct ReplyDeleter {
    void operator()(redisReply* r) const;
  };
  using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

 private:
  struct ContextDeleter {
    void operator()(redisContext* c) const;
  };
  using Clock = std::chrono::steady_clock;

  // Sends `commands` in one pipeline and returns one reply per command (error replies included:
  // the caller judges them). Unavailable when Redis cannot be reached or the connection breaks
  // (the connection is then dropped; the next call reconnects).
  Result<std::vector<Reply>> Pipeline(const std::vector<Command>& commands);
  Result<std::vector<Reply>> PipelineLocked(const std::vector<Command>& commands);  // mu_ held
  // Runs a Lua script by its sha, sending the source again when Redis has lost it (a restart,
  // SCRIPT FLUSH). An error reply is Internal.
  Result<Reply> Script(const std::string& source, const std::string& sha,
                       const std::vector<std::string>& keys, const std::vector<std::string>& args);
  // Pipeline() whose every reply must not be an error (a write): Internal names the first error.
  Status Write(const std::vector<Command>& commands, std::string_view operation);
  // Members of the set `key`; a key of another type is logged and read as empty.
  Result<std::vector<std::string>> SetMembers(const std::string& key);
  // The (src, dst) edges: their topology hashes and sample lists, in one round trip. Edges gone
  // since the index was read are left out; malformed ones are logged and left out.
  Result<std::vector<ProbeEdge>> ReadEdges(
      const std::vector<std::pair<std::string, std::string>>& edges);

  Status EnsureConnectedLocked();             // mu_ held; Ok when ctx_ is usable
  Status DropLocked(const std::string& why);  // mu_ held; closes ctx_, returns Unavailable

  const RedisOptions options_;
  const std::string endpoint_;  // "host:port/db" for messages
  std::mutex mu_;
  std::unique_ptr<redisContext, ContextDeleter> ctx_;  // GUARDED_BY(mu_), null while down
  Clock::time_point retry_after_{};  // GUARDED_BY(mu_), no connect attempt before (rate limit)
  bool logged_down_ = false;         // GUARDED_BY(mu_), one warning per outage
};

}  // namespace df::scheduler
