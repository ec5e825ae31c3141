#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace anima::selfcoding {

// How much one attempt's workspace may hold: what the service writes into it and, under
// bubblewrap, what the build and the tests write too (the kernel enforces both there).
struct WorkspaceLimits {
  int64_t max_bytes = 64LL << 20;
  int max_files = 10000;  // files and directories
};

// Why a relative path may not be written: empty, absolute, ".", "..", empty components,
// backslashes, control characters, or a component starting with '-' or '@' (it would read as an
// option to the compiler or the shell, or as a response file to gcc). Empty when it is fine.
std::string UnsafePathReason(std::string_view path);

// A directory that one attempt's builds and tests run in, created by Sandbox::CreateWorkspace.
// Every access goes through a directory fd with O_NOFOLLOW on every component, so nothing the
// sandboxed code leaves behind (a symlink, a renamed directory) can redirect the service's writes
// outside. Not thread-safe; one attempt uses it at a time.
class Workspace {
 public:
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  virtual ~Workspace();

  // Creates `path` (relative, see UnsafePathReason) with `content`, and the directories leading
  // to it. Refuses an existing file, symlinks on the way, and going over the limits.
  virtual absl::Status WriteFile(std::string_view path, std::string_view content);
  // Reads a regular file of at most `max_bytes`, refusing symlinks on the way.
  virtual absl::StatusOr<std::string> ReadFile(std::string_view path,
                                               size_t max_bytes = 1 << 20) const;

  const WorkspaceLimits& limits() const { return limits_; }
  int64_t bytes_written() const { return bytes_; }
  int files_written() const { return files_; }

 protected:
  // Takes `dir_fd` (-1: a workspace that is not a local directory overrides WriteFile/ReadFile).
  // Files and directories it creates are chowned to `owner_uid` (-1: left as the service's), so the
  // sandboxed code can change them.
  Workspace(int dir_fd, int owner_uid, WorkspaceLimits limits);
  int dir_fd() const { return dir_fd_; }

 private:
  int dir_fd_;
  int owner_uid_;
  WorkspaceLimits limits_;
  int64_t bytes_ = 0;
  int files_ = 0;
};

}  // namespace anima::selfcoding
