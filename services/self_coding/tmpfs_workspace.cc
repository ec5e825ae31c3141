#include "services/self_coding/tmpfs_workspace.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace anima::selfcoding {
namespace {

// What the helper reports through its pipe: the step it reached, and errno when it failed.
struct HelperMessage {
  char step = 0;  // 'u' namespaces made, 'm' tmpfs mounted, or a failure step below
  int error = 0;
};

const char* StepName(char step) {
  switch (step) {
    case '1':
      return "unshare(CLONE_NEWUSER|CLONE_NEWNS) (are user namespaces allowed here?)";
    case '2':
      return "making the mounts private";
    case '3':
      return "mounting the workspace tmpfs on /tmp";
    case '4':
      return "creating the workspace directories";
    case '5':
      return "handing the workspace to the sandbox uid";
    default:
      return "preparing the namespace";
  }
}

bool ReadMessage(int fd, HelperMessage* m) {
  ssize_t n;
  do {
    n = read(fd, m, sizeof(*m));
  } while (n < 0 && errno == EINTR);
  return n == sizeof(*m);
}

absl::Status WriteProcFile(pid_t pid, const char* name, const std::string& text) {
  std::string path = absl::StrCat("/proc/", pid, "/", name);
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("open ", path, ": ", strerror(errno)));
  ssize_t n = write(fd, text.data(), text.size());
  int e = errno;
  close(fd);
  if (n != static_cast<ssize_t>(text.size())) {
    return absl::InternalError(absl::StrCat("write ", path, ": ", strerror(e)));
  }
  return absl::OkStatus();
}

}  // namespace

TmpfsWorkspace::~TmpfsWorkspace() {
  close(userns_fd_);
  close(mntns_fd_);
}

absl::StatusOr<std::unique_ptr<TmpfsWorkspace>> TmpfsWorkspace::Create(
    const WorkspaceLimits& limits, int sandbox_uid) {
  // The root, the workspace and the scratch directory take three inodes.
  const std::string options =
      absl::StrCat("size=", limits.max_bytes, ",nr_inodes=", limits.max_files + 3, ",mode=0755");
  int report[2], go[2];
  if (pipe2(report, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  if (pipe2(go, O_CLOEXEC) != 0) {
    close(report[0]);
    close(report[1]);
    return absl::InternalError("pipe failed");
  }
  pid_t pid = fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls.
    close(report[0]);
    close(go[1]);
    auto say = [&](char step, int error) {
      HelperMessage m{step, error};
      (void)!write(report[1], &m, sizeof(m));
    };
    auto fail = [&](char step) {
      say(step, errno);
      _exit(1);
    };
    if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) fail('1');
    say('u', 0);
    char c;
    if (read(go[0], &c, 1) != 1) _exit(1);  // the parent gave up before writing the maps
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail('2');
    // /tmp because every system has it (bubblewrap itself needs it); in this namespace only.
    if (mount("anima-workspace", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      fail('3');
    }
    if (mkdir(kWorkspacePath, 0700) != 0 || mkdir(kTmpPath, 0700) != 0) fail('4');
    if (sandbox_uid >= 0 && (chown(kWorkspacePath, sandbox_uid, sandbox_uid) != 0 ||
                             chown(kTmpPath, sandbox_uid, sandbox_uid) != 0)) {
      fail('5');
    }
    say('m', 0);
    while (read(go[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  close(report[1]);
  close(go[0]);
  if (pid < 0) {
    close(report[0]);
    close(go[1]);
    return absl::ResourceExhaustedError(absl::StrCat("fork: ", strerror(errno)));
  }
  absl::Status status;
  int userns = -1, mntns = -1, dir = -1;
  HelperMessage m;
  if (!ReadMessage(report[0], &m) || m.step != 'u') {
    status = absl::FailedPreconditionError(absl::StrCat(
        "cannot make the workspace namespace: ", StepName(m.step), ": ", strerror(m.error)));
  } else {
    // As root every uid maps to itself, so the sandbox uid keeps its identity; otherwise only
    // our own uid exists in there (and setgroups must be refused first, as the kernel wants).
    status = sandbox_uid >= 0
                 ? WriteProcFile(pid, "uid_map", "0 0 4294967295")
                 : WriteProcFile(pid, "uid_map", absl::StrCat(getuid(), " ", getuid(), " 1"));
    if (status.ok()) {
      status = sandbox_uid >= 0 ? WriteProcFile(pid, "gid_map", "0 0 4294967295")
                                : WriteProcFile(pid, "setgroups", "deny");
    }
    if (status.ok() && sandbox_uid < 0) {
      status = WriteProcFile(pid, "gid_map", absl::StrCat(getgid(), " ", getgid(), " 1"));
    }
    if (status.ok() && write(go[1], "g", 1) != 1) status = absl::InternalError("helper gone");
    if (status.ok() && (!ReadMessage(report[0], &m) || m.step != 'm')) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "cannot make the workspace tmpfs: ", StepName(m.step), ": ", strerror(m.error)));
    }
    if (status.ok()) {
      // /proc/PID/root leads into the helper's mount namespace, where the tmpfs is.
      std::string proc = absl::StrCat("/proc/", pid);
      userns = open((proc + "/ns/user").c_str(), O_RDONLY | O_CLOEXEC);
      mntns = open((proc + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
      dir = open((proc + "/root" + kWorkspacePath).c_str(),
                 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (userns < 0 || mntns < 0 || dir < 0) {
        status = absl::InternalError(
            absl::StrCat("cannot open the workspace namespace: ", strerror(errno)));
      }
    }
  }
  close(go[1]);
  close(report[0]);
  if (!status.ok()) kill(pid, SIGKILL);
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  if (!status.ok()) {
    for (int fd : {userns, mntns, dir}) {
      if (fd >= 0) close(fd);
    }
    return status;
  }
  return std::unique_ptr<TmpfsWorkspace>(
      new TmpfsWorkspace(dir, sandbox_uid, limits, userns, mntns));
}

}  // namespace anima::selfcoding
