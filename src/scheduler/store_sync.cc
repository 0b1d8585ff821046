#include "scheduler/store_sync.h"

#include <chrono>

#include "common/log.h"

namespace df::scheduler {
namespace {

int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

StoreSync::StoreSync(Store* store, Hooks hooks, Options options, prometheus::Gauge& up,
                     prometheus::Counter& errors)
    : store_(*store), hooks_(std::move(hooks)), options_(options), up_gauge_(up), errors_(errors) {
  up_gauge_.Set(1);
}

StoreSync::~StoreSync() { Stop(); }

void StoreSync::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StoreSync::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoreSync::PutHost(const df::scheduler::v1::Host& host) {
  std::lock_guard lock(mu_);
  pending_.deleted.erase(host.id());
  pending_.hosts[host.id()] = host;
}

void StoreSync::DeleteHost(const std::string& host_id) {
  std::lock_guard lock(mu_);
  pending_.hosts.erase(host_id);
  pending_.deleted.insert(host_id);
}

void StoreSync::AddRecord(BandwidthRecord record) {
  std::lock_guard lock(mu_);
  pending_.records.push_back(std::move(record));
  if (pending_.records.size() > options_.max_pending_records) {
    pending_.records.pop_front();
    ++dropped_;
  }
}

bool StoreSync::store_up() const {
  std::lock_guard lock(mu_);
  return up_;
}

void StoreSync::Run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, options_.interval, [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    SyncOnce();
    lock.lock();
  }
}

bool StoreSync::SyncOnce() {
  std::lock_guard round(round_mu_);
  Pending pending;
  {
    std::lock_guard lock(mu_);
    std::swap(pending, pending_);
  }
  bool ok = Flush(pending);
  if (!ok) Requeue(pending);
  Status status = Status::Ok();
  if (ok && hooks_.export_capacities) {
    status = store_.PutCapacities(hooks_.export_capacities());
  }
  if (status.ok() && hooks_.export_pairs) status = store_.PutPairEstimates(hooks_.export_pairs());
  if (status.ok() && hooks_.import_capacities) {
    auto theirs = store_.ListCapacities();
    status = theirs.status();
    if (theirs.ok()) hooks_.import_capacities(theirs.value());
  }
  if (ok && !status.ok()) errors_.Increment();
  ok = ok && status.ok();
  SetUp(ok, status);
  return ok;
}

bool StoreSync::Flush(Pending& pending) {
  const int64_t now = UnixMs();
  for (auto it = pending.deleted.begin(); it != pending.deleted.end();) {
    if (Status s = store_.DeleteHost(*it); !s.ok()) {
      errors_.Increment();
      SetUp(false, s);
      return false;
    }
    it = pending.deleted.erase(it);
  }
  for (auto it = pending.hosts.begin(); it != pending.hosts.end();) {
    if (Status s = store_.PutHost(it->second, now); !s.ok()) {
      errors_.Increment();
      SetUp(false, s);
      return false;
    }
    it = pending.hosts.erase(it);
  }
  if (!pending.records.empty()) {
    std::vector<BandwidthRecord> batch(pending.records.begin(), pending.records.end());
    if (Status s = store_.AppendRecords(batch, options_.max_records); !s.ok()) {
      errors_.Increment();
      SetUp(false, s);
      return false;
    }
    pending.records.clear();
  }
  return true;
}

void StoreSync::Requeue(Pending& pending) {
  std::lock_guard lock(mu_);
  // Newer writes queued meanwhile win over the failed ones.
  for (auto& [id, host] : pending.hosts) {
    if (!pending_.hosts.contains(id) && !pending_.deleted.contains(id)) pending_.hosts[id] = host;
  }
  for (const auto& id : pending.deleted) {
    if (!pending_.hosts.contains(id)) pending_.deleted.insert(id);
  }
  pending.records.insert(pending.records.end(), pending_.records.begin(), pending_.records.end());
  pending_.records.swap(pending.records);
  while (pending_.records.size() > options_.max_pending_records) {
    pending_.records.pop_front();
    ++dropped_;
  }
}

void StoreSync::SetUp(bool up, const Status& why) {
  size_t dropped = 0;
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    changed = up_ != up;
    up_ = up;
    if (up && changed) std::swap(dropped, dropped_);
  }
  up_gauge_.Set(up ? 1 : 0);
  if (!changed) return;
  if (up) {
    DF_LOG_INFO(
        "store {} is back: shared state written and read again ({} records dropped "
        "while it was down)",
        store_.name(), dropped);
  } else {
    DF_LOG_WARN("store {} failed: scheduling from memory until it answers again: {}", store_.name(),
                why.ToString());
  }
}

}  // namespace df::scheduler
