// Preheat: a seed peer fetches a task before any peer asks for it (scheduler.h, PreheatTask).
#include "common/log.h"
#include "common/task_info.h"
#include "scheduler/scheduler.h"

namespace df::scheduler {

Result<Scheduler::PreheatOutcome> Scheduler::PreheatTask(const v1::TaskInfo& request) {
  const TaskSpec spec = SpecOf(request);
  // The scheduler never reads files and a preheat names a registry: http(s) only.
  if (Status s = ValidateTaskSpec(spec, UrlPolicy{}); !s.ok()) {
    return InvalidArgument("preheat: " + s.message());
  }
  v1::TaskInfo info = request;
  info.set_task_id(TaskSpecId(spec));
  info.set_content_length(-1);
  std::vector<SeedJob> jobs;
  PreheatOutcome outcome;
  {
    std::lock_guard lock(mu_);
    const auto now = clock_.Now();
    Task* task = model_.FindTask(info.task_id());
    if (!task && model_.tasks().size() >= config_.max_tasks) {
      return Unavailable("preheat: this scheduler keeps at most " +
                         std::to_string(config_.max_tasks) + " tasks (max_tasks)");
    }
    if (!task) task = &model_.FindOrCreateTask(info.task_id(), info, now);
    if (task->live_seed_peers > 0 || task->seed_trigger_pending || HasOriginCopy(*task)) {
      outcome = PreheatOutcome::kSeeded;
    } else {
      if (!model_.PickSeedHost(task->id, now)) {
        return Unavailable("preheat: no seed host is known to this scheduler");
      }
      if (task->seed_trigger_attempts >= config_.seed_trigger_attempts) {
        return Unavailable("preheat: the task's seed triggers are used up (seed_trigger_attempts)");
      }
      task->info = info;  // the seed fetches with this request's URL and credentials
      MaybeTriggerSeed(*task, now);
      outcome = PreheatOutcome::kTriggered;
    }
    jobs = TakeSeedJobs();
  }
  SendSeedJobs(std::move(jobs));
  return outcome;
}

}  // namespace df::scheduler
