#include "scheduler/evaluator.h"

#include "scheduler/default_evaluator.h"
#include "scheduler/latency_evaluator.h"
#include "scheduler/ml_evaluator.h"

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
  return name == DefaultEvaluator::kName || name == LatencyEvaluator::kName ||
         name == MlEvaluator::kName;
}

std::string KnownEvaluatorNames() {
  return std::string(DefaultEvaluator::kName) + ", " + std::string(LatencyEvaluator::kName) + ", " +
         std::string(MlEvaluator::kName);
}

Result<std::unique_ptr<Evaluator>> NewEvaluator(std::string_view name,
                                                const EvaluatorOptions& options) {
  if (name == DefaultEvaluator::kName) {
    return std::unique_ptr<Evaluator>(std::make_unique<DefaultEvaluator>());
  }
  if (name == LatencyEvaluator::kName) {
    return std::unique_ptr<Evaluator>(std::make_unique<LatencyEvaluator>());
  }
  if (name == MlEvaluator::kName) {
    if (options.inference.empty()) {
      return InvalidArgument(
          "evaluator ml: set inference (--inference HOST:PORT of dfinference or Triton)");
    }
    MlEvaluatorOptions o;
    o.inference = options.inference;
    o.model = options.inference_model;
    o.deadline = std::chrono::milliseconds(options.inference_deadline_ms);
    o.prediction_ttl = std::chrono::milliseconds(options.prediction_ttl_ms);
    o.infer_groups = options.infer_groups;
    return std::unique_ptr<Evaluator>(std::make_unique<MlEvaluator>(o, options.registry));
  }
  return InvalidArgument("unknown evaluator '" + std::string(name) +
                         "' (available: " + KnownEvaluatorNames() + ")");
}

}  // namespace df::scheduler
