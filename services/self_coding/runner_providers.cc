// Where remote sandboxes' runners come from: bubblewrap on this machine, fixed addresses, or
// Agent Sandbox claims on Kubernetes.
#include <grpcpp/create_channel.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/security/credentials.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/self_coding/agent_sandbox_client.h"
#include "services/self_coding/remote_sandbox.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {
namespace {

// --- bubblewrap -------------------------------------------------------------------------------

// A runner inside bubblewrap on one end of a socketpair; the lease's thread waits for it.
class LocalRunnerLease : public RunnerLease {
 public:
  LocalRunnerLease(std::shared_ptr<grpc::Channel> channel, std::string secret, std::string name)
      : channel_(std::move(channel)), secret_(std::move(secret)), name_(std::move(name)) {}
  ~LocalRunnerLease() override {
    // Released (the workspace's last call), the runner exits by itself, at once when this end of
    // the connection closes (else after its shutdown grace): drop the channel, the last user of
    // it, then give the runner a moment before killing it, so its own cleanup runs.
    channel_.reset();
    {
      std::unique_lock lock(mu_);
      if (!done_cv_.wait_for(lock, std::chrono::seconds(3), [&] { return done_; })) {
        lock.unlock();
        cancel_.Cancel();
      }
    }
    if (thread_.joinable()) thread_.join();
  }

  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }
  const std::string& secret() const override { return secret_; }
  bool needs_bind() const override { return true; }
  std::string describe() const override { return name_; }

  // Runs the runner in bubblewrap on this lease's thread until it exits or the lease ends.
  void Start(Sandbox* bwrap, std::unique_ptr<Workspace> workspace, SandboxCommand command,
             int child_fd) {
    thread_ = std::thread([this, bwrap, workspace = std::move(workspace),
                           command = std::move(command), child_fd]() mutable {
      auto result = bwrap->Run(command, *workspace, &cancel_);
      // Only now: while the runner lives this end must stay open, and once it is closed the
      // service's end sees the connection drop.
      close(child_fd);
      if (!result.ok()) {
        spdlog::warn("sandbox: {} could not start: {}", name_,
                     std::string(result.status().message()));
      } else if (!result->ok() && !result->cancelled) {
        spdlog::warn("sandbox: {} ended: exit {} {}: {}", name_, result->exit_code, result->reason,
                     result->output.substr(0, 500));
      }
      workspace.reset();
      std::lock_guard lock(mu_);
      done_ = true;
      done_cv_.notify_all();
    });
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::string secret_;
  std::string name_;
  CancelToken cancel_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

class LocalRunnerProvider : public RunnerProvider {
 public:
  LocalRunnerProvider(Sandbox* bwrap, std::string runner_binary, SandboxLimits limits)
      : bwrap_(bwrap), runner_binary_(std::move(runner_binary)), limits_(limits) {}

  std::string name() const override { return "bwrap"; }

  absl::Status Available() const override {
    if (auto s = bwrap_->Available(); !s.ok()) return s;
    if (access(runner_binary_.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("the runner binary ", runner_binary_, " is missing (--runner-binary)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<RunnerLease>> Acquire(const WorkspaceLimits& limits,
                                                       const AttemptContext& context) override {
    if (auto s = Available(); !s.ok()) return s;
    auto workspace = bwrap_->CreateWorkspace("", "", limits, {});
    if (!workspace.ok()) return workspace.status();
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("socketpair: ", strerror(errno)));
    }
    std::string name = absl::StrCat("bubblewrap runner #", ++started_,
                                    context.job_id.empty() ? "" : " for " + context.job_id);
    auto lease = std::make_unique<LocalRunnerLease>(
        grpc::CreateInsecureChannelFromFd("anima-sandbox-runner", fds[0]), NewRunnerSecret(), name);
    SandboxCommand command;
    command.program = runner_binary_;
    // The runner holds each command to its own limits, below these (rlimits only go down).
    command.argv = {"anima-sandbox-runner", "--fd=3",
                    "--workspace-dir=" + bwrap_->workspace_mount(), "--exit-after-release",
                    absl::StrCat("--idle-timeout-s=", limits_.wall_time.count() / 1000)};
    command.limits = limits_;
    command.connection_fd = fds[1];
    command.on_output = [name](std::string_view line) {
      spdlog::debug("sandbox: {}: {}", name, std::string(line));
    };
    lease->Start(bwrap_, *std::move(workspace), std::move(command), fds[1]);
    return lease;
  }

 private:
  Sandbox* bwrap_;
  std::string runner_binary_;
  SandboxLimits limits_;
  std::atomic<int64_t> started_{0};
};

// --- fixed addresses --------------------------------------------------------------------------

class StaticRunnerProvider;

class StaticRunnerLease : public RunnerLease {
 public:
  StaticRunnerLease(StaticRunnerProvider* owner, size_t index, std::shared_ptr<grpc::Channel> ch,
                    const std::string& secret, std::string address)
      : owner_(owner),
        index_(index),
        channel_(std::move(ch)),
        secret_(secret),
        address_(std::move(address)) {}
  ~StaticRunnerLease() override;
  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }
  const std::string& secret() const override { return secret_; }
  bool needs_bind() const override { return false; }
  std::string describe() const override { return "runner " + address_; }

 private:
  StaticRunnerProvider* owner_;
  size_t index_;
  std::shared_ptr<grpc::Channel> channel_;
  const std::string& secret_;
  std::string address_;
};

class StaticRunnerProvider : public RunnerProvider {
 public:
  StaticRunnerProvider(std::vector<std::string> addresses, std::string secret)
      : addresses_(std::move(addresses)), secret_(std::move(secret)), busy_(addresses_.size()) {
    for (const auto& a : addresses_) {
      channels_.push_back(grpc::CreateChannel(a, grpc::InsecureChannelCredentials()));
    }
  }

  std::string name() const override { return "static"; }

  absl::Status Available() const override {
    if (addresses_.empty()) return absl::FailedPreconditionError("no --runner-addresses");
    if (secret_.size() < 32) {
      return absl::FailedPreconditionError("ANIMA_RUNNER_SECRET must be at least 32 characters");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<RunnerLease>> Acquire(const WorkspaceLimits& /*limits*/,
                                                       const AttemptContext& context) override {
    if (auto s = Available(); !s.ok()) return s;
    std::unique_lock lock(mu_);
    bool told = false;
    while (true) {
      for (size_t i = 0; i < addresses_.size(); ++i) {
        size_t index = (next_ + i) % addresses_.size();
        if (busy_[index]) continue;
        busy_[index] = true;
        next_ = index + 1;
        return std::make_unique<StaticRunnerLease>(this, index, channels_[index], secret_,
                                                   addresses_[index]);
      }
      if (context.cancel != nullptr && context.cancel->cancelled()) {
        return absl::CancelledError("cancelled while waiting for a runner");
      }
      if (!told && context.waiting) {
        told = true;
        std::string reason =
            absl::StrCat("waiting for a sandbox runner: all ", addresses_.size(), " are busy");
        lock.unlock();
        context.waiting(reason);
        lock.lock();
        continue;
      }
      // Woken by a release; a cancellation is seen within the interval.
      free_cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
  }

  void Free(size_t index) {
    std::lock_guard lock(mu_);
    busy_[index] = false;
    free_cv_.notify_one();
  }

 private:
  std::vector<std::string> addresses_;
  std::string secret_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<bool> busy_;
  size_t next_ = 0;
};

StaticRunnerLease::~StaticRunnerLease() { owner_->Free(index_); }

// --- Agent Sandbox ----------------------------------------------------------------------------

class ClaimLease : public RunnerLease {
 public:
  ClaimLease(AgentSandboxClient* client, SandboxClaimInfo claim, int port)
      : client_(client), claim_(std::move(claim)), secret_(NewRunnerSecret()) {
    std::string host = claim_.pod_ip.find(':') != std::string::npos
                           ? "[" + claim_.pod_ip + "]"  // IPv6
                           : claim_.pod_ip;
    channel_ =
        grpc::CreateChannel(absl::StrCat(host, ":", port), grpc::InsecureChannelCredentials());
  }
  ~ClaimLease() override {
    if (auto s = client_->Release(claim_.name); !s.ok()) {
      // The periodic orphan sweep and the claim's shutdownTime catch it later.
      spdlog::warn("sandbox: cannot delete claim {}: {}", claim_.name, std::string(s.message()));
    }
  }
  std::shared_ptr<grpc::Channel> channel() const override { return channel_; }
  const std::string& secret() const override { return secret_; }
  bool needs_bind() const override { return true; }
  std::string describe() const override {
    return absl::StrCat("claim ", claim_.name, " (pod ", claim_.pod_ip, ")");
  }

 private:
  AgentSandboxClient* client_;
  SandboxClaimInfo claim_;
  std::string secret_;
  std::shared_ptr<grpc::Channel> channel_;
};

class AgentSandboxProvider : public RunnerProvider {
 public:
  AgentSandboxProvider(std::unique_ptr<AgentSandboxClient> client, int port,
                       std::chrono::seconds cleanup_interval)
      : client_(std::move(client)), port_(port), interval_(cleanup_interval) {
    sweeper_ = std::thread([this] { Sweep(); });
  }
  ~AgentSandboxProvider() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    sweeper_.join();
  }

  std::string name() const override { return "agent-sandbox"; }
  // Configuration was checked when the client was made; API trouble is transient (Degraded).
  absl::Status Available() const override { return absl::OkStatus(); }
  std::string Degraded() const override {
    absl::Status s = client_->last_error();
    return s.ok() ? "" : absl::StrCat("Kubernetes API: ", s.message());
  }

  absl::StatusOr<std::unique_ptr<RunnerLease>> Acquire(const WorkspaceLimits& /*limits*/,
                                                       const AttemptContext& context) override {
    // The first sweep deletes every claim labelled with this replica: a claim made before it
    // ends would be taken for a predecessor's.
    first_sweep_.wait();
    static const std::function<void(const std::string&)> kIgnore = [](const std::string&) {};
    auto claim =
        client_->Claim(context.job_id, context.cancel, context.waiting ? context.waiting : kIgnore);
    if (!claim.ok()) return claim.status();
    return std::make_unique<ClaimLease>(client_.get(), *std::move(claim), port_);
  }

 private:
  // Claims a crashed replica left behind: at start, those past their age and those of this
  // replica's name (it holds none yet: attempts wait for this sweep, so their own claims are not
  // taken for a predecessor's), then periodically those past their age. A failed first sweep
  // leaves a predecessor's young claims to the age limit (and the controller's shutdownTime).
  void Sweep() {
    bool first = true;
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      auto deleted = client_->DeleteOrphans(first);
      if (first) first_sweep_done_.set_value();
      if (!deleted.ok()) {
        spdlog::warn("sandbox: cannot clean up orphaned claims: {}",
                     std::string(deleted.status().message()));
      } else if (*deleted > 0) {
        spdlog::info("sandbox: deleted {} orphaned sandbox claims", *deleted);
      }
      first = false;
      lock.lock();
      cv_.wait_for(lock, interval_, [&] { return stopping_; });
    }
  }

  std::unique_ptr<AgentSandboxClient> client_;
  int port_;
  std::chrono::seconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::promise<void> first_sweep_done_;
  std::shared_future<void> first_sweep_ = first_sweep_done_.get_future().share();
  std::thread sweeper_;
};

}  // namespace

std::unique_ptr<RunnerProvider> MakeLocalRunnerProvider(Sandbox* bwrap, std::string runner_binary,
                                                        SandboxLimits limits) {
  return std::make_unique<LocalRunnerProvider>(bwrap, std::move(runner_binary), limits);
}

std::unique_ptr<RunnerProvider> MakeStaticRunnerProvider(std::vector<std::string> addresses,
                                                         std::string secret) {
  return std::make_unique<StaticRunnerProvider>(std::move(addresses), std::move(secret));
}

std::unique_ptr<RunnerProvider> MakeAgentSandboxProvider(std::unique_ptr<AgentSandboxClient> client,
                                                         int port,
                                                         std::chrono::seconds cleanup_interval) {
  return std::make_unique<AgentSandboxProvider>(std::move(client), port, cleanup_interval);
}

}  // namespace anima::selfcoding
