#include "services/self_coding/workspace.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::selfcoding {
namespace {

// Closes an fd at scope exit unless released.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

absl::Status Errno(const std::string& what, const std::string& path) {
  int e = errno;
  std::string message = absl::StrCat(what, " ", path, ": ", strerror(e));
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(message);
  if (e == ELOOP || e == ENOTDIR || e == EEXIST) return absl::FailedPreconditionError(message);
  return absl::InternalError(message);
}

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

}  // namespace

std::string UnsafePathReason(std::string_view path_view) {
  absl::string_view path(path_view.data(), path_view.size());
  if (path.empty()) return "the path is empty";
  if (path.size() > 255) return "the path is longer than 255 bytes";
  if (path.front() == '/') return "the path is absolute";
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    if (part.empty()) return "the path has an empty component";
    if (part == "." || part == "..") return "the path has a \".\" or \"..\" component";
    if (part.front() == '-' || part.front() == '@') {
      return "a path component starts with '-' or '@' (it would read as a command-line option)";
    }
    for (char c : part) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f || c == '\\' || c == ':') {
        return "the path has a backslash, a colon or a control character";
      }
    }
  }
  return "";
}

Workspace::Workspace(int dir_fd, int owner_uid, WorkspaceLimits limits)
    : dir_fd_(dir_fd), owner_uid_(owner_uid), limits_(limits) {}

Workspace::~Workspace() {
  if (dir_fd_ >= 0) close(dir_fd_);
}

absl::Status Workspace::WriteFile(std::string_view path_view, std::string_view content) {
  const std::string path(path_view);
  if (std::string reason = UnsafePathReason(path); !reason.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("refused to write \"", path, "\": ", reason));
  }
  if (bytes_ + static_cast<int64_t>(content.size()) > limits_.max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the files are too large for the workspace (",
                                                     bytes_ + content.size(), " bytes with ", path,
                                                     ", at most ", limits_.max_bytes, ")"));
  }
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  FdCloser dir(fcntl(dir_fd_, F_DUPFD_CLOEXEC, 0));
  if (dir.get() < 0) return Errno("dup", "the workspace");
  auto over_count = [&] {
    return absl::ResourceExhaustedError(absl::StrCat("too many files for the workspace (at most ",
                                                     limits_.max_files, " files and directories)"));
  };
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const std::string& name = parts[i];
    int next = openat(dir.get(), name.c_str(), kDirFlags);
    if (next < 0 && errno == ENOENT) {
      if (files_ + 1 > limits_.max_files) return over_count();
      if (mkdirat(dir.get(), name.c_str(), 0755) != 0) return Errno("mkdir", path);
      files_++;
      next = openat(dir.get(), name.c_str(), kDirFlags);
      if (next >= 0 && owner_uid_ >= 0 && fchown(next, owner_uid_, owner_uid_) != 0) {
        close(next);
        return Errno("chown", path);
      }
    }
    // ELOOP or ENOTDIR: a symlink or a file where a directory should be.
    if (next < 0) return Errno("open the directory of", path);
    dir.reset(next);
  }
  if (files_ + 1 > limits_.max_files) return over_count();
  const std::string& name = parts.back();
  // O_EXCL also refuses a symlink in the last place, dangling or not.
  FdCloser file(
      openat(dir.get(), name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (file.get() < 0) return Errno("create", path);
  files_++;
  if (owner_uid_ >= 0 && fchown(file.get(), owner_uid_, owner_uid_) != 0) {
    return Errno("chown", path);
  }
  std::string_view rest = content;
  while (!rest.empty()) {
    ssize_t n = write(file.get(), rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("write", path);
    rest.remove_prefix(static_cast<size_t>(n));
  }
  bytes_ += static_cast<int64_t>(content.size());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Workspace::ReadFile(std::string_view path_view,
                                                size_t max_bytes) const {
  const std::string path(path_view);
  if (std::string reason = UnsafePathReason(path); !reason.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("refused to read \"", path, "\": ", reason));
  }
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  FdCloser dir(fcntl(dir_fd_, F_DUPFD_CLOEXEC, 0));
  if (dir.get() < 0) return Errno("dup", "the workspace");
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int next = openat(dir.get(), parts[i].c_str(), kDirFlags);
    if (next < 0) return errno == ENOENT ? absl::NotFoundError(path) : Errno("open", path);
    dir.reset(next);
  }
  FdCloser file(
      openat(dir.get(), parts.back().c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (file.get() < 0) return errno == ENOENT ? absl::NotFoundError(path) : Errno("open", path);
  struct stat st;
  if (fstat(file.get(), &st) != 0) return Errno("stat", path);
  if (!S_ISREG(st.st_mode))
    return absl::FailedPreconditionError(absl::StrCat(path, " is not a file"));
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = read(file.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno("read", path);
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat(path, " is larger than ", max_bytes, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace anima::selfcoding
