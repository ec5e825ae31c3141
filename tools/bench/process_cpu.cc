#include "tools/bench/process_cpu.h"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::bench {

absl::StatusOr<std::vector<WatchedProcess>> ParseCpuPids(std::string_view spec) {
  std::vector<WatchedProcess> out;
  std::set<std::string> names;
  for (absl::string_view item :
       absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',', absl::SkipEmpty())) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cpu-pids: expected name=pid, got \"", item, "\""));
    }
    std::string name(item.substr(0, eq));
    for (char c : name) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) {
        return absl::InvalidArgumentError(
            absl::StrCat("--cpu-pids: a name is [a-z0-9_-]+, got \"", name, "\""));
      }
    }
    absl::string_view digits = item.substr(eq + 1);
    pid_t pid = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (ec != std::errc() || end != digits.data() + digits.size() || pid <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cpu-pids: \"", digits, "\" is not a process id"));
    }
    if (!names.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("--cpu-pids: \"", name, "\" given twice"));
    }
    out.push_back({std::move(name), pid});
  }
  if (out.empty()) return absl::InvalidArgumentError("--cpu-pids: no name=pid given");
  return out;
}

absl::StatusOr<double> ParseStatCpuSeconds(std::string_view stat_line, long ticks_per_second) {
  const size_t close = stat_line.rfind(')');
  if (close == std::string_view::npos || ticks_per_second <= 0) {
    return absl::InvalidArgumentError("not a /proc/PID/stat line");
  }
  // After ") " come field 3 (state) onwards; utime and stime are fields 14 and 15.
  std::istringstream rest{std::string(stat_line.substr(close + 1))};
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    if (!(rest >> field)) return absl::InvalidArgumentError("a /proc/PID/stat line cut short");
    if (i == 14 || i == 15) {
      unsigned long long value = 0;
      auto [end, ec] = std::from_chars(field.data(), field.data() + field.size(), value);
      if (ec != std::errc() || end != field.data() + field.size()) {
        return absl::InvalidArgumentError("a /proc/PID/stat CPU field is not a number");
      }
      (i == 14 ? utime : stime) = value;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(ticks_per_second);
}

absl::StatusOr<double> ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::NotFoundError(absl::StrCat("process ", pid, " is not running"));
  }
  return ParseStatCpuSeconds(line, ::sysconf(_SC_CLK_TCK));
}

double MicrosPerMessage(const ProcessCpu& cpu, int64_t answered) {
  return answered > 0 ? cpu.seconds * 1e6 / static_cast<double>(answered) : 0;
}

double AnimaOverSim(const std::vector<ProcessCpu>& cpu) {
  double sim = 0, anima = 0;
  bool has_sim = false;
  for (const ProcessCpu& p : cpu) {
    if (p.name == "sim") {
      sim = p.seconds;
      has_sim = true;
    } else {
      anima += p.seconds;
    }
  }
  return has_sim && sim > 0 ? anima / sim : 0;
}

}  // namespace anima::bench
