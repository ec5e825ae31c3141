// Sandbox implementations: bubblewrap, and unsandboxed for development.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "services/self_coding/sandbox.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::milliseconds kPollInterval{25};
constexpr char kMount[] = "/workspace";

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// argv/envp as the char* arrays execve wants, built before fork (no allocation in the child).
struct CArgs {
  explicit CArgs(const std::vector<std::string>& v) : strings(v) {
    for (auto& s : strings) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
  std::vector<std::string> strings;
  std::vector<char*> ptrs;
};

std::string MiB(int64_t bytes) { return absl::StrCat(bytes >> 20, " MiB"); }

bool Contains(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

class ProcessSandbox : public Sandbox {
 public:
  ProcessSandbox(SandboxMode mode, std::string bwrap, int uid, const std::string& probe_dir)
      : mode_(mode), bwrap_(FindExecutable(bwrap)), uid_(uid) {
    if (mode_ == SandboxMode::kNone) return;
    if (bwrap_.empty()) {
      available_ = absl::FailedPreconditionError(
          "bubblewrap (bwrap) is not installed: self-coding jobs are refused; install it, or start "
          "with --sandbox=none to run generated code UNSANDBOXED (development only)");
      return;
    }
    if (FindExecutable("prlimit").empty()) {
      available_ = absl::FailedPreconditionError("prlimit (util-linux) is not installed");
      return;
    }
    // Prove that namespaces can be created here (containers often forbid it).
    std::error_code ec;
    // In the directory the workspaces will live in: bwrap must be able to reach it as the uid it
    // runs as (a data directory under /root is not reachable by uid 65534).
    fs::path probe =
        fs::path(probe_dir.empty() ? fs::temp_directory_path(ec).string() : probe_dir) /
        absl::StrCat("sandbox-probe-", getpid());
    fs::create_directories(probe, ec);
    SandboxCommand cmd{{"true"}, probe.string(), SandboxLimits{}};
    cmd.limits.wall_time = std::chrono::seconds(10);
    CancelToken never;
    auto result = Run(cmd, &never);
    fs::remove_all(probe, ec);
    if (!result.ok() || !result->ok()) {
      available_ = absl::FailedPreconditionError(absl::StrCat(
          "bubblewrap cannot create a sandbox here: ",
          result.ok()
              ? absl::StripAsciiWhitespace(result->output.substr(0, 300) + " " + result->reason)
              : std::string(result.status().message()),
          " (the data directory must be reachable by the sandbox uid); start with "
          "--sandbox=none to run generated code UNSANDBOXED (development only)"));
    }
  }

  absl::Status Available() const override { return available_; }
  std::string name() const override { return mode_ == SandboxMode::kNone ? "none" : "bwrap"; }
  std::string workspace_mount() const override { return mode_ == SandboxMode::kNone ? "" : kMount; }

  absl::StatusOr<SandboxResult> Run(const SandboxCommand& command, CancelToken* cancel) override {
    if (command.argv.empty()) return absl::InvalidArgumentError("empty command");
    const SandboxLimits& lim = command.limits;
    bool drop_to_uid = mode_ == SandboxMode::kBubblewrap && geteuid() == 0 && uid_ > 0;
    if (drop_to_uid) {
      std::error_code ec;
      if (chown(command.workspace.c_str(), uid_, uid_) != 0) {
        return absl::InternalError(absl::StrCat("chown workspace: ", strerror(errno)));
      }
      for (auto it = fs::recursive_directory_iterator(command.workspace, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        lchown(it->path().c_str(), uid_, uid_);
      }
    }
    std::vector<std::string> argv;
    if (mode_ == SandboxMode::kBubblewrap) {
      // clang-format off
      argv = {bwrap_,
              "--ro-bind", "/usr", "/usr",
              "--symlink", "usr/lib", "/lib",
              "--symlink", "usr/lib64", "/lib64",
              "--symlink", "usr/bin", "/bin",
              "--symlink", "usr/sbin", "/sbin",
              "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
              "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
              "--proc", "/proc",
              "--dev", "/dev",
              // A private /tmp, bounded so it cannot eat the host's memory.
              "--size", std::to_string(lim.file_size_bytes * 4), "--tmpfs", "/tmp",
              "--bind", command.workspace, kMount,
              // Everything but the workspace and the private /tmp is read-only, the root too.
              "--remount-ro", "/",
              "--chdir", kMount,
              "--unshare-all",
              "--die-with-parent",
              "--new-session",
              "--",
              "/usr/bin/prlimit",
              // Soft below hard: SIGXCPU (a clear reason) comes before SIGKILL.
              absl::StrCat("--cpu=", lim.cpu_seconds, ":", lim.cpu_seconds + 1),
              absl::StrCat("--as=", lim.memory_bytes),
              absl::StrCat("--nproc=", lim.max_processes),
              absl::StrCat("--fsize=", lim.file_size_bytes),
              "--core=0",
              "--"};
      // clang-format on
      argv.insert(argv.end(), command.argv.begin(), command.argv.end());
    } else {
      argv = command.argv;
    }
    CArgs args(argv);
    CArgs env({"PATH=/usr/bin:/bin",
               absl::StrCat("HOME=",
                            mode_ == SandboxMode::kNone ? command.workspace : std::string(kMount)),
               "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"});
    std::string workspace = command.workspace;
    bool set_limits = mode_ == SandboxMode::kNone;
    int uid = uid_;

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
      return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
    }
    pid_t pid = fork();
    if (pid < 0) {
      close(pipefd[0]);
      close(pipefd[1]);
      return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(errno)));
    }
    if (pid == 0) {
      // Child: only async-signal-safe calls from here to exec.
      setsid();
      int devnull = open("/dev/null", O_RDONLY);
      dup2(devnull, 0);
      dup2(pipefd[1], 1);
      dup2(pipefd[1], 2);
      syscall(SYS_close_range, 3, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      if (set_limits) {
        if (chdir(workspace.c_str()) != 0) _exit(126);
        struct rlimit r;
        r.rlim_cur = static_cast<rlim_t>(lim.cpu_seconds);
        r.rlim_max = r.rlim_cur + 1;
        setrlimit(RLIMIT_CPU, &r);
        r.rlim_cur = r.rlim_max = static_cast<rlim_t>(lim.memory_bytes);
        setrlimit(RLIMIT_AS, &r);
        r.rlim_cur = r.rlim_max = static_cast<rlim_t>(lim.max_processes);
        setrlimit(RLIMIT_NPROC, &r);
        r.rlim_cur = r.rlim_max = static_cast<rlim_t>(lim.file_size_bytes);
        setrlimit(RLIMIT_FSIZE, &r);
        r.rlim_cur = r.rlim_max = 0;
        setrlimit(RLIMIT_CORE, &r);
        execvpe(args.ptrs[0], args.ptrs.data(), env.ptrs.data());
      } else {
        if (drop_to_uid) {
          gid_t gid = static_cast<gid_t>(uid);
          if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
              setresuid(uid, uid, uid) != 0) {
            _exit(126);
          }
        }
        execve(args.ptrs[0], args.ptrs.data(), env.ptrs.data());
      }
      static const char kMsg[] = "sandbox: cannot execute the command\n";
      (void)!write(2, kMsg, sizeof(kMsg) - 1);
      _exit(127);
    }
    close(pipefd[1]);
    return Supervise(pid, pipefd[0], lim, cancel);
  }

 private:
  // Reads the output and waits for `pid`, killing its whole tree on a limit or cancellation.
  SandboxResult Supervise(pid_t pid, int fd, const SandboxLimits& lim, CancelToken* cancel) {
    SandboxResult result;
    auto deadline = std::chrono::steady_clock::now() + lim.wall_time;
    bool killed = false;
    auto kill_tree = [&](std::string reason) {
      if (killed) return;
      killed = true;
      result.reason = std::move(reason);
      // The group ends the unsandboxed tree; with bwrap, killing bwrap takes its PID namespace
      // (and so every process in it) down through --die-with-parent.
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
    };
    bool eof = false;
    auto drain_until = std::chrono::steady_clock::time_point::max();
    char buf[65536];
    while (!eof) {
      auto now = std::chrono::steady_clock::now();
      if (killed && now > drain_until) break;  // a grandchild kept the pipe open; give up on it
      if (!killed && cancel != nullptr && cancel->cancelled()) {
        kill_tree("cancelled");
        result.cancelled = true;
      }
      if (!killed && now >= deadline) {
        kill_tree(
            absl::StrCat("wall time limit (", lim.wall_time.count() / 1000.0, " s) exceeded"));
      }
      if (killed && drain_until == std::chrono::steady_clock::time_point::max()) {
        drain_until = now + std::chrono::seconds(2);
      }
      pollfd p{fd, POLLIN, 0};
      int rc = poll(&p, 1, static_cast<int>(kPollInterval.count()));
      if (rc < 0 && errno != EINTR) break;
      if (rc <= 0) continue;
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        eof = true;
        break;
      }
      if (killed) continue;
      int64_t room = lim.output_bytes - static_cast<int64_t>(result.output.size());
      if (n > room) {
        result.output.append(buf, static_cast<size_t>(std::max<int64_t>(room, 0)));
        kill_tree(absl::StrCat("output limit (", MiB(lim.output_bytes), ") exceeded"));
        continue;
      }
      result.output.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    int status = 0;
    while (true) {
      pid_t w = waitpid(pid, &status, killed ? 0 : WNOHANG);
      if (w == pid || (w < 0 && errno != EINTR)) break;
      if (w == 0) {
        // Output closed but the process lives on (it closed its stdout): keep enforcing limits.
        if (cancel != nullptr && cancel->cancelled()) {
          kill_tree("cancelled");
          result.cancelled = true;
        } else if (std::chrono::steady_clock::now() >= deadline) {
          kill_tree(
              absl::StrCat("wall time limit (", lim.wall_time.count() / 1000.0, " s) exceeded"));
        } else {
          std::this_thread::sleep_for(kPollInterval);
        }
      }
    }
    if (WIFEXITED(status)) {
      result.exit_code = WEXITSTATUS(status);
      // bwrap reports a command killed by signal N as exit 128+N.
      if (mode_ == SandboxMode::kBubblewrap && result.exit_code > 128 && result.exit_code < 160) {
        result.signal = result.exit_code - 128;
      }
    } else if (WIFSIGNALED(status)) {
      result.signal = WTERMSIG(status);
    }
    if (result.reason.empty()) result.reason = ExplainFailure(result, lim);
    return result;
  }

  static std::string ExplainFailure(const SandboxResult& r, const SandboxLimits& lim) {
    if (r.exit_code == 0 && r.signal == 0) return "";
    if (r.signal == SIGXCPU)
      return absl::StrCat("CPU time limit (", lim.cpu_seconds, " s) exceeded");
    if (r.signal == SIGXFSZ)
      return absl::StrCat("file size limit (", MiB(lim.file_size_bytes), ") exceeded");
    if (Contains(r.output, "MemoryError") || Contains(r.output, "std::bad_alloc") ||
        Contains(r.output, "Cannot allocate memory") || Contains(r.output, "out of memory")) {
      return absl::StrCat("memory limit (", MiB(lim.memory_bytes), ") exceeded");
    }
    if (Contains(r.output, "File too large")) {
      return absl::StrCat("file size limit (", MiB(lim.file_size_bytes), ") exceeded");
    }
    if (Contains(r.output, "Resource temporarily unavailable") ||
        Contains(r.output, "fork: retry")) {
      return absl::StrCat("process limit (", lim.max_processes, ") reached");
    }
    if (r.signal == SIGKILL) return "killed (a resource limit was reached)";
    if (r.signal != 0)
      return absl::StrCat("killed by signal ", r.signal, " (", strsignal(r.signal), ")");
    return "";  // a plain non-zero exit: the caller reads exit_code
  }

  SandboxMode mode_;
  std::string bwrap_;
  int uid_;
  absl::Status available_;
};

}  // namespace

std::unique_ptr<Sandbox> MakeSandbox(SandboxMode mode, std::string bwrap_path, int sandbox_uid,
                                     const std::string& probe_dir) {
  return std::make_unique<ProcessSandbox>(mode, std::move(bwrap_path), sandbox_uid, probe_dir);
}

}  // namespace anima::selfcoding
