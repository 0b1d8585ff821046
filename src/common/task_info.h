// TaskSpec of a TaskInfo from the network (scheduler.proto): the one conversion used by the
// scheduler (register) and the seed (TriggerDownloadTask) before they check the task's id.
// Header-only so that df_common does not depend on the generated protobuf code.
#pragma once

#include "common/task_spec.h"
#include "scheduler.pb.h"

namespace df {

inline TaskSpec SpecOf(const df::scheduler::v1::TaskInfo& info) {
  TaskSpec spec;
  spec.url = info.url();
  spec.tag = info.tag();
  spec.application = info.application();
  spec.piece_length = info.piece_length();
  spec.filtered_query_params.assign(info.filtered_query_params().begin(),
                                    info.filtered_query_params().end());
  spec.digest = info.digest();
  return spec;
}

}  // namespace df
