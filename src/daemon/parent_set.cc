#include "daemon/parent_set.h"

#include <algorithm>
#include <utility>

#include "common/net.h"

namespace df {

Result<ParentAddress> CheckParentAddress(const std::string& peer_id, const std::string& host_id,
                                         const std::string& ip, int64_t grpc_port,
                                         int64_t piece_port) {
  if (peer_id.empty() || peer_id.size() > kMaxParentIdBytes) {
    return InvalidArgument("parent peer id of " + std::to_string(peer_id.size()) + " bytes (1.." +
                           std::to_string(kMaxParentIdBytes) + ")");
  }
  if (!IsIpv4Literal(ip)) {
    return InvalidArgument("parent ip '" + ip.substr(0, 64) + "' is not an IPv4 address");
  }
  for (int64_t port : {grpc_port, piece_port}) {
    if (port < 1 || port > 65535) {
      return InvalidArgument("parent port " + std::to_string(port) + " is out of range");
    }
  }
  return ParentAddress{peer_id, host_id, ip, static_cast<uint16_t>(grpc_port),
                       static_cast<uint16_t>(piece_port)};
}

ParentSet::ParentSet(PiecePicker& picker, std::function<void(TaskParent&)> on_drop)
    : picker_(picker), on_drop_(std::move(on_drop)) {}

TaskParent* ParentSet::Offer(const ParentAddress& a) {
  auto it = by_id_.find(a.peer_id);
  if (it != by_id_.end()) {
    it->second->removed = false;
    SetUsable(*it->second);
    return nullptr;
  }
  auto p = std::make_unique<TaskParent>();
  static_cast<ParentAddress&>(*p) = a;
  p->index = picker_.AddParent();
  TaskParent* raw = p.get();
  // The set is the picker's only source of parents, so indexes come 0, 1, 2, ...
  by_index_.push_back(raw);
  by_id_.emplace(a.peer_id, std::move(p));
  return raw;
}

TaskParent* ParentSet::Remove(const std::string& peer_id) {
  TaskParent* p = Find(peer_id);
  if (!p || !p->usable()) return nullptr;
  p->removed = true;
  SetUsable(*p);
  return p;
}

void ParentSet::Drop(TaskParent& p) {
  if (p.dead) return;
  p.dead = true;
  SetUsable(p);
  if (on_drop_) on_drop_(p);
}

void ParentSet::StreamEnded(TaskParent& p) {
  if (p.done) return;
  p.dead = true;
  SetUsable(p);
}

void ParentSet::Served(TaskParent& p, uint64_t length, uint64_t cost_ns) {
  p.failures = 0;
  p.aborted = 0;
  double rate =
      static_cast<double>(length) * 1e9 / static_cast<double>(std::max<uint64_t>(cost_ns, 1));
  p.rate_bytes_per_sec = p.rate_bytes_per_sec > 0
                             ? (1 - kRateWeight) * p.rate_bytes_per_sec + kRateWeight * rate
                             : rate;
}

void ParentSet::CapRate(TaskParent& p, double bytes_per_sec) {
  p.rate_bytes_per_sec =
      p.rate_bytes_per_sec > 0 ? std::min(p.rate_bytes_per_sec, bytes_per_sec) : bytes_per_sec;
}

void ParentSet::Failed(TaskParent& p, PieceNumber piece, const Status& s, bool forwarded) {
  if (s.code() == StatusCode::kNotFound && !forwarded) {
    picker_.Forget(p.index, piece);
  } else if (s.code() == StatusCode::kNotFound) {
    // Only the receiving mark goes: the stream may have announced the piece finished while this
    // answer was on its way, and it says so once.
    picker_.StopReceiving(p.index, piece);
  } else if (s.code() == StatusCode::kAborted) {
    // A parent could claim so forever to waste our time: from the kFailureLimit-th in a row on,
    // each one is a failure.
    picker_.StopReceiving(p.index, piece);
    if (++p.aborted >= kFailureLimit) CountFailure(p);
  } else {
    CountFailure(p);
  }
}

void ParentSet::CountFailure(TaskParent& p) {
  if (++p.failures >= kFailureLimit) Drop(p);
}

bool ParentSet::Unverifiable(TaskParent& p) {
  if (++p.unverifiable < kUnverifiableLimit) return false;
  Drop(p);
  return true;
}

std::vector<std::string> ParentSet::DropStale() {
  std::vector<std::string> stale;
  for (auto& [id, p] : by_id_) {
    if (!p->usable() || p->inflight > 0) continue;
    if (picker_.MissingFinishedHeldBy(p->index) > 0) continue;
    Drop(*p);
    stale.push_back(id);
  }
  return stale;
}

bool ParentSet::AnyUsable() const {
  return std::any_of(by_id_.begin(), by_id_.end(),
                     [](const auto& kv) { return kv.second->usable(); });
}

std::vector<std::string> ParentSet::DeadIds() const {
  std::vector<std::string> ids;
  for (const auto& [id, p] : by_id_) {
    if (p->dead) ids.push_back(id);
  }
  return ids;
}

TaskParent* ParentSet::Find(const std::string& peer_id) const {
  auto it = by_id_.find(peer_id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

const std::vector<PiecePicker::ParentLoad>& ParentSet::Loads() {
  loads_.clear();
  for (const auto& [id, p] : by_id_) {
    loads_.push_back({p->index, p->connections, p->inflight, p->rate_bytes_per_sec});
  }
  return loads_;
}

TaskParent* ParentSet::FastestHolder(PieceNumber piece, const TaskParent* exclude,
                                     uint32_t max_connections) const {
  TaskParent* best = nullptr;
  for (const auto& [id, p] : by_id_) {
    if (p.get() == exclude || !p->usable() || !picker_.has(p->index, piece) ||
        p->connections >= max_connections) {
      continue;
    }
    if (!best || p->rate_bytes_per_sec > best->rate_bytes_per_sec) best = p.get();
  }
  return best;
}

}  // namespace df
