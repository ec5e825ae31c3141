#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/sandbox.h"

namespace anima::sandboxrunner {

// The most any request may ask for. A request asking for more, or for 0 (unset), gets these.
struct RunnerCeilings {
  int64_t workspace_bytes = 64LL << 20;
  int workspace_files = 10000;
  int cpu_seconds = 60;
  int64_t memory_bytes = 2048LL << 20;
  int max_processes = 128;
  int64_t file_size_bytes = 64LL << 20;
  int64_t output_bytes = 4LL << 20;
  std::chrono::milliseconds wall_time{300000};
};

struct RunnerOptions {
  std::string workspace_dir;  // absolute; each session's workspace is a fresh subdirectory
  RunnerCeilings ceilings;
  // A bound runner with no call in flight for this long stops (StopReason::kIdle); 0: never.
  std::chrono::milliseconds idle_timeout{0};
  // Stop once a Release has been answered (StopReason::kReleased).
  bool exit_after_release = false;
};

enum class StopReason { kSignal, kIdle, kReleased, kConnectionClosed };
const char* StopReasonName(StopReason reason);

inline constexpr size_t kMinSecretLength = 32;

struct WorkspaceInfo {
  int64_t bytes = 0;
  int files = 0;  // files and directories written
  std::string path;
};

// One file of PutWorkspace, viewed in the caller's buffers (a request can hold 64 MiB).
using FileView = std::pair<std::string_view, std::string_view>;

// anima-sandbox-runner without gRPC: the per-claim secret, the one workspace, one command at a
// time in the contained sandbox, and when the process should stop. Thread-safe; every method but
// WaitForStop returns promptly except Run (for as long as the command runs) and PutWorkspace and
// Release (after cancelling a running command, until it has ended).
class Runner {
 public:
  // `sandbox` must be available (a contained one in production; tests may pass another).
  Runner(std::unique_ptr<selfcoding::Sandbox> sandbox, RunnerOptions options);
  ~Runner();

  // Fixes the secret (at least kMinSecretLength characters, else INVALID_ARGUMENT); once fixed,
  // PERMISSION_DENIED. Only a digest is kept.
  absl::Status Bind(std::string_view secret);
  // OK when `authorization` is "Bearer <the secret>" (compared in constant time); else
  // UNAUTHENTICATED saying what was wrong, never echoing what was sent.
  absl::Status Authenticate(std::string_view authorization) const;

  // Counts a call in flight (the idle timer waits while one is) for as long as it lives.
  class CallScope {
   public:
    explicit CallScope(Runner* runner);
    ~CallScope();
    CallScope(const CallScope&) = delete;
    CallScope& operator=(const CallScope&) = delete;

   private:
    Runner* runner_;
  };

  // Replaces the workspace (cancelling a running command first) with a fresh one holding
  // `files`, bounded by the lower of the request and the ceilings (0: the ceiling). The first
  // refused path is INVALID_ARGUMENT naming it, going over the limits RESOURCE_EXHAUSTED; on
  // error no workspace is left.
  absl::StatusOr<WorkspaceInfo> PutWorkspace(const std::vector<FileView>& files, int64_t max_bytes,
                                             int max_files);

  // Runs `command` in the workspace with its limits lowered to the ceilings (0 fields: the
  // ceiling). FAILED_PRECONDITION without a workspace or while another command runs;
  // INVALID_ARGUMENT for an empty argv or too much input. Ends within a poll interval of
  // `cancel` firing. on_output is called on this thread.
  absl::StatusOr<selfcoding::SandboxResult> Run(selfcoding::SandboxCommand command,
                                                selfcoding::CancelToken* cancel);

  // Ends the session: a running command is cancelled and waited for, the workspace deleted.
  void Release();

  // The limits a command gets for `requested` (fields <= 0: unset).
  selfcoding::SandboxLimits Clamp(const selfcoding::SandboxLimits& requested) const;

  // Asks the process to stop (the first reason wins): a running command is cancelled, and new
  // sessions and commands are refused with UNAVAILABLE.
  void Stop(StopReason reason);
  // Blocks until Stop(), the idle timeout or (with exit_after_release) a Release; says which.
  StopReason WaitForStop();

 private:
  void CancelRunAndWait(std::unique_lock<std::mutex>& lock);
  void EndSession(std::unique_lock<std::mutex>& lock, const char* why);

  const std::unique_ptr<selfcoding::Sandbox> sandbox_;
  const RunnerOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;      // a command ended; a call ended; a stop or a release
  std::atomic<bool> bound_{false};  // set once, after secret_digest_
  std::array<unsigned char, 32> secret_digest_{};  // SHA-256 of the secret
  std::unique_ptr<selfcoding::Workspace> workspace_;
  std::string workspace_path_;
  int64_t sessions_ = 0;
  selfcoding::CancelToken* running_ = nullptr;  // the command's own token, while one runs
  int calls_ = 0;                               // calls in flight
  std::chrono::steady_clock::time_point last_call_end_;
  bool released_ = false;
  bool stopping_ = false;
  StopReason stop_reason_ = StopReason::kSignal;
};

}  // namespace anima::sandboxrunner
