#include "scheduler/redis_store.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "common/log.h"

namespace df::scheduler {
namespace {

using Json = nlohmann::json;
using Command = RedisStore::Command;
using Reply = RedisStore::Reply;
using EdgeKey = std::pair<std::string, std::string>;

// ---- Keys (docs/measurement.md, "Redis layout") ----
const std::string kPrefix = "scheduler:";
const std::string kHostIds = kPrefix + "host-ids";
const std::string kTopologySrcs = kPrefix + "network-topology-srcs";
const std::string kCapacityIds = kPrefix + "capacity-ids";
const std::string kBandwidthKeys = kPrefix + "bandwidth-keys";
const std::string kRecords = kPrefix + "records";

std::string HostKey(const std::string& id) { return kPrefix + "hosts:" + id; }
std::string TopologyKey(const std::string& src, const std::string& dst) {
  return kPrefix + "network-topology:" + src + ":" + dst;
}
std::string ProbesKey(const std::string& src, const std::string& dst) {
  return kPrefix + "probes:" + src + ":" + dst;
}
std::string TopologyOutKey(const std::string& src) {
  return kPrefix + "network-topology-ids:" + src;
}
std::string TopologyInKey(const std::string& dst) { return kPrefix + "network-topology-in:" + dst; }
std::string ProbedCountKey(const std::string& id) { return kPrefix + "probed-count:" + id; }
std::string CapacityKey(const std::string& id) { return kPrefix + "capacity:" + id; }
std::string BandwidthKey(const std::string& child, const std::string& parent) {
  return kPrefix + "bandwidth:" + child + ":" + parent;
}
std::string BandwidthOfKey(const std::string& id) { return kPrefix + "bandwidth-of:" + id; }

// ---- Scripts ----
struct LuaScript {
  std::string source;
  std::string sha;  // hex SHA-1 of source, what EVALSHA names it by
};

LuaScript MakeScript(std::string source) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(source.data()), source.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string sha;
  for (unsigned char b : digest) {
    sha.push_back(kHex[b >> 4]);
    sha.push_back(kHex[b & 15]);
  }
  return {std::move(source), std::move(sha)};
}

// KEYS: probes list, topology hash, srcs set, out set of src, in set of dst.
// ARGV: sample JSON, queue length, sample time (RFC 3339), src id, dst id, average weight.
// The average is recomputed from the list (malformed samples skipped) by MovingAverageRtt's rule
// (store.h; ARGV[6] is its weight), so two schedulers adding to one edge at once both leave a
// consistent edge: the script runs atomically. The RTT is formatted with %.0f because Lua would
// print a large number as "1.5e+12".
const LuaScript& AddProbeScript() {
  static const LuaScript script = MakeScript(R"lua(
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
local w = tonumber(ARGV[6])
local avg, n = 0, 0
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local ok, s = pcall(cjson.decode, raw)
  if ok and type(s) == 'table' and type(s.rtt) == 'number' then
    if n == 0 then avg = s.rtt else avg = avg * w + s.rtt * (1 - w) end
    n = n + 1
  end
end
avg = math.floor(avg)
redis.call('HSET', KEYS[2], 'averageRTT', string.format('%.0f', avg), 'updatedAt', ARGV[3])
redis.call('HSETNX', KEYS[2], 'createdAt', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('SADD', KEYS[5], ARGV[4])
return n
)lua");
  return script;
}

// ARGV: host id. The keys to delete depend on the index sets, so the script builds them itself
// (fine on one Redis; Redis Cluster would need hash tags). Atomic: a concurrent AddProbe on an
// edge of the host lands either before (and is deleted) or after (and stays, as it should).
// Every command is a pcall: a key of the wrong type (written by someone else) does not stop the
// rest of the deletion, which a script error would (Redis does not roll a script back); the
// first error is returned once all the rest is done.
const LuaScript& DeleteHostScript() {
  static const LuaScript script = MakeScript(R"lua(
local h = ARGV[1]
local p = 'scheduler:'
local first_err = nil
local function call(...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    first_err = first_err or r.err
    return {}
  end
  return r
end
call('DEL', p .. 'hosts:' .. h, p .. 'probed-count:' .. h, p .. 'capacity:' .. h)
call('SREM', p .. 'host-ids', h)
call('SREM', p .. 'capacity-ids', h)
for _, dst in ipairs(call('SMEMBERS', p .. 'network-topology-ids:' .. h)) do
  call('DEL', p .. 'network-topology:' .. h .. ':' .. dst, p .. 'probes:' .. h .. ':' .. dst)
  call('SREM', p .. 'network-topology-in:' .. dst, h)
end
call('DEL', p .. 'network-topology-ids:' .. h)
call('SREM', p .. 'network-topology-srcs', h)
for _, src in ipairs(call('SMEMBERS', p .. 'network-topology-in:' .. h)) do
  call('DEL', p .. 'network-topology:' .. src .. ':' .. h, p .. 'probes:' .. src .. ':' .. h)
  call('SREM', p .. 'network-topology-ids:' .. src, h)
  if call('SCARD', p .. 'network-topology-ids:' .. src) == 0 then
    call('SREM', p .. 'network-topology-srcs', src)
  end
end
call('DEL', p .. 'network-topology-in:' .. h)
for _, key in ipairs(call('SMEMBERS', p .. 'bandwidth-of:' .. h)) do
  for _, other in ipairs(call('HMGET', key, 'child', 'parent')) do
    if other and other ~= h then call('SREM', p .. 'bandwidth-of:' .. other, key) end
  end
  call('DEL', key)
  call('SREM', p .. 'bandwidth-keys', key)
end
call('DEL', p .. 'bandwidth-of:' .. h)
if first_err then return redis.error_reply(first_err) end
return 1
)lua");
  return script;
}

// ---- Values ----
std::string FormatRfc3339(int64_t unix_ms) {
  const int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : -((-unix_ms + 999) / 1000);
  const int64_t ms = unix_ms - secs * 1000;
  const time_t t = static_cast<time_t>(secs);
  struct tm tm {};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

template <typename T>
std::optional<T> ParseNumber(std::string_view s) {
  T v{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<int> ParseDigits(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return std::nullopt;
  return ParseNumber<int>(s.substr(pos, n));
}

// "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+hh:mm|-hh:mm)" (Go's RFC3339Nano, as Dragonfly writes it)
// to unix ms; the fraction is truncated to ms.
std::optional<int64_t> ParseRfc3339(std::string_view s) {
  auto year = ParseDigits(s, 0, 4), mon = ParseDigits(s, 5, 2), day = ParseDigits(s, 8, 2);
  auto hour = ParseDigits(s, 11, 2), min = ParseDigits(s, 14, 2), sec = ParseDigits(s, 17, 2);
  if (!year || !mon || !day || !hour || !min || !sec || s[4] != '-' || s[7] != '-' ||
      (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') {
    return std::nullopt;
  }
  size_t pos = 19;
  int64_t ms = 0;
  if (pos < s.size() && s[pos] == '.') {
    size_t digits = 0;
    for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++digits) {
      if (digits < 3) ms = ms * 10 + (s[pos] - '0');
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 3; ++digits) ms *= 10;
  }
  int64_t offset_s = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    auto oh = ParseDigits(s, pos + 1, 2), om = ParseDigits(s, pos + 4, 2);
    if (!oh || !om || s[pos + 3] != ':') return std::nullopt;
    offset_s = (s[pos] == '+' ? 1 : -1) * (*oh * 3600 + *om * 60);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != s.size()) return std::nullopt;
  struct tm tm {};
  tm.tm_year = *year - 1900;
  tm.tm_mon = *mon - 1;
  tm.tm_mday = *day;
  tm.tm_hour = *hour;
  tm.tm_min = *min;
  tm.tm_sec = *sec;
  const int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_s;
  return secs * 1000 + ms;
}

std::string FormatDouble(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : "0";
}

std::optional<double> ParseRate(std::string_view s) {
  auto v = ParseNumber<double>(s);
  if (!v || !std::isfinite(*v) || *v < 0) return std::nullopt;
  return v;
}

// ---- Replies ----
bool IsError(const redisReply* r) { return r == nullptr || r->type == REDIS_REPLY_ERROR; }

// The bytes of a bulk or status reply; nullopt for nil or another type.
std::optional<std::string_view> AsString(const redisReply* r) {
  if (r == nullptr || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_STATUS)) {
    return std::nullopt;
  }
  return std::string_view(r->str, r->len);
}

bool IsArray(const redisReply* r) { return r != nullptr && r->type == REDIS_REPLY_ARRAY; }

std::string ErrorText(const redisReply* r) {
  if (r == nullptr) return "no reply";
  if (r->type == REDIS_REPLY_ERROR) return std::string(r->str, r->len);
  return "unexpected reply type " + std::to_string(r->type);
}

// The i-th element of an array reply as a string; nullopt when absent, nil or not a string.
std::optional<std::string_view> Field(const redisReply* r, size_t i) {
  if (!IsArray(r) || i >= r->elements) return std::nullopt;
  return AsString(r->element[i]);
}

// A whole HMGET reply was nil: the key does not exist (deleted since the index was read).
bool AllNil(const redisReply* r) {
  if (!IsArray(r)) return false;
  for (size_t i = 0; i < r->elements; ++i) {
    if (r->element[i] != nullptr && r->element[i]->type != REDIS_REPLY_NIL) return false;
  }
  return true;
}

std::optional<int64_t> FieldInt(const redisReply* r, size_t i) {
  auto s = Field(r, i);
  return s ? ParseNumber<int64_t>(*s) : std::nullopt;
}

std::optional<uint64_t> FieldUint(const redisReply* r, size_t i) {
  auto s = Field(r, i);
  return s ? ParseNumber<uint64_t>(*s) : std::nullopt;
}

timeval Timeval(int ms) {
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

int64_t ClampToInt64(uint64_t n) {
  return static_cast<int64_t>(std::min<uint64_t>(n, std::numeric_limits<int64_t>::max()));
}

// ---- Decoding what was read back (nullopt = malformed: the caller logs and skips) ----
std::string SampleJson(const ProbeSample& s) {
  return Json{{"rtt", s.rtt_ns}, {"createdAt", FormatRfc3339(s.created_unix_ms)}}.dump();
}

std::optional<ProbeSample> ParseSample(std::string_view raw) {
  Json j = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  auto rtt = j.find("rtt");
  auto created = j.find("createdAt");
  if (rtt == j.end() || !rtt->is_number_integer() || created == j.end() || !created->is_string()) {
    return std::nullopt;
  }
  auto created_ms = ParseRfc3339(created->get<std::string>());
  if (!created_ms) return std::nullopt;
  return ProbeSample{rtt->get<int64_t>(), *created_ms};
}

std::string RecordJson(const BandwidthRecord& r) {
  return Json{{"childHostId", r.child_host_id},
              {"parentHostId", r.parent_host_id},
              {"bytes", r.bytes},
              {"costNs", r.cost_ns},
              {"finishedAtMs", r.unix_ms}}
      .dump();
}

std::optional<BandwidthRecord> ParseRecord(std::string_view raw) {
  Json j = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return std::nullopt;
  auto child = j.find("childHostId"), parent = j.find("parentHostId");
  auto bytes = j.find("bytes"), cost = j.find("costNs"), at = j.find("finishedAtMs");
  if (child == j.end() || !child->is_string() || parent == j.end() || !parent->is_string() ||
      bytes == j.end() || !bytes->is_number_unsigned() || cost == j.end() ||
      !cost->is_number_unsigned() || at == j.end() || !at->is_number_integer()) {
    return std::nullopt;
  }
  return BandwidthRecord{child->get<std::string>(), parent->get<std::string>(),
                         bytes->get<uint64_t>(), cost->get<uint64_t>(), at->get<int64_t>()};
}

// HMGET fields of a topology hash, in this order.
enum TopologyField { kAverageRtt, kCreatedAt, kUpdatedAt };

std::optional<ProbeEdge> ParseEdge(const EdgeKey& key, const redisReply* hash,
                                   const redisReply* list) {
  auto average = FieldInt(hash, kAverageRtt);
  auto updated_raw = Field(hash, kUpdatedAt);
  auto updated = updated_raw ? ParseRfc3339(*updated_raw) : std::nullopt;
  if (!average || !updated || !IsArray(list)) return std::nullopt;
  ProbeEdge e{key.first, key.second, *average, {}, 0, *updated};
  for (size_t i = 0; i < list->elements; ++i) {
    auto raw = AsString(list->element[i]);
    auto sample = raw ? ParseSample(*raw) : std::nullopt;
    if (!sample) {
      DF_LOG_WARN("redis store: skipping a malformed probe sample key={}",
                  ProbesKey(key.first, key.second));
      continue;
    }
    e.samples.push_back(*sample);
  }
  auto created_raw = Field(hash, kCreatedAt);
  auto created = created_raw ? ParseRfc3339(*created_raw) : std::nullopt;
  e.created_unix_ms = created ? *created : (e.samples.empty() ? 0 : e.samples[0].created_unix_ms);
  return e;
}

}  // namespace

// ---- URL ----
Result<RedisOptions> ParseRedisUrl(std::string_view url) {
  const std::string_view scheme = "redis://";
  auto bad = [&](const std::string& why) {
    return InvalidArgument("store: malformed Redis URL '" + std::string(url) + "': " + why +
                           " (want redis://[:PASSWORD@]HOST:PORT[/DB])");
  };
  if (url.substr(0, scheme.size()) != scheme) return bad("scheme is not redis://");
  std::string_view rest = url.substr(scheme.size());
  RedisOptions o;
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) return bad("credentials need a ':' before the password");
    o.username = std::string(userinfo.substr(0, colon));
    o.password = std::string(userinfo.substr(colon + 1));
    if (o.password.empty()) return bad("empty password");
  }
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view path =
      authority.size() < rest.size() ? rest.substr(authority.size() + 1) : std::string_view();
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in host");
    o.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') return bad("junk after ']'");
    port = after.empty() ? std::string_view() : after.substr(1);
    if (!after.empty() && port.empty()) return bad("empty port");
  } else {
    auto colon = authority.find(':');
    o.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port.empty()) return bad("empty port");
    }
  }
  if (o.host.empty()) return bad("empty host");
  if (!port.empty()) {
    auto p = ParseNumber<uint32_t>(port);
    if (!p || *p == 0 || *p > 65535) return bad("port '" + std::string(port) + "' is not 1-65535");
    o.port = static_cast<uint16_t>(*p);
  }
  if (!path.empty()) {
    auto db = ParseNumber<uint32_t>(path);
    if (!db || *db > 1'000'000) return bad("database '" + std::string(path) + "' is not a number");
    o.db = static_cast<int>(*db);
  }
  return o;
}

// ---- Connection ----
void RedisStore::ReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }
void RedisStore::ContextDeleter::operator()(redisContext* c) const { redisFree(c); }

RedisStore::RedisStore(RedisOptions options)
    : options_(std::move(options)),
      endpoint_(options_.host + ":" + std::to_string(options_.port) + "/" +
                std::to_string(options_.db)) {}

RedisStore::~RedisStore() = default;

Status RedisStore::DropLocked(const std::string& why) {
  ctx_.reset();
  retry_after_ = Clock::now() + std::chrono::milliseconds(options_.reconnect_interval_ms);
  if (!logged_down_) {
    DF_LOG_WARN(
        "redis store: unavailable, schedulers work from memory until it returns redis={} "
        "error=\"{}\"",
        endpoint_, why);
    logged_down_ = true;
  }
  return Unavailable("redis " + endpoint_ + ": " + why);
}

Status RedisStore::EnsureConnectedLocked() {
  if (ctx_) return Status::Ok();
  if (Clock::now() < retry_after_) {
    return Unavailable("redis " + endpoint_ + ": down (reconnect attempts are rate-limited)");
  }
  ctx_.reset(redisConnectWithTimeout(options_.host.c_str(), options_.port,
                                     Timeval(options_.connect_timeout_ms)));
  if (!ctx_) return DropLocked("connect: out of memory");
  if (ctx_->err) return DropLocked(std::string("connect: ") + ctx_->errstr);
  if (redisSetTimeout(ctx_.get(), Timeval(options_.command_timeout_ms)) != REDIS_OK ||
      redisEnableKeepAlive(ctx_.get()) != REDIS_OK) {
    return DropLocked(std::string("socket options: ") + ctx_->errstr);
  }
  std::vector<Command> setup;
  if (!options_.password.empty()) {
    setup.push_back(options_.username.empty()
                        ? Command{"AUTH", options_.password}
                        : Command{"AUTH", options_.username, options_.password});
  }
  if (options_.db != 0) setup.push_back({"SELECT", std::to_string(options_.db)});
  if (!setup.empty()) {
    auto replies = PipelineLocked(setup);
    if (!replies.ok()) return replies.status();
    for (const auto& r : *replies) {
      if (IsError(r.get())) return DropLocked("connection setup: " + ErrorText(r.get()));
    }
  }
  if (logged_down_) DF_LOG_INFO("redis store: connected again redis={}", endpoint_);
  logged_down_ = false;
  return Status::Ok();
}

Result<std::vector<Reply>> RedisStore::PipelineLocked(const std::vector<Command>& commands) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& cmd : commands) {
    argv.clear();
    lens.clear();
    for (const auto& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(argv.size()), argv.data(),
                               lens.data()) != REDIS_OK) {
      return DropLocked(std::string("send: ") + ctx_->errstr);
    }
  }
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* r = nullptr;
    if (redisGetReply(ctx_.get(), &r) != REDIS_OK || r == nullptr) {
      return DropLocked(std::string("receive: ") + (ctx_->err ? ctx_->errstr : "no reply"));
    }
    replies.emplace_back(static_cast<redisReply*>(r));
  }
  return replies;
}

Result<std::vector<Reply>> RedisStore::Pipeline(const std::vector<Command>& commands) {
  std::lock_guard lock(mu_);
  DF_RETURN_IF_ERROR(EnsureConnectedLocked());
  if (commands.empty()) return std::vector<Reply>{};
  return PipelineLocked(commands);
}

Status RedisStore::Write(const std::vector<Command>& commands, std::string_view operation) {
  auto replies = Pipeline(commands);
  if (!replies.ok()) return replies.status();
  for (size_t i = 0; i < replies->size(); ++i) {
    if (IsError((*replies)[i].get())) {
      return Internal("redis store: " + std::string(operation) + ": " + commands[i][0] + " " +
                      (commands[i].size() > 1 ? commands[i][1] : "") + ": " +
                      ErrorText((*replies)[i].get()));
    }
  }
  return Status::Ok();
}

Result<Reply> RedisStore::Script(const std::string& source, const std::string& sha,
                                 const std::vector<std::string>& keys,
                                 const std::vector<std::string>& args) {
  Command cmd{"EVALSHA", sha, std::to_string(keys.size())};
  cmd.insert(cmd.end(), keys.begin(), keys.end());
  cmd.insert(cmd.end(), args.begin(), args.end());
  auto replies = Pipeline({cmd});
  if (!replies.ok()) return replies.status();
  Reply reply = std::move((*replies)[0]);
  if (reply->type == REDIS_REPLY_ERROR &&
      std::string_view(reply->str, reply->len).substr(0, 8) == "NOSCRIPT") {
    cmd[0] = "EVAL";  // Redis lost its script cache (restart, SCRIPT FLUSH): EVAL caches it again
    cmd[1] = source;
    replies = Pipeline({cmd});
    if (!replies.ok()) return replies.status();
    reply = std::move((*replies)[0]);
  }
  if (IsError(reply.get())) return Internal("redis store: script: " + ErrorText(reply.get()));
  return reply;
}

Result<std::vector<std::string>> RedisStore::SetMembers(const std::string& key) {
  auto replies = Pipeline({{"SMEMBERS", key}});
  if (!replies.ok()) return replies.status();
  const redisReply* r = (*replies)[0].get();
  if (!IsArray(r)) {
    DF_LOG_WARN("redis store: index is not a set, ignoring it key={} error=\"{}\"", key,
                ErrorText(r));
    return std::vector<std::string>{};
  }
  std::vector<std::string> out;
  out.reserve(r->elements);
  for (size_t i = 0; i < r->elements; ++i) {
    if (auto s = AsString(r->element[i])) out.emplace_back(*s);
  }
  return out;
}

Status RedisStore::Ping() {
  auto replies = Pipeline({{"PING"}});
  if (!replies.ok()) return replies.status();
  auto pong = AsString((*replies)[0].get());
  if (!pong || *pong != "PONG") {
    return Unavailable("redis " + endpoint_ + ": PING: " + ErrorText((*replies)[0].get()));
  }
  return Status::Ok();
}

// ---- Hosts ----
Status RedisStore::PutHost(const df::scheduler::v1::Host& host, int64_t now_unix_ms) {
  return Write({{"HSET", HostKey(host.id()), "host", host.SerializeAsString(), "updatedAt",
                 std::to_string(now_unix_ms)},
                {"SADD", kHostIds, host.id()}},
               "put host");
}

Status RedisStore::DeleteHost(const std::string& host_id) {
  const LuaScript& s = DeleteHostScript();
  auto r = Script(s.source, s.sha, {}, {host_id});
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::vector<StoredHost>> RedisStore::ListHosts() {
  auto ids = SetMembers(kHostIds);
  if (!ids.ok()) return ids.status();
  std::vector<Command> cmds;
  for (const auto& id : *ids) cmds.push_back({"HMGET", HostKey(id), "host", "updatedAt"});
  auto replies = Pipeline(cmds);
  if (!replies.ok()) return replies.status();
  std::vector<StoredHost> out;
  for (size_t i = 0; i < ids->size(); ++i) {
    const redisReply* r = (*replies)[i].get();
    if (AllNil(r)) continue;  // deleted since the index was read
    StoredHost h;
    auto bytes = Field(r, 0);
    auto updated = FieldInt(r, 1);
    if (!bytes || !updated ||
        !h.info.ParseFromArray(bytes->data(), static_cast<int>(bytes->size()))) {
      DF_LOG_WARN("redis store: skipping a malformed host key={}", HostKey((*ids)[i]));
      continue;
    }
    h.updated_unix_ms = *updated;
    out.push_back(std::move(h));
  }
  return out;
}

// ---- Probes ----
Status RedisStore::AddProbe(const std::string& src_host_id, const std::string& dst_host_id,
                            const ProbeSample& sample, size_t queue_length) {
  const LuaScript& s = AddProbeScript();
  const size_t keep = std::clamp<size_t>(queue_length, 1, 1'000'000);
  auto r = Script(s.source, s.sha,
                  {ProbesKey(src_host_id, dst_host_id), TopologyKey(src_host_id, dst_host_id),
                   kTopologySrcs, TopologyOutKey(src_host_id), TopologyInKey(dst_host_id)},
                  {SampleJson(sample), std::to_string(keep), FormatRfc3339(sample.created_unix_ms),
                   src_host_id, dst_host_id, std::to_string(kRttAverageWeight)});
  return r.ok() ? Status::Ok() : r.status();
}

Status RedisStore::AddProbedCount(const std::string& host_id, uint64_t n) {
  return Write({{"INCRBY", ProbedCountKey(host_id), std::to_string(ClampToInt64(n))}},
               "add probed count");
}

Result<std::vector<uint64_t>> RedisStore::ProbedCounts(const std::vector<std::string>& host_ids) {
  if (host_ids.empty()) return std::vector<uint64_t>{};
  Command mget{"MGET"};
  for (const auto& id : host_ids) mget.push_back(ProbedCountKey(id));
  auto replies = Pipeline({mget});
  if (!replies.ok()) return replies.status();
  const redisReply* r = (*replies)[0].get();
  std::vector<uint64_t> out(host_ids.size(), 0);
  if (!IsArray(r) || r->elements != host_ids.size()) {
    return Internal("redis store: MGET probed counts: " + ErrorText(r));
  }
  for (size_t i = 0; i < host_ids.size(); ++i) {
    if (r->element[i]->type == REDIS_REPLY_NIL) continue;
    auto n = FieldUint(r, i);
    if (!n) {
      DF_LOG_WARN("redis store: malformed probed count read as 0 key={}", mget[i + 1]);
      continue;
    }
    out[i] = *n;
  }
  return out;
}

Result<std::vector<ProbeEdge>> RedisStore::ReadEdges(const std::vector<EdgeKey>& edges) {
  std::vector<Command> cmds;
  cmds.reserve(edges.size() * 2);
  for (const auto& [src, dst] : edges) {
    cmds.push_back({"HMGET", TopologyKey(src, dst), "averageRTT", "createdAt", "updatedAt"});
    cmds.push_back({"LRANGE", ProbesKey(src, dst), "0", "-1"});
  }
  auto replies = Pipeline(cmds);
  if (!replies.ok()) return replies.status();
  std::vector<ProbeEdge> out;
  for (size_t i = 0; i < edges.size(); ++i) {
    const redisReply* hash = (*replies)[2 * i].get();
    if (AllNil(hash)) continue;  // deleted since the index was read
    auto edge = ParseEdge(edges[i], hash, (*replies)[2 * i + 1].get());
    if (!edge) {
      DF_LOG_WARN("redis store: skipping a malformed probe edge key={}",
                  TopologyKey(edges[i].first, edges[i].second));
      continue;
    }
    out.push_back(std::move(*edge));
  }
  return out;
}

Result<std::vector<ProbeEdge>> RedisStore::ListProbes(const std::string& src_host_id) {
  std::vector<std::string> srcs{src_host_id};
  if (src_host_id.empty()) {
    auto all = SetMembers(kTopologySrcs);
    if (!all.ok()) return all.status();
    srcs = std::move(*all);
  }
  std::vector<Command> cmds;
  for (const auto& src : srcs) cmds.push_back({"SMEMBERS", TopologyOutKey(src)});
  auto replies = Pipeline(cmds);
  if (!replies.ok()) return replies.status();
  std::vector<EdgeKey> edges;
  for (size_t i = 0; i < srcs.size(); ++i) {
    const redisReply* r = (*replies)[i].get();
    for (size_t j = 0; IsArray(r) && j < r->elements; ++j) {
      if (auto dst = AsString(r->element[j])) edges.emplace_back(srcs[i], std::string(*dst));
    }
  }
  std::sort(edges.begin(), edges.end());
  return ReadEdges(edges);
}

// ---- Capacities and pair estimates ----
Status RedisStore::PutCapacities(const std::vector<LearnedCapacity>& capacities) {
  std::vector<Command> cmds;
  for (const auto& c : capacities) {
    cmds.push_back({"HSET", CapacityKey(c.host_id), "uploadBytesPerSec",
                    std::to_string(c.upload_bytes_per_sec), "downloadBytesPerSec",
                    std::to_string(c.download_bytes_per_sec), "updatedAt",
                    std::to_string(c.updated_unix_ms)});
    cmds.push_back({"SADD", kCapacityIds, c.host_id});
  }
  return Write(cmds, "put capacities");
}

Result<std::vector<LearnedCapacity>> RedisStore::ListCapacities() {
  auto ids = SetMembers(kCapacityIds);
  if (!ids.ok()) return ids.status();
  std::vector<Command> cmds;
  for (const auto& id : *ids) {
    cmds.push_back(
        {"HMGET", CapacityKey(id), "uploadBytesPerSec", "downloadBytesPerSec", "updatedAt"});
  }
  auto replies = Pipeline(cmds);
  if (!replies.ok()) return replies.status();
  std::vector<LearnedCapacity> out;
  for (size_t i = 0; i < ids->size(); ++i) {
    const redisReply* r = (*replies)[i].get();
    if (AllNil(r)) continue;
    auto up = FieldUint(r, 0), down = FieldUint(r, 1);
    auto updated = FieldInt(r, 2);
    if (!up || !down || !updated) {
      DF_LOG_WARN("redis store: skipping a malformed capacity key={}", CapacityKey((*ids)[i]));
      continue;
    }
    out.push_back({(*ids)[i], *up, *down, *updated});
  }
  return out;
}

Status RedisStore::PutPairEstimates(const std::vector<PairEstimate>& estimates) {
  std::vector<Command> cmds;
  for (const auto& e : estimates) {
    const std::string key = BandwidthKey(e.child_host_id, e.parent_host_id);
    cmds.push_back({"HSET", key, "child", e.child_host_id, "parent", e.parent_host_id,
                    "bytesPerSec", FormatDouble(e.bytes_per_sec), "records",
                    std::to_string(e.records), "updatedAt", std::to_string(e.updated_unix_ms)});
    cmds.push_back({"SADD", kBandwidthKeys, key});
    cmds.push_back({"SADD", BandwidthOfKey(e.child_host_id), key});
    cmds.push_back({"SADD", BandwidthOfKey(e.parent_host_id), key});
  }
  return Write(cmds, "put pair estimates");
}

Result<std::vector<PairEstimate>> RedisStore::ListPairEstimates() {
  auto keys = SetMembers(kBandwidthKeys);
  if (!keys.ok()) return keys.status();
  std::vector<Command> cmds;
  for (const auto& key : *keys) {
    cmds.push_back({"HMGET", key, "child", "parent", "bytesPerSec", "records", "updatedAt"});
  }
  auto replies = Pipeline(cmds);
  if (!replies.ok()) return replies.status();
  std::vector<PairEstimate> out;
  for (size_t i = 0; i < keys->size(); ++i) {
    const redisReply* r = (*replies)[i].get();
    if (AllNil(r)) continue;
    auto child = Field(r, 0), parent = Field(r, 1), rate = Field(r, 2);
    auto bytes_per_sec = rate ? ParseRate(*rate) : std::nullopt;
    auto records = FieldUint(r, 3);
    auto updated = FieldInt(r, 4);
    if (!child || !parent || !bytes_per_sec || !records || !updated) {
      DF_LOG_WARN("redis store: skipping a malformed pair estimate key={}", (*keys)[i]);
      continue;
    }
    out.push_back({std::string(*child), std::string(*parent), *bytes_per_sec, *records, *updated});
  }
  return out;
}

// ---- Records ----
Status RedisStore::AppendRecords(const std::vector<BandwidthRecord>& records, size_t max_records) {
  std::vector<Command> cmds;
  if (!records.empty()) {
    Command push{"RPUSH", kRecords};
    push.reserve(records.size() + 2);
    for (const auto& r : records) push.push_back(RecordJson(r));
    cmds.push_back(std::move(push));
  }
  if (max_records == 0) {
    cmds.push_back({"DEL", kRecords});
  } else {
    cmds.push_back({"LTRIM", kRecords, "-" + std::to_string(ClampToInt64(max_records)), "-1"});
  }
  return Write(cmds, "append records");
}

Result<std::vector<BandwidthRecord>> RedisStore::ListRecords(size_t limit) {
  if (limit == 0) return std::vector<BandwidthRecord>{};
  auto replies = Pipeline({{"LRANGE", kRecords, "-" + std::to_string(ClampToInt64(limit)), "-1"}});
  if (!replies.ok()) return replies.status();
  const redisReply* r = (*replies)[0].get();
  if (!IsArray(r)) return Internal("redis store: LRANGE " + kRecords + ": " + ErrorText(r));
  std::vector<BandwidthRecord> out;
  out.reserve(r->elements);
  for (size_t i = 0; i < r->elements; ++i) {
    auto raw = AsString(r->element[i]);
    auto record = raw ? ParseRecord(*raw) : std::nullopt;
    if (!record) {
      DF_LOG_WARN("redis store: skipping a malformed record key={} index={}", kRecords, i);
      continue;
    }
    out.push_back(std::move(*record));
  }
  return out;
}

}  // namespace df::scheduler
