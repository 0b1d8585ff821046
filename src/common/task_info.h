// TaskSpec of a TaskInfo (scheduler.proto) or a DownloadRequest (dfdaemon.proto): the one
// conversion used by the scheduler (register), the seed (TriggerDownloadTask) and dfget's daemon
// (Download) before they compute or check the task's id.
// Header-only so that df_common does not depend on the generated protobuf code.
#pragma once

#include "common/task_spec.h"

namespace df {

// Works for every message with the TaskInfo fields (TaskInfo, dfdaemon's DownloadRequest).
template <typename Message>
TaskSpec SpecOf(const Message& info) {
  TaskSpec spec;
  spec.url = info.url();
  spec.tag = info.tag();
  spec.application = info.application();
  spec.piece_length = info.piece_length();
  spec.filtered_query_params.assign(info.filtered_query_params().begin(),
                                    info.filtered_query_params().end());
  spec.digest = info.digest();
  spec.id_from_digest = info.id_from_digest();
  return spec;
}

}  // namespace df
