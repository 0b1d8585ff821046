// The one version string of every binary (--version): the CMake project version and, when built
// from a git checkout, `git describe` as of configure time, e.g. "0.1.0 (git 81f65dc)".
#pragma once

#include <string>

namespace df {

// Static storage; never null.
const char* VersionString();
// "<binary> <VersionString()>", what --version prints.
std::string VersionLine(const std::string& binary);

}  // namespace df
