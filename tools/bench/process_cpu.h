#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace anima::bench {

// A process whose CPU time a run reports per answered message (--cpu-pids).
struct WatchedProcess {
  std::string name;  // "sim" is the provider: the ratio is every other process over it
  pid_t pid = 0;
};

// "gateway=123,router=456,broker=789,sim=1011": names are [a-z0-9_-]+ and unique, pids > 0.
absl::StatusOr<std::vector<WatchedProcess>> ParseCpuPids(std::string_view spec);

// User + system CPU seconds from one /proc/PID/stat line: fields 14 and 15, counted after the
// last ')' (the command name in parentheses may itself hold spaces and parentheses).
absl::StatusOr<double> ParseStatCpuSeconds(std::string_view stat_line, long ticks_per_second);

// The same for a live process.
absl::StatusOr<double> ProcessCpuSeconds(pid_t pid);

// What one watched process spent over a run's recorded window (and the drain after it).
struct ProcessCpu {
  std::string name;
  double seconds = 0;
};

// CPU per answered message in microseconds, and the ratio the goal is stated in: every
// process but "sim" together over "sim" (0 when there is no "sim" or it spent nothing).
double MicrosPerMessage(const ProcessCpu& cpu, int64_t answered);
double AnimaOverSim(const std::vector<ProcessCpu>& cpu);

}  // namespace anima::bench
