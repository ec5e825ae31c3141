#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace anima::selfcoding {

// Makes `path` safe to keep jobs in, or says why it is not. Creates it (mode 0700) when missing.
// Refuses, naming the path and the problem: a symlink anywhere in the absolute path; a directory
// not owned by this process's effective uid or with any group or other permission bit; an
// ancestor another user could rename things in (writable by group or others without the sticky
// bit, or owned by neither root nor this uid), since whoever can do that can swap a component for
// a symlink after this check. Returns the absolute path.
absl::StatusOr<std::string> PrepareDataDir(const std::string& path);

}  // namespace anima::selfcoding
