#include "scheduler/evaluator.h"

#include "scheduler/default_evaluator.h"
#include "scheduler/latency_evaluator.h"

namespace df::scheduler {

const char* PeerStateName(PeerState state) {
  switch (state) {
    case PeerState::kPending:
      return "Pending";
    case PeerState::kRunning:
      return "Running";
    case PeerState::kBackToSource:
      return "BackToSource";
    case PeerState::kSucceeded:
      return "Succeeded";
    case PeerState::kFailed:
      return "Failed";
    case PeerState::kLeft:
      return "Left";
  }
  return "Unknown";
}

bool IsKnownEvaluator(std::string_view name) {
  return name == DefaultEvaluator::kName || name == LatencyEvaluator::kName;
}

std::string KnownEvaluatorNames() {
  return std::string(DefaultEvaluator::kName) + ", " + std::string(LatencyEvaluator::kName);
}

Result<std::unique_ptr<Evaluator>> NewEvaluator(std::string_view name) {
  if (name == DefaultEvaluator::kName) {
    return std::unique_ptr<Evaluator>(std::make_unique<DefaultEvaluator>());
  }
  if (name == LatencyEvaluator::kName) {
    return std::unique_ptr<Evaluator>(std::make_unique<LatencyEvaluator>());
  }
  return InvalidArgument("unknown evaluator '" + std::string(name) +
                         "' (available: " + KnownEvaluatorNames() + ")");
}

}  // namespace df::scheduler
