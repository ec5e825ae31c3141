#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/self_coding/sandbox.h"

namespace grpc {
class Channel;
}

namespace anima::selfcoding {

class AgentSandboxClient;

// One anima-sandbox-runner held for one attempt. Destroying the lease gives the runner back:
// the local provider waits for (or kills) its bubblewrap process, the static one frees the
// address, the Agent Sandbox one deletes the claim.
class RunnerLease {
 public:
  virtual ~RunnerLease() = default;
  virtual std::shared_ptr<grpc::Channel> channel() const = 0;
  // The per-claim secret every call carries as `authorization: Bearer`.
  virtual const std::string& secret() const = 0;
  // Whether the runner was started without a secret and must first be bound to secret().
  virtual bool needs_bind() const = 0;
  // For reasons and logs: "claim anima-3f… (pod 10.4.1.7)", "runner 10.0.0.5:7070".
  virtual std::string describe() const = 0;
};

// Where runners come from.
class RunnerProvider {
 public:
  virtual ~RunnerProvider() = default;
  virtual std::string name() const = 0;  // "bwrap", "static", "agent-sandbox"
  // OK when runners can be had; otherwise why not (a missing runner binary, no secret).
  virtual absl::Status Available() const = 0;
  // What went wrong lately although runners may still be had (the last Kubernetes API error).
  virtual std::string Degraded() const { return ""; }
  // A runner for one attempt whose workspace holds at most `limits`, waiting for one when none
  // is free at once (telling context.waiting why) until it is there, context.cancel fires, or
  // the provider gives up.
  virtual absl::StatusOr<std::unique_ptr<RunnerLease>> Acquire(const WorkspaceLimits& limits,
                                                               const AttemptContext& context) = 0;
};

struct RemoteSandboxOptions {
  // Deadline of the calls that are not a command (Bind, PutWorkspace, Release).
  std::chrono::milliseconds call_timeout{10000};
  // A command's call gets its wall time plus this, for the runner to stop it and answer.
  std::chrono::milliseconds run_grace{5000};
};

// The Sandbox that runs each attempt on a runner from `provider`, over gRPC
// (proto/anima/v1/sandbox_runner.proto). CreateWorkspace acquires the runner (and binds it);
// files written to the workspace are kept in memory, checked against the same path rules and
// limits as a local workspace, and sent in one PutWorkspace before the first command; Run
// streams the command's output back; destroying the workspace releases the runner. A runner
// that goes away mid-command is an error status naming it (the attempt fails as a sandbox
// failure, not as the code's).
std::unique_ptr<Sandbox> MakeRemoteSandbox(std::unique_ptr<RunnerProvider> provider,
                                           RemoteSandboxOptions options = {});

// A runner per attempt, started inside bubblewrap by `bwrap` (a kBubblewrap sandbox) from
// `runner_binary`, on one end of a socketpair (--fd): no network, no listening socket, the
// remote path on any machine. Each runner's workspace is a tmpfs of the attempt's workspace
// limits, so the kernel bounds what the commands write as it does for kBubblewrap. `limits`
// bound the runner process itself; the runner applies each command's own limits below them.
std::unique_ptr<RunnerProvider> MakeLocalRunnerProvider(Sandbox* bwrap, std::string runner_binary,
                                                        SandboxLimits limits);

// Runners at fixed addresses (host:port), each serving one attempt at a time, all sharing one
// secret (compose: the runner container). Acquire waits while every runner is busy.
std::unique_ptr<RunnerProvider> MakeStaticRunnerProvider(std::vector<std::string> addresses,
                                                         std::string secret);

// A runner per attempt in its own pod, claimed from Agent Sandbox, reached at its pod IP on
// `port`, bound to a fresh 256-bit secret. Orphaned claims are deleted now (including any this
// replica's name left behind) and every `cleanup_interval` after.
std::unique_ptr<RunnerProvider> MakeAgentSandboxProvider(
    std::unique_ptr<AgentSandboxClient> client, int port,
    std::chrono::seconds cleanup_interval = std::chrono::seconds(60));

// 256 random bits as hex, from the kernel's generator: a per-claim secret.
std::string NewRunnerSecret();

}  // namespace anima::selfcoding
