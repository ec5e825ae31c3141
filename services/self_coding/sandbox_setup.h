#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "services/self_coding/sandbox.h"

namespace anima::common {
class FlagSet;
}

namespace anima::selfcoding {

// How the service runs generated code (--sandbox and the flags of each kind).
struct SandboxSetup {
  // bwrap: bubblewrap on this machine (default). runner-bwrap: an anima-sandbox-runner per
  // attempt inside bubblewrap, driven over gRPC (the remote path on one machine). runner: runners
  // at --runner-addresses sharing ANIMA_RUNNER_SECRET (compose). agent-sandbox: a runner per
  // attempt in a gVisor pod claimed from Agent Sandbox (Kubernetes). none: UNSANDBOXED.
  std::string mode = "bwrap";
  std::string bwrap = "bwrap";
  int sandbox_uid = 65534;
  std::string runner_binary;  // empty: anima-sandbox-runner next to this executable
  std::string runner_addresses;
  std::string runner_secret;  // from ANIMA_RUNNER_SECRET only (never a flag: argv is public)
  int runner_port = 7070;
  std::string warm_pool = "anima-runner";
  int64_t ready_timeout_ms = 120000;
  int64_t max_age_s = 3600;
  // Kubernetes API; empty: the in-cluster service account.
  std::string kube_api_url;
  std::string kube_token_file;
  std::string kube_ca_file;
  std::string kube_namespace;
  // This replica's name on its claims; empty: $HOSTNAME (the pod name).
  std::string replica;
  // The most any command may use (the larger of the build's and the tests' limits): a runner
  // under bubblewrap gets this much and room for itself above it.
  SandboxLimits command_ceiling;
};

void AddSandboxFlags(common::FlagSet& flags, SandboxSetup* setup);

// The sandbox `setup` asks for, and the local one it runs on (runner-bwrap), if any. An error
// is a configuration the service cannot start with (an unknown mode, runner without addresses);
// a sandbox that cannot run jobs here is returned and says why in Available().
struct Sandboxes {
  std::unique_ptr<Sandbox> local;
  std::unique_ptr<Sandbox> sandbox;
};
absl::StatusOr<Sandboxes> MakeSandboxes(SandboxSetup setup);

// A tiny program run through the whole sandbox path at start (a workspace, a file, python3, its
// output), so a sandbox that cannot run a job shows in the sandbox module before a user's job
// finds out. Runs on a thread of its own; the destructor waits for it.
class SandboxCanary {
 public:
  enum class State { kRunning, kPassed, kFailed };
  SandboxCanary(Sandbox* sandbox, std::string work_dir);
  ~SandboxCanary();
  State state() const;
  // "passed in 840 ms", "failed: <why>", "running for 3 s".
  std::string detail() const;

 private:
  void Run();

  Sandbox* sandbox_;
  std::string work_dir_;
  std::chrono::steady_clock::time_point started_;
  mutable std::mutex mu_;
  State state_ = State::kRunning;
  std::string detail_;
  CancelToken cancel_;
  std::thread thread_;
};

}  // namespace anima::selfcoding
