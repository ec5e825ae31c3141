// Sandbox implementations: bubblewrap, and unsandboxed for development.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
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
#include "services/self_coding/seccomp_filter.h"
#include "services/self_coding/tmpfs_workspace.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;

constexpr std::chrono::milliseconds kPollInterval{25};
constexpr char kMount[] = "/workspace";
constexpr size_t kMaxInput = 4096;

// The fds a sandboxed command's process starts with, above stdin, stdout and stderr.
constexpr int kReportFd = 3;   // SandboxCommand::report
constexpr int kSeccompFd = 4;  // bwrap --seccomp (bwrap closes it before the command starts)
constexpr int kStatusFd = 5;   // bwrap --json-status-fd (not passed on to the command)

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

// The fds a run opens, closed however it ends.
struct RunFds {
  ~RunFds() {
    for (int fd : {input, output, report, seccomp, status}) {
      if (fd >= 0) close(fd);
    }
  }
  // The parent's ends; the child's ends are in `child`.
  int input = -1, output = -1, report = -1, seccomp = -1, status = -1;
  struct {
    int input = -1, output = -1, report = -1, seccomp = -1, status = -1;
  } child;
};

// A pipe whose read end is `*read_end` and write end `*write_end`, both close-on-exec.
bool MakePipe(int* read_end, int* write_end) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return false;
  *read_end = p[0];
  *write_end = p[1];
  return true;
}

// A pipe already holding `data` (which must fit in the pipe buffer) and at end of file.
int PipeWith(const std::string& data) {
  int r, w;
  if (!MakePipe(&r, &w)) return -1;
  bool ok = write(w, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  close(w);
  if (!ok) {
    close(r);
    return -1;
  }
  return r;
}

// A workspace directory on the host's disk, for kNone.
class HostWorkspace : public Workspace {
 public:
  HostWorkspace(int parent_fd, int dir_fd, std::string name, std::string path,
                WorkspaceLimits limits)
      : Workspace(dir_fd, -1, limits),
        parent_fd_(parent_fd),
        name_(std::move(name)),
        path_(std::move(path)) {}
  ~HostWorkspace() override {
    // By fd, so a symlink left in the parent's place cannot redirect the removal.
    std::error_code ec;
    fs::remove_all(fs::path(absl::StrCat("/proc/self/fd/", parent_fd_)) / name_, ec);
    close(parent_fd_);
  }
  using Workspace::dir_fd;
  // Where it was made (for HOME); the service never writes by this path.
  const std::string& path() const { return path_; }

 private:
  int parent_fd_;
  std::string name_;
  std::string path_;
};

// Opens a directory by walking `path` one component at a time, refusing symlinks.
int OpenDirNoFollow(const std::string& path) {
  if (path.empty() || path.front() != '/') return -1;
  int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  for (const auto& part : fs::path(path).relative_path()) {
    if (fd < 0) break;
    if (part.empty() || part == ".") continue;
    int next = openat(fd, part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    close(fd);
    fd = next;
  }
  return fd;
}

class ProcessSandbox : public Sandbox {
 public:
  ProcessSandbox(SandboxMode mode, std::string bwrap, int uid)
      : mode_(mode), bwrap_(FindExecutable(bwrap)), uid_(geteuid() == 0 && uid > 0 ? uid : -1) {
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
    auto program = SandboxSeccompProgram();
    if (!program.ok()) {
      available_ = absl::FailedPreconditionError(program.status().message());
      return;
    }
    seccomp_program_ = *std::move(program);
    // Prove that namespaces, the filter and bwrap work here (containers often forbid them).
    auto workspace = CreateWorkspace("", "", WorkspaceLimits{.max_bytes = 1 << 20, .max_files = 8});
    absl::StatusOr<SandboxResult> result = absl::UnknownError("no trial run");
    if (!workspace.ok()) {
      result = workspace.status();
    } else {
      SandboxCommand cmd;
      cmd.argv = {"true"};
      cmd.limits.wall_time = std::chrono::seconds(10);
      CancelToken never;
      result = Run(cmd, **workspace, &never);
    }
    if (!result.ok() || !result->ok()) {
      available_ = absl::FailedPreconditionError(absl::StrCat(
          "bubblewrap cannot create a sandbox here: ",
          result.ok()
              ? absl::StripAsciiWhitespace(result->output.substr(0, 300) + " " + result->reason)
              : std::string(result.status().message()),
          "; start with --sandbox=none to run generated code UNSANDBOXED (development only)"));
    }
  }

  absl::Status Available() const override { return available_; }
  std::string name() const override { return mode_ == SandboxMode::kNone ? "none" : "bwrap"; }
  std::string workspace_mount() const override { return mode_ == SandboxMode::kNone ? "" : kMount; }

  absl::StatusOr<std::unique_ptr<Workspace>> CreateWorkspace(
      const std::string& parent_dir, const std::string& name,
      const WorkspaceLimits& limits) override {
    if (limits.max_bytes < 4096 || limits.max_files < 1) {
      return absl::InvalidArgumentError("workspace limits must allow at least 4 KiB and one file");
    }
    if (mode_ == SandboxMode::kBubblewrap) return TmpfsWorkspace::Create(limits, uid_);
    if (std::string reason = UnsafePathReason(name);
        !reason.empty() || name.find('/') != name.npos) {
      return absl::InvalidArgumentError(absl::StrCat("workspace name \"", name, "\" refused"));
    }
    int parent = OpenDirNoFollow(parent_dir);
    if (parent < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot open ", parent_dir, " (no symlinks allowed): ", strerror(errno)));
    }
    std::error_code ec;
    fs::remove_all(fs::path(absl::StrCat("/proc/self/fd/", parent)) / name, ec);
    int dir = -1;
    if (mkdirat(parent, name.c_str(), 0700) == 0) {
      dir = openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (dir < 0) {
      std::string error = strerror(errno);
      close(parent);
      return absl::InternalError(absl::StrCat("cannot create the workspace ", name, ": ", error));
    }
    return std::make_unique<HostWorkspace>(parent, dir, name,
                                           (fs::path(parent_dir) / name).string(), limits);
  }

  absl::StatusOr<SandboxResult> Run(const SandboxCommand& command, Workspace& workspace,
                                    CancelToken* cancel) override {
    if (command.argv.empty()) return absl::InvalidArgumentError("empty command");
    if (command.input.size() > kMaxInput) return absl::InvalidArgumentError("input too large");
    const SandboxLimits& lim = command.limits;
    const bool bwrap = mode_ == SandboxMode::kBubblewrap;
    std::vector<std::string> argv;
    if (bwrap) {
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
              // Both from the workspace's tmpfs: what the code writes anywhere counts against
              // the workspace's bytes and files.
              "--bind", TmpfsWorkspace::kWorkspacePath, kMount,
              "--bind", TmpfsWorkspace::kTmpPath, "/tmp",
              // Everything but the workspace and /tmp is read-only, the root too.
              "--remount-ro", "/",
              "--chdir", kMount,
              "--unshare-all",
              "--unshare-user",
              "--disable-userns",
              "--die-with-parent",
              "--new-session",
              "--seccomp", std::to_string(kSeccompFd),
              "--json-status-fd", std::to_string(kStatusFd),
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
    int userns = -1, mntns = -1, dir = -1;
    std::string home = kMount;
    if (bwrap) {
      auto& tmpfs = static_cast<TmpfsWorkspace&>(workspace);
      userns = tmpfs.userns_fd();
      mntns = tmpfs.mntns_fd();
    } else {
      auto& host = static_cast<HostWorkspace&>(workspace);
      dir = host.dir_fd();
      home = host.path();
    }
    CArgs env({"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1",
               "PYTHONUNBUFFERED=1"});
    const int uid = uid_;

    RunFds fds;
    auto fail = [](const char* what) {
      return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
    };
    fds.child.input =
        command.input.empty() ? open("/dev/null", O_RDONLY | O_CLOEXEC) : PipeWith(command.input);
    if (fds.child.input < 0) return fail("stdin");
    if (!MakePipe(&fds.output, &fds.child.output)) return fail("pipe");
    if (command.report && !MakePipe(&fds.report, &fds.child.report)) return fail("pipe");
    if (bwrap) {
      fds.child.seccomp = PipeWith(seccomp_program_);
      if (fds.child.seccomp < 0) return fail("seccomp pipe");
      if (!MakePipe(&fds.status, &fds.child.status)) return fail("pipe");
    }
    // Where each fd goes in the child; -1: nothing there.
    const int targets[] = {fds.child.input,  fds.child.output,  fds.child.output,
                           fds.child.report, fds.child.seccomp, fds.child.status};
    const int target_count = bwrap ? 6 : 4;

    pid_t pid = fork();
    if (pid < 0) return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(errno)));
    if (pid == 0) {
      // Child: only async-signal-safe calls from here to exec.
      setsid();
      const int out = fds.child.output;
      if (bwrap) {
        // Into the workspace's namespaces (as the service user: the uid map is written), then
        // down to the sandbox uid, so bwrap does the rest unprivileged.
        if (setns(userns, CLONE_NEWUSER) != 0 || setns(mntns, CLONE_NEWNS) != 0) {
          static const char kMsg[] = "sandbox: cannot enter the workspace namespace\n";
          (void)!write(out, kMsg, sizeof(kMsg) - 1);
          _exit(127);
        }
        if (uid >= 0) {
          gid_t gid = static_cast<gid_t>(uid);
          if (setgroups(0, nullptr) != 0 || setresgid(gid, gid, gid) != 0 ||
              setresuid(uid, uid, uid) != 0) {
            static const char kMsg[] = "sandbox: cannot drop to the sandbox uid\n";
            (void)!write(out, kMsg, sizeof(kMsg) - 1);
            _exit(127);
          }
        }
      } else if (fchdir(dir) != 0) {
        _exit(126);
      }
      // The namespace and directory fds may sit at the numbers the targets below take.
      // Out of the way of the targets first, so no dup2 below overwrites a source.
      int moved[6];
      for (int i = 0; i < target_count; ++i) {
        moved[i] = targets[i] < 0 ? -1 : fcntl(targets[i], F_DUPFD, 10);
      }
      for (int i = 0; i < target_count; ++i) {
        if (moved[i] >= 0) {
          dup2(moved[i], i);
        } else {
          close(i);  // nothing of the service's may sit at an fd the command is told about
        }
      }
      syscall(SYS_close_range, target_count, ~0U, 0);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      if (!bwrap) {
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
        execve(args.ptrs[0], args.ptrs.data(), env.ptrs.data());
      }
      static const char kMsg[] = "sandbox: cannot execute the command\n";
      (void)!write(2, kMsg, sizeof(kMsg) - 1);
      _exit(127);
    }
    for (int* fd : {&fds.child.input, &fds.child.output, &fds.child.report, &fds.child.seccomp,
                    &fds.child.status}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    SandboxResult result = Supervise(pid, fds.output, fds.report, lim, cancel);
    // An empty reason: not stopped by Supervise, which kills bwrap before it can report.
    if (bwrap && result.reason.empty() && !Contains(ReadAll(fds.status), "\"exit-code\"")) {
      // bwrap reports an exit code only once the command has started: this is a setup failure.
      return absl::InternalError(absl::StrCat(
          "the sandbox could not start: ", absl::StripAsciiWhitespace(result.output.substr(0, 500)),
          " ", result.reason));
    }
    if (result.reason.empty()) result.reason = ExplainFailure(result, lim, workspace.limits());
    return result;
  }

 private:
  // Everything left in `fd` (a pipe whose writers are gone or stalled), at most 64 KiB.
  static std::string ReadAll(int fd) {
    std::string out;
    if (fd < 0) return out;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    char buf[4096];
    ssize_t n;
    while (out.size() < 65536 &&
           ((n = read(fd, buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR))) {
      if (n > 0) out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  // Reads the output (and the report) and waits for `pid`, killing its whole tree on a limit or
  // cancellation. Sets `reason` only when it killed the run.
  SandboxResult Supervise(pid_t pid, int fd, int report_fd, const SandboxLimits& lim,
                          CancelToken* cancel) {
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
      pollfd p[2] = {{fd, POLLIN, 0}, {report_fd, POLLIN, 0}};
      int rc = poll(p, report_fd >= 0 ? 2 : 1, static_cast<int>(kPollInterval.count()));
      if (rc < 0 && errno != EINTR) break;
      if (rc <= 0) continue;
      if (report_fd >= 0 && (p[1].revents & (POLLIN | POLLHUP)) != 0) {
        ssize_t n = read(report_fd, buf, sizeof(buf));
        if (n > 0 && result.report.size() < kReportBytes) {
          result.report.append(
              buf, std::min(static_cast<size_t>(n), kReportBytes - result.report.size()));
        } else if (n == 0) {
          report_fd = -1;  // at end of file; the caller closes it
        }
      }
      if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
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
    if (report_fd >= 0 && result.report.size() < kReportBytes) {
      result.report += ReadAll(report_fd).substr(0, kReportBytes - result.report.size());
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
    return result;
  }

  static std::string ExplainFailure(const SandboxResult& r, const SandboxLimits& lim,
                                    const WorkspaceLimits& space) {
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
    // ENOSPC from the workspace's tmpfs: out of bytes or out of inodes.
    if (Contains(r.output, "No space left on device")) {
      return absl::StrCat("workspace limit (", MiB(space.max_bytes), ", ", space.max_files,
                          " files) reached");
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
  int uid_;  // the uid to drop to, or -1 when not running as root
  std::string seccomp_program_;
  absl::Status available_;
};

}  // namespace

std::unique_ptr<Sandbox> MakeSandbox(SandboxMode mode, std::string bwrap_path, int sandbox_uid) {
  return std::make_unique<ProcessSandbox>(mode, std::move(bwrap_path), sandbox_uid);
}

}  // namespace anima::selfcoding
