// anima-sandbox-runner: runs one self-coding attempt's commands inside a sandbox of its own (a
// gVisor pod, a container, bubblewrap), driven over gRPC. See docs/sandbox-runner.md.
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "services/common/flags.h"
#include "services/common/logging.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/sandbox_runner/runner.h"
#include "services/sandbox_runner/runner_service.h"
#include "services/self_coding/sandbox.h"
#include "spdlog/spdlog.h"

namespace {

namespace fs = std::filesystem;
using anima::sandboxrunner::StopReason;

constexpr char kSecretEnv[] = "ANIMA_RUNNER_SECRET";

// The secret from the environment, which is then scrubbed: the bytes are zeroed where they lie
// (the initial environment block that /proc/<pid>/environ shows) and the variable removed, so
// neither the commands (whose environment is built afresh anyway) nor a reader of /proc find it.
std::string TakeSecretFromEnvironment() {
  char* value = std::getenv(kSecretEnv);
  if (value == nullptr) return "";
  std::string secret(value);
  explicit_bzero(value, secret.size());
  unsetenv(kSecretEnv);
  return secret;
}

int Fail(const std::string& message) {
  std::cerr << "anima-sandbox-runner: " << message << "\n";
  return 2;
}

int Run(int argc, char** argv) {
  // Not dumpable: code running as the same uid (the commands) can neither ptrace this process
  // nor read its memory or environment through /proc.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  anima::common::BlockShutdownSignals();
  std::string secret = TakeSecretFromEnvironment();

  std::string listen = "0.0.0.0:7070";
  int fd = -1;
  std::string workspace_dir = "/workspace";
  int idle_timeout_s = 600;
  bool exit_after_release = false;
  int max_workspace_mb = 64, max_workspace_files = 10000, max_cpu_seconds = 60;
  int max_memory_mb = 2048, max_processes = 128, max_file_size_mb = 64, max_output_mb = 4;
  int max_wall_s = 300;
  std::string log_format = "text", log_level = "info", ready_file;
  anima::common::FlagSet flags("anima-sandbox-runner");
  flags.Add("listen", &listen, "ANIMA_RUNNER_LISTEN", "host:port to serve on (port 0 picks one)");
  flags.Add("fd", &fd, "ANIMA_RUNNER_FD",
            "serve this inherited, connected socket instead of listening (-1: listen)");
  flags.Add("workspace-dir", &workspace_dir, "ANIMA_RUNNER_WORKSPACE_DIR",
            "directory the runner owns; each session's workspace is a fresh subdirectory");
  flags.Add("idle-timeout-s", &idle_timeout_s, "ANIMA_RUNNER_IDLE_TIMEOUT_S",
            "once bound, exit after this long with no call in flight (0: never)");
  flags.Add("exit-after-release", &exit_after_release, "ANIMA_RUNNER_EXIT_AFTER_RELEASE",
            "exit once a Release has been answered");
  flags.Add("max-workspace-mb", &max_workspace_mb, "ANIMA_RUNNER_MAX_WORKSPACE_MB",
            "most bytes a workspace may be given (MiB)");
  flags.Add("max-workspace-files", &max_workspace_files, "ANIMA_RUNNER_MAX_WORKSPACE_FILES",
            "most files and directories a workspace may be given");
  flags.Add("max-cpu-seconds", &max_cpu_seconds, "ANIMA_RUNNER_MAX_CPU_SECONDS",
            "most CPU seconds per process of a command");
  flags.Add("max-memory-mb", &max_memory_mb, "ANIMA_RUNNER_MAX_MEMORY_MB",
            "most address space per process of a command (MiB)");
  flags.Add("max-processes", &max_processes, "ANIMA_RUNNER_MAX_PROCESSES",
            "most processes a command may start");
  flags.Add("max-file-size-mb", &max_file_size_mb, "ANIMA_RUNNER_MAX_FILE_SIZE_MB",
            "largest file a command may write (MiB)");
  flags.Add("max-output-mb", &max_output_mb, "ANIMA_RUNNER_MAX_OUTPUT_MB",
            "most output a command may print (MiB); more ends it");
  flags.Add("max-wall-s", &max_wall_s, "ANIMA_RUNNER_MAX_WALL_S",
            "longest a command may run (seconds)");
  flags.Add("log-format", &log_format, "ANIMA_RUNNER_LOG_FORMAT", "text or json");
  flags.AddEnvFallback("log-format", "ANIMA_LOG_FORMAT");
  flags.Add("log-level", &log_level, "ANIMA_RUNNER_LOG_LEVEL", "trace, debug, info, warn, error");
  flags.AddEnvFallback("log-level", "ANIMA_LOG_LEVEL");
  flags.Add("ready-file", &ready_file, "ANIMA_RUNNER_READY_FILE",
            "once serving, write {\"grpc\":port} (or {\"fd\":fd}) here");
  if (auto s = flags.Parse(argc, argv); !s.ok()) return Fail(std::string(s.message()));
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  if (auto s = anima::common::InitLogging("sandbox-runner", log_format, log_level); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  for (const auto& [name, value] :
       {std::pair{"--max-workspace-mb", max_workspace_mb},
        std::pair{"--max-workspace-files", max_workspace_files},
        std::pair{"--max-cpu-seconds", max_cpu_seconds},
        std::pair{"--max-memory-mb", max_memory_mb}, std::pair{"--max-processes", max_processes},
        std::pair{"--max-file-size-mb", max_file_size_mb},
        std::pair{"--max-output-mb", max_output_mb}, std::pair{"--max-wall-s", max_wall_s}}) {
    if (value <= 0) return Fail(std::string(name) + ": must be at least 1");
  }
  if (idle_timeout_s < 0) return Fail("--idle-timeout-s: must be 0 or more");
  if (fd < 0 && listen.empty()) return Fail("--listen or --fd is required");
  std::error_code ec;
  fs::path workspace = fs::absolute(workspace_dir, ec);
  if (ec || !fs::is_directory(workspace, ec)) {
    return Fail("--workspace-dir: " + workspace_dir + " is not a directory");
  }

  auto sandbox = anima::selfcoding::MakeSandbox(anima::selfcoding::SandboxMode::kContained);
  if (auto s = sandbox->Available(); !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }
  anima::sandboxrunner::RunnerOptions options;
  options.workspace_dir = workspace.lexically_normal().string();
  options.idle_timeout = std::chrono::seconds(idle_timeout_s);
  options.exit_after_release = exit_after_release;
  auto& c = options.ceilings;
  c.workspace_bytes = int64_t{max_workspace_mb} << 20;
  c.workspace_files = max_workspace_files;
  c.cpu_seconds = max_cpu_seconds;
  c.memory_bytes = int64_t{max_memory_mb} << 20;
  c.max_processes = max_processes;
  c.file_size_bytes = int64_t{max_file_size_mb} << 20;
  c.output_bytes = int64_t{max_output_mb} << 20;
  c.wall_time = std::chrono::seconds(max_wall_s);
  anima::sandboxrunner::Runner runner(std::move(sandbox), options);
  if (!secret.empty()) {
    absl::Status bound = runner.Bind(secret);
    explicit_bzero(secret.data(), secret.size());
    if (!bound.ok()) return Fail(std::string(kSecretEnv) + ": " + std::string(bound.message()));
  }

  anima::sandboxrunner::RunnerService service(&runner);
  anima::sandboxrunner::RunnerServerOptions server_options{
      .listen = listen,
      .fd = fd,
      .max_receive_bytes = anima::sandboxrunner::MaxRequestBytes(c),
      .on_connection_closed = [&runner] { runner.Stop(StopReason::kConnectionClosed); }};
  auto server = anima::sandboxrunner::RunnerServer::Start(&service, server_options);
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  if (fd >= 0) {
    spdlog::info("serving the connection at fd {}; workspaces in {}", fd, options.workspace_dir);
  } else {
    spdlog::info("listening on {} (port {}); workspaces in {}", listen, (*server)->port(),
                 options.workspace_dir);
  }
  if (auto s = anima::common::WriteReadyFile(
          ready_file, {{fd >= 0 ? "fd" : "grpc", fd >= 0 ? fd : (*server)->port()}});
      !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }

  std::thread signals([&runner] {
    anima::common::WaitForShutdownSignal();
    runner.Stop(StopReason::kSignal);
  });
  StopReason reason = runner.WaitForStop();
  // Wakes the signal thread when something else ended the wait (it then stops nothing new).
  if (reason != StopReason::kSignal) pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  spdlog::info("stopping: {}", anima::sandboxrunner::StopReasonName(reason));
  // Calls in flight finish within the grace (a Release that ended the runner has its answer
  // sent; a Run stopped by a signal, its result). gRPC also waits that long for clients to close
  // idle connections before it drops them: the grace is what exiting can cost.
  (*server)->Shutdown(std::chrono::seconds(2));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return anima::common::RunMain("anima-sandbox-runner", Run, argc, argv);
}
