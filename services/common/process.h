#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"

namespace anima::common {

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts afterwards. Call
// first thing in main, so that WaitForShutdownSignal() is the only place they are delivered.
void BlockShutdownSignals();

// Waits until SIGINT or SIGTERM arrives; returns the signal number.
int WaitForShutdownSignal();

// Writes {"name": port, ...} to `path` atomically (temp file and rename), once every listener is
// bound. Tests start services with port 0 and read the ports from this file. Empty path: no-op.
absl::Status WriteReadyFile(const std::string& path, const std::map<std::string, int>& ports);

// A fresh request id, "r-" and 16 hex digits.
std::string NewRequestId();

// The current UTC time as RFC 3339 with milliseconds: 2026-11-25T10:00:03.120Z.
std::string Rfc3339Now();

}  // namespace anima::common
