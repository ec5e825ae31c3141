#include "services/self_coding/data_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;

absl::Status Refuse(const std::string& path, const std::string& problem) {
  return absl::FailedPreconditionError(absl::StrCat("--data-dir ", path, ": ", problem));
}

}  // namespace

absl::StatusOr<std::string> PrepareDataDir(const std::string& path) {
  std::error_code ec;
  // Lexically normal, not canonical: canonicalising would resolve the symlinks this refuses.
  fs::path absolute = fs::absolute(path, ec).lexically_normal();
  if (ec) return Refuse(path, ec.message());
  if (!absolute.has_filename() && absolute != absolute.root_path()) {
    absolute = absolute.parent_path();  // a trailing slash
  }
  const uid_t uid = geteuid();
  fs::path prefix = absolute.root_path();
  const fs::path relative = absolute.relative_path();
  for (auto it = relative.begin(); it != relative.end(); ++it) {
    prefix /= *it;
    const bool last = std::next(it) == relative.end();
    struct stat st;
    if (lstat(prefix.c_str(), &st) != 0) {
      if (errno != ENOENT) return Refuse(prefix.string(), strerror(errno));
      // Intermediate directories too: nothing of this path exists for others to hold yet.
      if (mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
        return Refuse(prefix.string(), absl::StrCat("cannot create it: ", strerror(errno)));
      }
      if (lstat(prefix.c_str(), &st) != 0) return Refuse(prefix.string(), strerror(errno));
    }
    if (S_ISLNK(st.st_mode)) {
      return Refuse(
          absolute.string(),
          absl::StrCat(prefix.string(), " is a symlink; give the real path (no symlink in it)"));
    }
    if (!S_ISDIR(st.st_mode)) {
      return Refuse(absolute.string(), absl::StrCat(prefix.string(), " is not a directory"));
    }
    if (last) break;
    // Group-writable is fine when the group is this service's own: a Kubernetes volume with
    // fsGroup is root:<the pod's gid>, mode 2775, and the data directory is made inside it.
    bool group_others = (st.st_mode & S_IWGRP) != 0 && st.st_gid != getegid();
    bool others_can_rename =
        (group_others || (st.st_mode & S_IWOTH) != 0) && (st.st_mode & S_ISVTX) == 0;
    if (others_can_rename || (st.st_uid != 0 && st.st_uid != uid)) {
      return Refuse(absolute.string(),
                    absl::StrFormat("its parent %s (owner uid %d, mode %04o) can be changed by "
                                    "another user, who could swap the path for a symlink",
                                    prefix.string(), st.st_uid, st.st_mode & 07777));
    }
  }
  // Opened without following, so the checks above and below are about the same directory.
  int fd = open(absolute.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return Refuse(absolute.string(), strerror(errno));
  struct stat st;
  int rc = fstat(fd, &st);
  close(fd);
  if (rc != 0) return Refuse(absolute.string(), strerror(errno));
  if (st.st_uid != uid) {
    return Refuse(
        absolute.string(),
        absl::StrFormat("owned by uid %d, not by this service's uid %d; chown it", st.st_uid, uid));
  }
  if ((st.st_mode & 077) != 0) {
    return Refuse(absolute.string(),
                  absl::StrFormat("mode %04o lets other users in; it must be 0700 (chmod 700 %s)",
                                  st.st_mode & 07777, absolute.string()));
  }
  return absolute.string();
}

}  // namespace anima::selfcoding
