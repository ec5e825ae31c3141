#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"

namespace anima::selfcoding {

struct SandboxLimits {
  int cpu_seconds = 10;                        // RLIMIT_CPU per process
  int64_t memory_bytes = 1LL << 30;            // RLIMIT_AS per process
  int max_processes = 64;                      // RLIMIT_NPROC (per sandbox, enforced when not root)
  int64_t file_size_bytes = 16LL << 20;        // RLIMIT_FSIZE
  int64_t output_bytes = 1LL << 20;            // stdout+stderr kept; more ends the run
  std::chrono::milliseconds wall_time{30000};  // then the whole process tree is killed
};

struct SandboxCommand {
  std::vector<std::string> argv;  // argv[0] is looked up in the sandbox's PATH (/usr/bin:/bin)
  std::string workspace;          // absolute host path, mounted read-write as the working dir
  SandboxLimits limits;
};

// How a sandboxed run ended. `reason` is empty when the command exited on its own (look at
// exit_code); otherwise it says what stopped it, in words a user can act on.
struct SandboxResult {
  int exit_code = -1;  // the exit status, or -1 when killed by a signal
  int signal = 0;      // the terminating signal, or 0
  std::string output;  // stdout and stderr interleaved, at most limits.output_bytes
  std::string reason;  // "wall time limit (30s) exceeded", "output limit ...", "cancelled", ...
  bool cancelled = false;
  bool ok() const { return reason.empty() && exit_code == 0; }
};

// Runs a command in an isolated workspace. Implementations must never let the command outlive
// Run(), and must return within a poll interval after `cancel` fires. Thread-safe.
class Sandbox {
 public:
  virtual ~Sandbox() = default;
  // OK when jobs can run; otherwise why not (e.g. bubblewrap missing).
  virtual absl::Status Available() const = 0;
  // "bwrap" or "none".
  virtual std::string name() const = 0;
  // The path the workspace has inside the sandbox (where relative paths resolve).
  virtual std::string workspace_mount() const = 0;
  virtual absl::StatusOr<SandboxResult> Run(const SandboxCommand& command, CancelToken* cancel) = 0;
};

enum class SandboxMode { kBubblewrap, kNone };

// kBubblewrap: `bwrap` with every namespace unshared (so no network), /usr read-only, a private
// /tmp and /proc, the workspace the only writable host path, limits set by prlimit inside, and
// dropped to `sandbox_uid` (65534) first when running as root so the process limit applies.
// kNone: runs directly in the workspace with the rlimits only; unsafe, for development.
// kBubblewrap proves itself with a trial run in `probe_dir` (empty: the temp directory), which
// should be where workspaces will live; Available() reports why it failed.
std::unique_ptr<Sandbox> MakeSandbox(SandboxMode mode, std::string bwrap_path = "bwrap",
                                     int sandbox_uid = 65534, const std::string& probe_dir = "");

}  // namespace anima::selfcoding
