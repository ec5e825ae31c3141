#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "services/self_coding/workspace.h"

namespace anima::selfcoding {

// A workspace on a tmpfs of its own, sized by the limits (size= and nr_inodes=, so the kernel
// stops a build or test that writes too much or too many files), mounted in a private mount
// namespace owned by a user namespace of its own. No process stays in them: this object's fds
// hold both namespaces and the tmpfs, and everything goes when it is destroyed.
//
// Inside that mount namespace the tmpfs is at /tmp, with the workspace at kWorkspacePath and a
// scratch /tmp for the sandbox at kTmpPath. A sandbox run enters both namespaces (setns) before
// starting bubblewrap, which then binds those paths: so the sandbox uid never walks the host's
// data directory, which can stay 0700.
class TmpfsWorkspace : public Workspace {
 public:
  static constexpr char kWorkspacePath[] = "/tmp/workspace";
  static constexpr char kTmpPath[] = "/tmp/tmp";

  // `sandbox_uid` >= 0 (only when running as root): the namespace maps every uid to itself and
  // the workspace belongs to `sandbox_uid`; -1: it maps only this process's uid and gid.
  static absl::StatusOr<std::unique_ptr<TmpfsWorkspace>> Create(const WorkspaceLimits& limits,
                                                                int sandbox_uid);
  ~TmpfsWorkspace() override;

  int userns_fd() const { return userns_fd_; }
  int mntns_fd() const { return mntns_fd_; }

 private:
  TmpfsWorkspace(int dir_fd, int sandbox_uid, WorkspaceLimits limits, int userns_fd, int mntns_fd)
      : Workspace(dir_fd, sandbox_uid, limits), userns_fd_(userns_fd), mntns_fd_(mntns_fd) {}

  int userns_fd_;
  int mntns_fd_;
};

}  // namespace anima::selfcoding
