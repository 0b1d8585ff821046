// Clock: where the download engine reads the time for its liveness timers (piece timeout, stall
// detection, endgame, reschedule interval, reconnect backoff, schedule timeout).
//
// Two implementations: SteadyClock (std::chrono::steady_clock, what every daemon uses) and
// ManualClock (time moves only when a test calls Advance()), so that a test of a 60 s timer
// advances the clock instead of sleeping. Every timer of the engine is checked by a loop that
// polls at a short real-time interval (the controller every 200 ms, idle workers every 500 ms),
// so moving a ManualClock takes effect within one poll; no wait needs to be woken by it.
//
// Measurements (how long a piece took, for rates) stay on std::chrono::steady_clock: they
// describe the network, not a timer.
#pragma once

#include <atomic>
#include <chrono>

namespace df {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  // The current time; never goes backwards. Thread-safe.
  virtual TimePoint Now() const = 0;
};

// std::chrono::steady_clock. Stateless and thread-safe.
class SteadyClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  // One instance for everyone that was given no clock.
  static const SteadyClock& Instance();
};

// Starts at the real steady time of its construction and moves only by Advance(). Thread-safe.
class ManualClock final : public Clock {
 public:
  ManualClock() : now_ns_(std::chrono::steady_clock::now().time_since_epoch().count()) {}
  TimePoint Now() const override {
    return TimePoint(TimePoint::duration(now_ns_.load(std::memory_order_acquire)));
  }
  // Moves the time forward by `d` (>= 0).
  void Advance(std::chrono::nanoseconds d) {
    now_ns_.fetch_add(std::chrono::duration_cast<TimePoint::duration>(d).count(),
                      std::memory_order_acq_rel);
  }

 private:
  std::atomic<TimePoint::rep> now_ns_;
};

}  // namespace df
