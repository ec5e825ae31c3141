#include "services/sandbox_runner/runner.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace anima::sandboxrunner {
namespace {

using selfcoding::SandboxLimits;

constexpr size_t kMaxInput = 4096;

std::array<unsigned char, 32> Sha256(std::string_view data) {
  std::array<unsigned char, 32> digest{};
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr);
  return digest;
}

// The lower of a request and a ceiling; a request of 0 (or less) is unset: the ceiling.
template <typename T>
T Lower(T requested, T ceiling) {
  return requested <= T{} ? ceiling : std::min(requested, ceiling);
}

}  // namespace

const char* StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kSignal:
      return "signal";
    case StopReason::kIdle:
      return "idle";
    case StopReason::kReleased:
      return "released";
    case StopReason::kConnectionClosed:
      return "connection closed";
  }
  return "unknown";
}

Runner::Runner(std::unique_ptr<selfcoding::Sandbox> sandbox, RunnerOptions options)
    : sandbox_(std::move(sandbox)), options_(std::move(options)) {}

Runner::~Runner() {
  std::unique_lock lock(mu_);
  EndSession(lock, "the runner stopped");
}

absl::Status Runner::Bind(std::string_view secret) {
  {
    std::lock_guard lock(mu_);
    if (bound_.load()) return absl::PermissionDeniedError("the runner is already bound");
    if (secret.size() < kMinSecretLength) {
      return absl::InvalidArgumentError(
          absl::StrCat("the secret must be at least ", kMinSecretLength, " characters"));
    }
    // Only a digest: the secret itself is not kept in this process's memory.
    secret_digest_ = Sha256(secret);
    last_call_end_ = std::chrono::steady_clock::now();
    bound_.store(true, std::memory_order_release);
  }
  cv_.notify_all();  // the idle timer starts now
  return absl::OkStatus();
}

absl::Status Runner::Authenticate(std::string_view authorization) const {
  // The digest is written once, before bound_ is set, and never again: no lock needed.
  if (!bound_.load(std::memory_order_acquire)) {
    return absl::UnauthenticatedError("the runner is not bound");
  }
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kScheme.size()),
                              absl::string_view(kScheme.data(), kScheme.size()))) {
    return absl::UnauthenticatedError("no bearer token");
  }
  // Digests of equal length, compared in constant time: neither the secret's bytes nor its
  // length can be learnt by timing the answer.
  auto digest = Sha256(authorization.substr(kScheme.size()));
  if (CRYPTO_memcmp(digest.data(), secret_digest_.data(), digest.size()) != 0) {
    return absl::UnauthenticatedError("wrong secret");
  }
  return absl::OkStatus();
}

Runner::CallScope::CallScope(Runner* runner) : runner_(runner) {
  std::lock_guard lock(runner_->mu_);
  runner_->calls_++;
}

Runner::CallScope::~CallScope() {
  {
    std::lock_guard lock(runner_->mu_);
    runner_->calls_--;
    runner_->last_call_end_ = std::chrono::steady_clock::now();
  }
  runner_->cv_.notify_all();
}

absl::StatusOr<WorkspaceInfo> Runner::PutWorkspace(const std::vector<FileView>& files,
                                                   int64_t max_bytes, int max_files) {
  const selfcoding::WorkspaceLimits limits{
      .max_bytes = Lower(max_bytes, options_.ceilings.workspace_bytes),
      .max_files = Lower(max_files, options_.ceilings.workspace_files)};
  // Under the lock throughout: other calls wait while the session changes (writing the largest
  // workspace takes milliseconds).
  std::unique_lock lock(mu_);
  if (stopping_) return absl::UnavailableError("the runner is stopping");
  CancelRunAndWait(lock);
  EndSession(lock, "replaced by a new one");
  const std::string name = absl::StrCat("session-", ++sessions_);
  auto created = sandbox_->CreateWorkspace(options_.workspace_dir, name, limits, {});
  if (!created.ok()) return created.status();
  int64_t bytes = 0;
  for (const auto& [path, content] : files) {
    if (absl::Status s = (*created)->WriteFile(path, content); !s.ok()) {
      spdlog::info("session {} refused: {}", sessions_, std::string(s.message()));
      // Errors name the path. A path that collides with an earlier one (a file where a
      // directory goes, the same path twice) is the request's fault, as a bad path is.
      if (s.code() == absl::StatusCode::kFailedPrecondition) {
        return absl::InvalidArgumentError(s.message());
      }
      return s;
    }
    bytes += static_cast<int64_t>(content.size());
  }
  WorkspaceInfo info{.bytes = bytes,
                     .files = (*created)->files_written(),
                     .path = (std::filesystem::path(options_.workspace_dir) / name).string()};
  workspace_ = *std::move(created);
  workspace_path_ = info.path;
  spdlog::info("session {} started: {} files, {} bytes in {}", sessions_, files.size(), bytes,
               info.path);
  return info;
}

absl::StatusOr<selfcoding::SandboxResult> Runner::Run(selfcoding::SandboxCommand command,
                                                      selfcoding::CancelToken* cancel) {
  if (command.argv.empty()) return absl::InvalidArgumentError("argv is empty");
  if (command.input.size() > kMaxInput) {
    return absl::InvalidArgumentError(
        absl::StrCat("input is ", command.input.size(), " bytes, at most ", kMaxInput));
  }
  command.limits = Clamp(command.limits);
  selfcoding::CancelToken own;  // fired by `cancel`, Release, a new workspace or Stop
  selfcoding::Workspace* workspace = nullptr;
  int64_t session = 0;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return absl::UnavailableError("the runner is stopping");
    if (workspace_ == nullptr) {
      return absl::FailedPreconditionError("no workspace: call PutWorkspace first");
    }
    if (running_ != nullptr) return absl::FailedPreconditionError("another command is running");
    running_ = &own;
    workspace = workspace_.get();
    session = sessions_;
  }
  int id = cancel != nullptr ? cancel->OnCancel([&own] { own.Cancel(); }) : -1;
  const auto start = std::chrono::steady_clock::now();
  auto result = sandbox_->Run(command, *workspace, &own);
  if (cancel != nullptr) cancel->Remove(id);
  {
    std::lock_guard lock(mu_);
    running_ = nullptr;
  }
  cv_.notify_all();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  if (!result.ok()) {
    spdlog::warn("session {}: {} could not start: {}", session, command.argv[0],
                 std::string(result.status().message()));
  } else {
    spdlog::info("session {}: {} exit {}{}{} in {} ms", session, command.argv[0], result->exit_code,
                 result->signal != 0 ? absl::StrCat(" signal ", result->signal) : "",
                 result->reason.empty() ? "" : " (" + result->reason + ")", ms);
  }
  return result;
}

void Runner::Release() {
  {
    std::unique_lock lock(mu_);
    CancelRunAndWait(lock);
    EndSession(lock, "released");
    if (options_.exit_after_release) released_ = true;
  }
  cv_.notify_all();
}

selfcoding::SandboxLimits Runner::Clamp(const SandboxLimits& requested) const {
  const RunnerCeilings& c = options_.ceilings;
  SandboxLimits out;
  out.cpu_seconds = Lower(requested.cpu_seconds, c.cpu_seconds);
  out.memory_bytes = Lower(requested.memory_bytes, c.memory_bytes);
  out.max_processes = Lower(requested.max_processes, c.max_processes);
  out.file_size_bytes = Lower(requested.file_size_bytes, c.file_size_bytes);
  out.output_bytes = Lower(requested.output_bytes, c.output_bytes);
  out.wall_time = Lower(requested.wall_time, c.wall_time);
  return out;
}

void Runner::Stop(StopReason reason) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      stopping_ = true;
      stop_reason_ = reason;
    }
    if (running_ != nullptr) running_->Cancel();
  }
  cv_.notify_all();
}

StopReason Runner::WaitForStop() {
  std::unique_lock lock(mu_);
  while (true) {
    if (stopping_) return stop_reason_;
    if (released_) {
      stopping_ = true;
      stop_reason_ = StopReason::kReleased;
      continue;
    }
    // The idle timer runs only once bound: a warm pool's runner waits for its claim forever.
    if (bound_.load() && options_.idle_timeout.count() > 0 && calls_ == 0) {
      auto deadline = last_call_end_ + options_.idle_timeout;
      if (std::chrono::steady_clock::now() >= deadline) {
        stopping_ = true;
        stop_reason_ = StopReason::kIdle;
        continue;
      }
      cv_.wait_until(lock, deadline);
    } else {
      cv_.wait(lock);
    }
  }
}

void Runner::CancelRunAndWait(std::unique_lock<std::mutex>& lock) {
  if (running_ == nullptr) return;
  running_->Cancel();
  cv_.wait(lock, [this] { return running_ == nullptr; });
}

void Runner::EndSession(std::unique_lock<std::mutex>& /*lock*/, const char* why) {
  if (workspace_ == nullptr) return;
  workspace_.reset();  // deletes the directory
  spdlog::info("session {} ended ({}): {} deleted", sessions_, why, workspace_path_);
  workspace_path_.clear();
}

}  // namespace anima::sandboxrunner
