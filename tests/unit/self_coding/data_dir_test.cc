#include "services/self_coding/data_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <gtest/gtest.h>

#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(PrepareDataDir, CreatesAMissingDirectoryPrivate) {
  TempDir root;
  auto dir = PrepareDataDir(root.path() + "/a/b/self-coding");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, root.path() + "/a/b/self-coding");
  EXPECT_EQ(ModeOf(*dir), 0700);
}

TEST(PrepareDataDir, AcceptsAPrivateDirectoryOwnedByThisUser) {
  TempDir root;
  fs::create_directory(root.path() + "/data");
  chmod((root.path() + "/data").c_str(), 0700);
  auto dir = PrepareDataDir(root.path() + "/data/");
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(*dir, root.path() + "/data");
}

TEST(PrepareDataDir, RefusesASymlinkedDataDirectory) {
  TempDir root;
  fs::create_directory(root.path() + "/real");
  chmod((root.path() + "/real").c_str(), 0700);
  fs::create_directory_symlink(root.path() + "/real", root.path() + "/link");
  auto dir = PrepareDataDir(root.path() + "/link");
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(dir.status().message().find(root.path() + "/link is a symlink"), std::string::npos)
      << dir.status();
}

TEST(PrepareDataDir, RefusesASymlinkHigherUpThePath) {
  TempDir root;
  fs::create_directories(root.path() + "/real/data");
  chmod((root.path() + "/real/data").c_str(), 0700);
  fs::create_directory_symlink(root.path() + "/real", root.path() + "/link");
  auto dir = PrepareDataDir(root.path() + "/link/data");
  EXPECT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("symlink"), std::string::npos) << dir.status();
}

TEST(PrepareDataDir, RefusesAWorldWritableOrGroupReadableDirectory) {
  TempDir root;
  std::string path = root.path() + "/data";
  fs::create_directory(path);
  chmod(path.c_str(), 0777);
  auto dir = PrepareDataDir(path);
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(dir.status().message().find("mode 0777"), std::string::npos) << dir.status();
  EXPECT_NE(dir.status().message().find(path), std::string::npos) << dir.status();
  chmod(path.c_str(), 0750);
  EXPECT_FALSE(PrepareDataDir(path).ok());
}

TEST(PrepareDataDir, RefusesADirectoryOfAnotherUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  TempDir root;
  std::string path = root.path() + "/data";
  fs::create_directory(path);
  chmod(path.c_str(), 0700);
  ASSERT_EQ(chown(path.c_str(), 65534, 65534), 0);
  auto dir = PrepareDataDir(path);
  EXPECT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("owned by uid 65534"), std::string::npos) << dir.status();
}

TEST(PrepareDataDir, RefusesAParentOthersCanRenameIn) {
  TempDir root;
  std::string parent = root.path() + "/shared";
  fs::create_directories(parent + "/data");
  chmod(parent.c_str(), 0777);  // no sticky bit: anyone could swap "data" for a symlink
  chmod((parent + "/data").c_str(), 0700);
  auto dir = PrepareDataDir(parent + "/data");
  EXPECT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("can be changed by another user"), std::string::npos)
      << dir.status();
}

TEST(PrepareDataDir, AcceptsAParentWritableByItsOwnGroupOnly) {
  // A Kubernetes volume with fsGroup: root:<the pod's gid>, 2775; the data dir is made inside.
  TempDir root;
  std::string volume = root.path() + "/volume";
  fs::create_directory(volume);
  ASSERT_EQ(chown(volume.c_str(), geteuid(), getegid()), 0);
  chmod(volume.c_str(), 02775);
  auto dir = PrepareDataDir(volume + "/data");
  ASSERT_TRUE(dir.ok()) << dir.status();
  struct stat st;
  ASSERT_EQ(stat((volume + "/data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  // Writable by another group: refused.
  if (geteuid() == 0) {
    ASSERT_EQ(chown(volume.c_str(), 0, getegid() + 1), 0);
    EXPECT_FALSE(PrepareDataDir(volume + "/data").ok());
  }
}

}  // namespace
}  // namespace anima::selfcoding
