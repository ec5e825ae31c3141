#pragma once

#include <string>

#include "absl/status/status.h"

namespace anima::common {

// Sets up the default spdlog logger for a service: lines to stderr as `text` or `json` (one
// object a line with ts, level, service, msg), at `level` (trace, debug, info, warn, error).
// Request-scoped lines carry `req=<request id>`; JSON lines keep it inside msg.
absl::Status InitLogging(const std::string& service, const std::string& format,
                         const std::string& level);

}  // namespace anima::common
