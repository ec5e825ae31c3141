#include "services/self_coding/sandbox_setup.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/common/flags.h"
#include "services/self_coding/agent_sandbox_client.h"
#include "services/self_coding/remote_sandbox.h"
#include "spdlog/spdlog.h"

namespace anima::selfcoding {

void AddSandboxFlags(common::FlagSet& flags, SandboxSetup* s) {
  flags.Add("sandbox", &s->mode, "ANIMA_SELF_CODING_SANDBOX",
            "where generated code runs: bwrap (bubblewrap here), runner-bwrap (a runner per "
            "attempt inside bubblewrap), runner (--runner-addresses), agent-sandbox (a gVisor pod "
            "per attempt from Agent Sandbox), or none (UNSANDBOXED, development only)");
  flags.Add("bwrap", &s->bwrap, "ANIMA_SELF_CODING_BWRAP", "the bubblewrap executable");
  flags.Add("sandbox-uid", &s->sandbox_uid, "ANIMA_SELF_CODING_SANDBOX_UID",
            "uid sandboxed code runs as when the service runs as root");
  flags.Add("runner-binary", &s->runner_binary, "ANIMA_SELF_CODING_RUNNER_BINARY",
            "anima-sandbox-runner for --sandbox=runner-bwrap (empty: next to this program)");
  flags.Add("runner-addresses", &s->runner_addresses, "ANIMA_RUNNER_ADDRESSES",
            "host:port of each runner for --sandbox=runner, comma-separated; the secret they "
            "share comes from ANIMA_RUNNER_SECRET");
  flags.Add("runner-port", &s->runner_port, "ANIMA_SELF_CODING_RUNNER_PORT",
            "the port runners listen on in their pods (--sandbox=agent-sandbox)");
  flags.Add("agent-sandbox-warm-pool", &s->warm_pool, "ANIMA_AGENT_SANDBOX_WARM_POOL",
            "the SandboxWarmPool claims name (it names the SandboxTemplate)");
  flags.Add("agent-sandbox-ready-timeout-ms", &s->ready_timeout_ms,
            "ANIMA_AGENT_SANDBOX_READY_TIMEOUT_MS",
            "how long an attempt waits for its claim to be Ready before it fails");
  flags.Add("agent-sandbox-max-age-s", &s->max_age_s, "ANIMA_AGENT_SANDBOX_MAX_AGE_S",
            "a claim older than this is an orphan (deleted by the sweep and, at its "
            "shutdownTime, by the controller)");
  flags.Add("kube-api-url", &s->kube_api_url, "ANIMA_KUBE_API_URL",
            "Kubernetes API server (empty: the in-cluster service account's)");
  flags.Add("kube-token-file", &s->kube_token_file, "ANIMA_KUBE_TOKEN_FILE",
            "bearer token file for --kube-api-url");
  flags.Add("kube-ca-file", &s->kube_ca_file, "ANIMA_KUBE_CA_FILE", "CA bundle for --kube-api-url");
  flags.Add("kube-namespace", &s->kube_namespace, "ANIMA_KUBE_NAMESPACE",
            "namespace of the claims (empty: the service account's)");
}

namespace {

std::string NextToSelf(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return name;
  return (self.parent_path() / name).string();
}

absl::StatusOr<std::unique_ptr<RunnerProvider>> MakeAgentSandboxRunners(const SandboxSetup& s) {
  AgentSandboxOptions options;
  if (s.kube_api_url.empty()) {
    auto api = InClusterApi();
    if (!api.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--sandbox=agent-sandbox: ", api.status().message(),
                       " (outside a pod, give --kube-api-url, --kube-token-file, --kube-ca-file "
                       "and --kube-namespace)"));
    }
    options.api = *api;
  } else {
    options.api = {.url = s.kube_api_url,
                   .token_file = s.kube_token_file,
                   .ca_file = s.kube_ca_file,
                   .namespace_name = s.kube_namespace};
  }
  if (!s.kube_namespace.empty()) options.api.namespace_name = s.kube_namespace;
  if (options.api.namespace_name.empty()) {
    return absl::InvalidArgumentError("--sandbox=agent-sandbox needs a namespace");
  }
  options.warm_pool = s.warm_pool;
  options.replica = s.replica;
  if (options.replica.empty()) {
    const char* host = std::getenv("HOSTNAME");
    char buf[256] = {};
    options.replica = host != nullptr ? host : (gethostname(buf, sizeof(buf) - 1) == 0 ? buf : "");
  }
  options.ready_timeout = std::chrono::milliseconds(s.ready_timeout_ms);
  options.max_age = std::chrono::seconds(s.max_age_s);
  auto client = AgentSandboxClient::Create(std::move(options));
  if (!client.ok()) return client.status();
  return MakeAgentSandboxProvider(*std::move(client), s.runner_port);
}

}  // namespace

absl::StatusOr<Sandboxes> MakeSandboxes(SandboxSetup s) {
  Sandboxes out;
  if (s.mode == "bwrap" || s.mode == "none") {
    out.sandbox = MakeSandbox(s.mode == "none" ? SandboxMode::kNone : SandboxMode::kBubblewrap,
                              s.bwrap, s.sandbox_uid);
    return out;
  }
  std::unique_ptr<RunnerProvider> provider;
  if (s.mode == "runner-bwrap") {
    out.local = MakeSandbox(SandboxMode::kBubblewrap, s.bwrap, s.sandbox_uid);
    // The runner process itself: room for its own threads above the commands' limits, and
    // alive as long as an attempt may take; each command gets its own, lower, limits from it.
    // (rlimits only go down: the runner's file size limit is its commands' ceiling.)
    SandboxLimits runner = s.command_ceiling;
    runner.cpu_seconds = 3600;
    runner.memory_bytes = kBuiltWithSanitizer ? 0 : runner.memory_bytes + (2LL << 30);
    runner.max_processes += 64;
    runner.output_bytes = 1 << 20;
    runner.wall_time = std::chrono::hours(1);
    provider = MakeLocalRunnerProvider(
        out.local.get(),
        s.runner_binary.empty() ? NextToSelf("anima-sandbox-runner") : s.runner_binary, runner);
  } else if (s.mode == "runner") {
    std::vector<std::string> addresses;
    for (absl::string_view a : absl::StrSplit(s.runner_addresses, ',', absl::SkipWhitespace())) {
      addresses.emplace_back(absl::StripAsciiWhitespace(a));
    }
    if (addresses.empty())
      return absl::InvalidArgumentError("--sandbox=runner needs --runner-addresses");
    if (s.runner_secret.size() < 32) {
      return absl::InvalidArgumentError(
          "--sandbox=runner needs ANIMA_RUNNER_SECRET (at least 32 characters) in the environment");
    }
    provider = MakeStaticRunnerProvider(std::move(addresses), s.runner_secret);
  } else if (s.mode == "agent-sandbox") {
    auto made = MakeAgentSandboxRunners(s);
    if (!made.ok()) return made.status();
    provider = *std::move(made);
  } else {
    return absl::InvalidArgumentError(
        "--sandbox must be bwrap, runner-bwrap, runner, agent-sandbox or none");
  }
  out.sandbox = MakeRemoteSandbox(std::move(provider));
  return out;
}

SandboxCanary::SandboxCanary(Sandbox* sandbox, std::string work_dir)
    : sandbox_(sandbox),
      work_dir_(std::move(work_dir)),
      started_(std::chrono::steady_clock::now()) {
  thread_ = std::thread([this] { Run(); });
}

SandboxCanary::~SandboxCanary() {
  cancel_.Cancel();
  thread_.join();
}

SandboxCanary::State SandboxCanary::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

std::string SandboxCanary::detail() const {
  std::lock_guard lock(mu_);
  if (state_ != State::kRunning) return detail_;
  auto elapsed =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_);
  return absl::StrCat("canary job running for ", elapsed.count(), " s",
                      detail_.empty() ? "" : ": " + detail_);
}

void SandboxCanary::Run() {
  auto finish = [&](State state, std::string detail) {
    std::lock_guard lock(mu_);
    state_ = state;
    detail_ = std::move(detail);
  };
  if (auto s = sandbox_->Available(); !s.ok()) {
    finish(State::kFailed, absl::StrCat("canary job not run: ", s.message()));
    return;
  }
  AttemptContext context{.job_id = "canary", .cancel = &cancel_, .waiting = {}};
  context.waiting = [this](const std::string& reason) {
    std::lock_guard lock(mu_);
    detail_ = reason;
  };
  auto workspace = sandbox_->CreateWorkspace(
      work_dir_, "canary", WorkspaceLimits{.max_bytes = 1 << 20, .max_files = 16}, context);
  absl::StatusOr<SandboxResult> run = absl::UnknownError("not run");
  if (!workspace.ok()) {
    run = workspace.status();
  } else {
    if (auto s = (*workspace)->WriteFile("canary.py", "print(sum(range(10)))\n"); !s.ok()) {
      run = s;
    } else {
      SandboxCommand command;
      command.argv = {"python3", "-I", "canary.py"};
      command.limits.wall_time = std::chrono::seconds(30);
      run = sandbox_->Run(command, **workspace, &cancel_);
    }
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started_)
                .count();
  if (!run.ok()) {
    finish(State::kFailed, absl::StrCat("canary job failed: ", run.status().message()));
  } else if (!run->ok() || absl::StripAsciiWhitespace(run->output) != "45") {
    finish(State::kFailed, absl::StrCat("canary job failed: exit ", run->exit_code, " ",
                                        run->reason, ": ", run->output.substr(0, 200)));
  } else {
    finish(State::kPassed, absl::StrCat("canary job passed in ", ms, " ms"));
  }
  if (state() == State::kFailed)
    spdlog::error("sandbox {}: {}", sandbox_->name(), detail());
  else
    spdlog::info("sandbox {}: {}", sandbox_->name(), detail());
}

}  // namespace anima::selfcoding
