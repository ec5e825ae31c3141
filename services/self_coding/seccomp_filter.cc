#include "services/self_coding/seccomp_filter.h"

#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace anima::selfcoding {
namespace {

struct ContextDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

absl::Status Failed(const std::string& what, int rc) {
  return absl::InternalError(absl::StrCat("seccomp filter: ", what, ": ", strerror(-rc)));
}

}  // namespace

absl::StatusOr<std::string> SandboxSeccompProgram(bool deny_network) {
  std::unique_ptr<void, ContextDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (ctx == nullptr) return absl::InternalError("seccomp filter: seccomp_init failed");
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  for (int syscall : {SCMP_SYS(unshare),
                      SCMP_SYS(setns),
                      SCMP_SYS(mount),
                      SCMP_SYS(umount2),
                      SCMP_SYS(pivot_root),
                      SCMP_SYS(ptrace),
                      SCMP_SYS(process_vm_readv),
                      SCMP_SYS(process_vm_writev),
                      SCMP_SYS(keyctl),
                      SCMP_SYS(add_key),
                      SCMP_SYS(request_key),
                      SCMP_SYS(bpf),
                      SCMP_SYS(perf_event_open),
                      SCMP_SYS(userfaultfd),
                      SCMP_SYS(kexec_load),
                      SCMP_SYS(init_module),
                      SCMP_SYS(finit_module),
                      SCMP_SYS(delete_module),
                      SCMP_SYS(open_by_handle_at),
                      SCMP_SYS(fsopen),
                      SCMP_SYS(fsmount),
                      SCMP_SYS(move_mount),
                      SCMP_SYS(open_tree),
                      SCMP_SYS(mount_setattr)}) {
    if (int rc = seccomp_rule_add(ctx.get(), eperm, syscall, 0); rc != 0) {
      return Failed(absl::StrCat("rule for syscall ", syscall), rc);
    }
  }
  // One rule per flag: a masked compare matches when the flag is set, whatever else is.
  for (uint64_t flag : {CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS,
                        CLONE_NEWIPC, CLONE_NEWCGROUP}) {
    if (int rc = seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(clone), 1,
                                  SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
        rc != 0) {
      return Failed("clone rule", rc);
    }
  }
  if (int rc = seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc != 0) {
    return Failed("clone3 rule", rc);
  }
  if (deny_network) {
    for (int family : {AF_INET, AF_INET6, AF_PACKET}) {
      if (int rc = seccomp_rule_add(ctx.get(), eperm, SCMP_SYS(socket), 1,
                                    SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(family)));
          rc != 0) {
        return Failed("socket rule", rc);
      }
    }
  }
  int fd = memfd_create("anima-seccomp", MFD_CLOEXEC);
  if (fd < 0) return absl::InternalError(absl::StrCat("memfd_create: ", strerror(errno)));
  if (int rc = seccomp_export_bpf(ctx.get(), fd); rc != 0) {
    close(fd);
    return Failed("export", rc);
  }
  std::string program;
  char buf[4096];
  ssize_t n;
  lseek(fd, 0, SEEK_SET);
  while ((n = read(fd, buf, sizeof(buf))) > 0) program.append(buf, static_cast<size_t>(n));
  close(fd);
  if (n < 0 || program.empty()) return absl::InternalError("seccomp filter: empty program");
  return program;
}

}  // namespace anima::selfcoding
