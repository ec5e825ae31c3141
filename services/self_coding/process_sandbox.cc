// Sandbox implementations: bubblewrap; contained, for a process already inside a sandbox of its
// own; and unsandboxed for development.
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
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
constexpr int kReportFd = 3;   // SandboxCommand::report or SandboxCommand::connection_fd
constexpr int kSeccompFd = 4;  // bwrap --seccomp (bwrap closes it before the command starts)
constexpr int kStatusFd = 5;   // bwrap --json-status-fd (not passed on to the command)
constexpr int kProgramFd = 6;  // bwrap --ro-bind-data of SandboxCommand::program (it closes it)

std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// argv[0] of a contained command as execve wants it: looked up in the PATH the command is given
// (/usr/bin:/bin) here, before fork, because execvpe would search the service's own PATH and
// may allocate. A name found nowhere is left as it is and fails in execve like a missing file.
std::string CommandPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  for (const char* dir : {"/usr/bin", "/bin"}) {
    std::string path = std::string(dir) + "/" + name;
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return name;
}

// How many threads this process has now ("Threads:" in /proc/self/status); 1 if unreadable.
int ThreadsOfThisProcess() {
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 1;
  std::string status;
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) status.append(buf, static_cast<size_t>(n));
  close(fd);
  size_t at = status.find("\nThreads:");
  if (at == std::string::npos) return 1;
  int threads = std::atoi(status.c_str() + at + std::strlen("\nThreads:"));
  return threads > 0 ? threads : 1;
}

// The resource limits of a contained command, computed before fork. Each is capped at this
// process's own hard limit: an unprivileged process cannot raise a hard limit, and a limit the
// sandbox around the service already set lower is the one that holds anyway.
struct ChildLimits {
  static constexpr int kCount = 5;
  int resource[kCount] = {RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_CORE};
  struct rlimit value[kCount] = {};
};

// RLIMIT_AS for the limits: memory_bytes 0 is none (a runner built with a sanitizer).
rlim_t AddressSpaceLimit(const SandboxLimits& lim) {
  return lim.memory_bytes > 0 ? static_cast<rlim_t>(lim.memory_bytes) : RLIM_INFINITY;
}

ChildLimits ContainedLimits(const SandboxLimits& lim) {
  ChildLimits out;
  // RLIMIT_NPROC counts every process and thread of the uid, and the command runs as the
  // service's uid: the service's own threads count against it. So the limit is max_processes
  // plus the threads this process has now; threads it starts later (gRPC grows its pool on
  // demand) come out of the command's share.
  const rlim_t soft[ChildLimits::kCount] = {
      static_cast<rlim_t>(lim.cpu_seconds), AddressSpaceLimit(lim),
      static_cast<rlim_t>(lim.max_processes + ThreadsOfThisProcess()),
      static_cast<rlim_t>(lim.file_size_bytes), 0};
  for (int i = 0; i < ChildLimits::kCount; ++i) {
    // Soft CPU below hard: SIGXCPU (a clear reason) comes before SIGKILL.
    rlim_t hard = out.resource[i] == RLIMIT_CPU ? soft[i] + 1 : soft[i];
    struct rlimit current;
    if (getrlimit(out.resource[i], &current) == 0 && current.rlim_max != RLIM_INFINITY) {
      hard = std::min(hard, current.rlim_max);
    }
    out.value[i].rlim_max = hard;
    out.value[i].rlim_cur = std::min(soft[i], hard);
  }
  return out;
}

// In a forked child: tells the parent through `fd` which setup step failed and why (errno, then
// the text), and exits. Async-signal-safe.
template <size_t N>
[[noreturn]] void ChildSetupFailed(int fd, const char (&what)[N]) {
  int error = errno;
  (void)!write(fd, &error, sizeof(error));
  (void)!write(fd, what, N - 1);
  _exit(127);
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

// "16 MiB", or "200 KiB" for a limit below a MiB (which would read as "0 MiB").
std::string MiB(int64_t bytes) {
  if (bytes < (1 << 20)) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes >> 20, " MiB");
}

bool Contains(const std::string& s, const char* needle) {
  return s.find(needle) != std::string::npos;
}

// The fds a run opens, closed however it ends (the parent drops the child's ends after fork).
struct RunFds {
  ~RunFds() {
    for (int fd : {input, output, report, seccomp, status, child.input, child.output, child.report,
                   child.seccomp, child.status, child.program}) {
      if (fd >= 0) close(fd);
    }
  }
  // The parent's ends; the child's ends are in `child`.
  int input = -1, output = -1, report = -1, seccomp = -1, status = -1;
  struct {
    int input = -1, output = -1, report = -1, seccomp = -1, status = -1, program = -1;
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

// A workspace directory on disk, for kNone and kContained.
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
    if (mode_ == SandboxMode::kBubblewrap) {
      if (bwrap_.empty()) {
        available_ = absl::FailedPreconditionError(
            "bubblewrap (bwrap) is not installed: self-coding jobs are refused; install it, or "
            "start with --sandbox=none to run generated code UNSANDBOXED (development only)");
        return;
      }
      if (FindExecutable("prlimit").empty()) {
        available_ = absl::FailedPreconditionError("prlimit (util-linux) is not installed");
        return;
      }
    }
    // Contained code shares its runner's network namespace: no IP sockets for it.
    auto program = SandboxSeccompProgram(/*deny_network=*/mode_ == SandboxMode::kContained);
    if (!program.ok()) {
      available_ = absl::FailedPreconditionError(program.status().message());
      return;
    }
    seccomp_program_ = *std::move(program);
    if (mode_ == SandboxMode::kContained) {
      // seccomp_export_bpf writes the program as struct sock_filter records in host order,
      // which is what PR_SET_SECCOMP takes; copied into records so the child needs no cast.
      if (seccomp_program_.size() % sizeof(sock_filter) != 0 ||
          seccomp_program_.size() / sizeof(sock_filter) > BPF_MAXINSNS) {
        available_ = absl::FailedPreconditionError(absl::StrCat(
            "the seccomp program has an unexpected size (", seccomp_program_.size(), " bytes)"));
        return;
      }
      seccomp_filter_.resize(seccomp_program_.size() / sizeof(sock_filter));
      std::memcpy(seccomp_filter_.data(), seccomp_program_.data(), seccomp_program_.size());
      ProveContained();
      return;
    }
    // Prove that namespaces, the filter and bwrap work here (containers often forbid them).
    auto workspace =
        CreateWorkspace("", "", WorkspaceLimits{.max_bytes = 1 << 20, .max_files = 8}, {});
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
  std::string name() const override {
    switch (mode_) {
      case SandboxMode::kBubblewrap:
        return "bwrap";
      case SandboxMode::kContained:
        return "contained";
      case SandboxMode::kNone:
        break;
    }
    return "none";
  }
  std::string workspace_mount() const override {
    return mode_ == SandboxMode::kBubblewrap ? kMount : "";
  }

  absl::StatusOr<std::unique_ptr<Workspace>> CreateWorkspace(
      const std::string& parent_dir, const std::string& name, const WorkspaceLimits& limits,
      const AttemptContext& /*context*/) override {
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
    Where where;
    if (mode_ == SandboxMode::kBubblewrap) {
      auto& tmpfs = static_cast<TmpfsWorkspace&>(workspace);
      where.userns = tmpfs.userns_fd();
      where.mntns = tmpfs.mntns_fd();
      where.home = kMount;
    } else {
      auto& host = static_cast<HostWorkspace&>(workspace);
      where.dir = host.dir_fd();
      where.home = host.path();
    }
    return Execute(command, where, workspace.limits(), cancel);
  }

 private:
  // Where a command runs: the workspace's namespaces (bwrap), or its directory (the others).
  struct Where {
    int userns = -1, mntns = -1, dir = -1;
    std::string home;
  };

  // The contained sandbox's trial run: `true` in "/" under the rlimits, no_new_privs and the
  // filter, so a kernel (or gVisor) that refuses any of them is found before a job is.
  void ProveContained() {
    int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
      available_ = absl::FailedPreconditionError(absl::StrCat("cannot open /: ", strerror(errno)));
      return;
    }
    SandboxCommand cmd;
    cmd.argv = {"true"};
    cmd.limits.wall_time = std::chrono::seconds(10);
    CancelToken never;
    auto result = Execute(cmd, Where{.dir = root, .home = "/"},
                          WorkspaceLimits{.max_bytes = 1 << 20, .max_files = 8}, &never);
    close(root);
    if (!result.ok() || !result->ok()) {
      available_ = absl::FailedPreconditionError(absl::StrCat(
          "the contained sandbox cannot run commands here: ",
          result.ok()
              ? absl::StripAsciiWhitespace(result->output.substr(0, 300) + " " + result->reason)
              : std::string(result.status().message())));
    }
  }

  absl::StatusOr<SandboxResult> Execute(const SandboxCommand& command, const Where& where,
                                        const WorkspaceLimits& space, CancelToken* cancel) {
    if (command.argv.empty()) return absl::InvalidArgumentError("empty command");
    if (command.input.size() > kMaxInput) return absl::InvalidArgumentError("input too large");
    if (command.connection_fd >= 0 && command.report) {
      return absl::InvalidArgumentError(
          "a command gets either a connection or a report pipe at fd 3, not both");
    }
    const SandboxLimits& lim = command.limits;
    const bool bwrap = mode_ == SandboxMode::kBubblewrap;
    const bool contained = mode_ == SandboxMode::kContained;
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
              "--bind", TmpfsWorkspace::kTmpPath, "/tmp"};
      if (!command.program.empty()) {
        // A copy, read from an fd opened here: the run's mount namespace has the workspace's
        // tmpfs over /tmp, so a program under /tmp cannot be bound by its path there (bwrap
        // resolves --ro-bind-fd to a path too). The copy lives in bwrap's own root, outside the
        // workspace's limits, for as long as the command runs.
        argv.insert(argv.end(), {"--perms", "0555", "--ro-bind-data", std::to_string(kProgramFd),
                                 kSandboxProgramPath});
      }
      argv.insert(argv.end(), {
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
              lim.memory_bytes > 0 ? absl::StrCat("--as=", lim.memory_bytes) : "--as=unlimited",
              absl::StrCat("--nproc=", lim.max_processes),
              absl::StrCat("--fsize=", lim.file_size_bytes),
              "--core=0",
              "--"});
      // clang-format on
      argv.insert(argv.end(), command.argv.begin(), command.argv.end());
      if (!command.program.empty()) argv[argv.size() - command.argv.size()] = kSandboxProgramPath;
    } else {
      argv = command.argv;
    }
    CArgs args(argv);
    // What execve runs: bwrap itself; else the program, or argv[0] found in the command's PATH.
    // Only kNone without a program searches in the child (execvpe), as it always has.
    std::string exec_path = argv[0];
    if (!command.program.empty() && !bwrap) {
      exec_path = command.program;
    } else if (contained) {
      exec_path = CommandPath(argv[0]);
    }
    const bool search_path = mode_ == SandboxMode::kNone && command.program.empty();
    const int userns = where.userns, mntns = where.mntns, dir = where.dir;
    std::vector<std::string> env_strings = {"PATH=/usr/bin:/bin", "HOME=" + where.home,
                                            "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1",
                                            "PYTHONUNBUFFERED=1"};
    if (kBuiltWithSanitizer && !command.program.empty()) {
      // Our own program (the runner), built with a sanitizer too: LeakSanitizer stops the world
      // with ptrace, which the sandbox denies, and would fail its exit. Its leaks are checked
      // where it runs outside a sandbox (the runner's own tests).
      env_strings.push_back("ASAN_OPTIONS=detect_leaks=0");
    }
    CArgs env(env_strings);
    const int uid = uid_;
    const ChildLimits child_limits = contained ? ContainedLimits(lim) : ChildLimits{};
    const sock_fprog filter{static_cast<unsigned short>(seccomp_filter_.size()),
                            const_cast<sock_filter*>(seccomp_filter_.data())};

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
      if (!command.program.empty()) {
        fds.child.program = open(command.program.c_str(), O_RDONLY | O_CLOEXEC);
        if (fds.child.program < 0) {
          return absl::InternalError(
              absl::StrCat("cannot open the program ", command.program, ": ", strerror(errno)));
        }
      }
    }
    // bwrap's JSON status, or the contained child's setup failure (ChildSetupFailed): both say
    // whether the command started.
    if ((bwrap || contained) && !MakePipe(&fds.status, &fds.child.status)) return fail("pipe");
    // The caller's socket goes to fd 3 in place of a report pipe; it stays the caller's.
    const int fd3 = command.connection_fd >= 0 ? command.connection_fd : fds.child.report;
    // Where each fd goes in the child; -1: nothing there.
    const int targets[] = {fds.child.input,   fds.child.output, fds.child.output, fd3,
                           fds.child.seccomp, fds.child.status, fds.child.program};
    const int target_count = !bwrap ? 4 : fds.child.program >= 0 ? 7 : 6;
    const int setup_fd = fds.child.status;

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
      if (contained) {
        // The limits, no_new_privs, then the filter; a failure of any ends the child before the
        // command starts, and the parent reports it as a setup failure.
        for (int i = 0; i < ChildLimits::kCount; ++i) {
          if (setrlimit(child_limits.resource[i], &child_limits.value[i]) != 0) {
            ChildSetupFailed(setup_fd, "cannot set the resource limits");
          }
        }
        // no_new_privs: nothing exec'd gains privileges (setuid binaries, file capabilities);
        // it is also what lets an unprivileged process load a filter.
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
          ChildSetupFailed(setup_fd, "cannot set no_new_privs");
        }
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filter) != 0) {
          ChildSetupFailed(setup_fd, "cannot load the seccomp filter");
        }
        // The setup pipe's write end closes below (close_range, or a dup2 over it): end of file
        // there tells the parent the setup succeeded.
      }
      // The namespace and directory fds may sit at the numbers the targets below take.
      // Out of the way of the targets first, so no dup2 below overwrites a source.
      int moved[7];
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
      // An ignored signal stays ignored across exec: the command gets SIGPIPE back (services
      // ignore it), so `producer | head` ends the producer as it would anywhere else.
      signal(SIGPIPE, SIG_DFL);
      if (mode_ == SandboxMode::kNone) {
        struct rlimit r;
        r.rlim_cur = static_cast<rlim_t>(lim.cpu_seconds);
        r.rlim_max = r.rlim_cur + 1;
        setrlimit(RLIMIT_CPU, &r);
        r.rlim_cur = r.rlim_max = AddressSpaceLimit(lim);
        setrlimit(RLIMIT_AS, &r);
        r.rlim_cur = r.rlim_max = static_cast<rlim_t>(lim.max_processes);
        setrlimit(RLIMIT_NPROC, &r);
        r.rlim_cur = r.rlim_max = static_cast<rlim_t>(lim.file_size_bytes);
        setrlimit(RLIMIT_FSIZE, &r);
        r.rlim_cur = r.rlim_max = 0;
        setrlimit(RLIMIT_CORE, &r);
      }
      if (search_path) {
        execvpe(args.ptrs[0], args.ptrs.data(), env.ptrs.data());
      } else {
        execve(exec_path.c_str(), args.ptrs.data(), env.ptrs.data());
      }
      static const char kMsg[] = "sandbox: cannot execute the command\n";
      (void)!write(2, kMsg, sizeof(kMsg) - 1);
      _exit(127);
    }
    for (int* fd : {&fds.child.input, &fds.child.output, &fds.child.report, &fds.child.seccomp,
                    &fds.child.status, &fds.child.program}) {
      if (*fd >= 0) close(*fd);
      *fd = -1;
    }
    SandboxResult result = Supervise(pid, fds.output, fds.report, lim, command.on_output, cancel);
    // An empty reason: not stopped by Supervise, which kills bwrap before it can report.
    if (bwrap && result.reason.empty() && !Contains(ReadAll(fds.status), "\"exit-code\"")) {
      // bwrap reports an exit code only once the command has started: this is a setup failure.
      return absl::InternalError(absl::StrCat(
          "the sandbox could not start: ", absl::StripAsciiWhitespace(result.output.substr(0, 500)),
          " ", result.reason));
    }
    if (contained) {
      // Anything there is ChildSetupFailed's errno and text: the command never started.
      std::string setup = ReadAll(fds.status);
      if (setup.size() > sizeof(int)) {
        int error;
        std::memcpy(&error, setup.data(), sizeof(error));
        return absl::InternalError(absl::StrCat(
            "the sandbox could not start: ", setup.substr(sizeof(int)), ": ", strerror(error)));
      }
    }
    if (result.reason.empty()) result.reason = ExplainFailure(result, lim, space);
    return result;
  }

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
  // cancellation. Sets `reason` only when it killed the run. `on_output` (optional) sees each
  // piece of output that is kept, as it is read.
  SandboxResult Supervise(pid_t pid, int fd, int report_fd, const SandboxLimits& lim,
                          const std::function<void(std::string_view)>& on_output,
                          CancelToken* cancel) {
    SandboxResult result;
    auto deadline = std::chrono::steady_clock::now() + lim.wall_time;
    bool killed = false;
    auto kill_tree = [&](std::string reason) {
      if (killed) return;
      killed = true;
      result.reason = std::move(reason);
      // The group ends the contained and the unsandboxed tree; with bwrap, killing bwrap takes
      // its PID namespace (and so every process in it) down through --die-with-parent.
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
      const size_t kept = static_cast<size_t>(std::clamp<int64_t>(room, 0, n));
      result.output.append(buf, kept);
      if (on_output && kept > 0) on_output(std::string_view(buf, kept));
      if (n > room) kill_tree(absl::StrCat("output limit (", MiB(lim.output_bytes), ") exceeded"));
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
    // What the command left behind in its group (a daemon that closed its output) does not
    // outlive the run. The kernel does not reuse the id while the group has a member; with none
    // left this finds nothing (ESRCH).
    if (mode_ == SandboxMode::kContained) kill(-pid, SIGKILL);
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
  int uid_;                                  // the uid to drop to, or -1 when not running as root
  std::string seccomp_program_;              // as bwrap --seccomp reads it
  std::vector<sock_filter> seccomp_filter_;  // the same, for PR_SET_SECCOMP (kContained)
  absl::Status available_;
};

}  // namespace

std::unique_ptr<Sandbox> MakeSandbox(SandboxMode mode, std::string bwrap_path, int sandbox_uid) {
  return std::make_unique<ProcessSandbox>(mode, std::move(bwrap_path), sandbox_uid);
}

}  // namespace anima::selfcoding
