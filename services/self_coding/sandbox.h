#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/workspace.h"

namespace anima::selfcoding {

struct SandboxLimits {
  int cpu_seconds = 10;                        // RLIMIT_CPU per process
  int64_t memory_bytes = 1LL << 30;            // RLIMIT_AS per process; 0: none (see below)
  int max_processes = 64;                      // RLIMIT_NPROC (per sandbox, enforced when not root)
  int64_t file_size_bytes = 16LL << 20;        // RLIMIT_FSIZE
  int64_t output_bytes = 1LL << 20;            // stdout+stderr kept; more ends the run
  std::chrono::milliseconds wall_time{30000};  // then the whole process tree is killed
};

// A process built with AddressSanitizer or ThreadSanitizer reserves terabytes of address space
// for its shadow memory and cannot start under RLIMIT_AS. Only our own programs are built so (the
// sandbox runner, in `tools/anima test --sanitize=...`): those are started with memory_bytes 0,
// and the commands they run get their own limits from them as usual.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kBuiltWithSanitizer = true;
#else
inline constexpr bool kBuiltWithSanitizer = false;
#endif

struct SandboxCommand {
  std::vector<std::string> argv;  // argv[0] is looked up in the sandbox's PATH (/usr/bin:/bin)
  SandboxLimits limits;
  // Written to the command's stdin, which then reaches end of file (at most 4 KiB; empty: stdin
  // is /dev/null). Not in argv or the environment, so other processes cannot read it there.
  std::string input;
  // When set, the command finds the write end of a pipe at fd 3 and what it writes there (up to
  // kReportBytes) comes back in SandboxResult::report, apart from its output.
  bool report = false;
  // Called with each piece of output as it arrives (on the calling thread), besides collecting
  // it in SandboxResult::output. Optional.
  std::function<void(std::string_view)> on_output;
  // A socket the command finds at fd 3 (and then no report pipe). For a long-lived server inside
  // the sandbox, such as anima-sandbox-runner started by the local runner provider. Not owned.
  int connection_fd = -1;
  // A program outside the sandbox's view (not under /usr) to run as argv[0]: bubblewrap puts a
  // read-only copy at kSandboxProgramPath and runs that; the other modes run it where it is.
  // Empty: argv[0] is looked up as usual.
  std::string program;
};

inline constexpr char kSandboxProgramPath[] = "/run/anima/program";

// Each limit the larger of the two.
inline SandboxLimits MaxLimits(const SandboxLimits& a, const SandboxLimits& b) {
  return {.cpu_seconds = std::max(a.cpu_seconds, b.cpu_seconds),
          .memory_bytes = std::max(a.memory_bytes, b.memory_bytes),
          .max_processes = std::max(a.max_processes, b.max_processes),
          .file_size_bytes = std::max(a.file_size_bytes, b.file_size_bytes),
          .output_bytes = std::max(a.output_bytes, b.output_bytes),
          .wall_time = std::max(a.wall_time, b.wall_time)};
}

inline constexpr size_t kReportBytes = 4096;

// How a sandboxed run ended. `reason` is empty when the command exited on its own (look at
// exit_code); otherwise it says what stopped it, in words a user can act on.
struct SandboxResult {
  int exit_code = -1;  // the exit status, or -1 when killed by a signal
  int signal = 0;      // the terminating signal, or 0
  std::string output;  // stdout and stderr interleaved, at most limits.output_bytes
  std::string report;  // what the command wrote to fd 3 when SandboxCommand::report was set
  std::string reason;  // "wall time limit (30s) exceeded", "output limit ...", "cancelled", ...
  bool cancelled = false;
  bool ok() const { return reason.empty() && exit_code == 0; }
};

// What creating a workspace may need from the attempt it is for: a sandbox that must first be
// obtained (a pod claimed from Agent Sandbox, a busy runner) waits for it and says why.
struct AttemptContext {
  std::string job_id;             // for labels and logs
  CancelToken* cancel = nullptr;  // a wait for a sandbox ends when it fires
  // Told, once per distinct reason, when the sandbox is not there at once ("waiting for a sandbox
  // pod (claim anima-job-…): 3 of 3 warm runners in use"). Optional.
  std::function<void(const std::string& reason)> waiting;
};

// Runs commands in isolated workspaces. Implementations must never let a command outlive Run(),
// and must return within a poll interval after `cancel` fires. Thread-safe.
class Sandbox {
 public:
  virtual ~Sandbox() = default;
  // OK when jobs can run; otherwise why not (e.g. bubblewrap missing). A replica whose sandbox
  // is unavailable at start claims no jobs, so only permanent conditions belong here.
  virtual absl::Status Available() const = 0;
  // Why the sandbox works less well than it should although jobs may still run (the Kubernetes
  // API failing just now), or empty.
  virtual std::string Degraded() const { return ""; }
  // "bwrap", "contained", "none", or a remote sandbox's "runner/<provider>".
  virtual std::string name() const = 0;
  // The path the workspace has inside the sandbox (where relative paths resolve).
  virtual std::string workspace_mount() const = 0;
  // A new, empty workspace bounded by `limits`. `parent_dir` is a directory the caller owns; an
  // implementation that keeps workspaces on disk makes `name` in it, one that keeps them in
  // memory ignores both. Everything in it is gone when the workspace is destroyed.
  virtual absl::StatusOr<std::unique_ptr<Workspace>> CreateWorkspace(
      const std::string& parent_dir, const std::string& name, const WorkspaceLimits& limits,
      const AttemptContext& context) = 0;
  // Runs `command` in `workspace`, which must come from this sandbox's CreateWorkspace. An error
  // status means the sandbox itself could not be set up (the command did not run).
  virtual absl::StatusOr<SandboxResult> Run(const SandboxCommand& command, Workspace& workspace,
                                            CancelToken* cancel) = 0;
};

enum class SandboxMode { kBubblewrap, kContained, kNone };

// kBubblewrap: every workspace is a tmpfs of its own (bounded in bytes and in files by the
// kernel) held in a private mount namespace, so it is never on the host's disk and the sandbox
// uid needs no access to the data directory. Each run is `bwrap` with every namespace unshared
// (so no network), no further user namespaces (--disable-userns), a seccomp filter
// (seccomp_filter.h), /usr read-only, the workspace and a /tmp (from the same tmpfs) the only
// writable paths, limits set by prlimit inside, and, when the service runs as root, dropped to
// `sandbox_uid` (65534) first so the process limit applies. A setup failure of bubblewrap or of
// the filter fails the run; nothing runs unsandboxed.
// kContained: for a process that is already inside a sandbox of its own (anima-sandbox-runner in
// a gVisor pod or under bubblewrap): runs in a workspace directory on disk like kNone, in a new
// session, with the rlimits, no_new_privs and the same seccomp filter (loaded in the child before
// exec), and the runner itself not dumpable. It adds no namespaces (it needs no privilege).
// kNone: runs directly in a workspace directory on disk with the rlimits only; unsafe, for
// development. The byte and file limits apply to what the service writes, not to what runs.
// kBubblewrap proves itself with a trial run; Available() reports why it failed.
std::unique_ptr<Sandbox> MakeSandbox(SandboxMode mode, std::string bwrap_path = "bwrap",
                                     int sandbox_uid = 65534);

}  // namespace anima::selfcoding
