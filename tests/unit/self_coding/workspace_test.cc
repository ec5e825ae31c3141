#include "services/self_coding/workspace.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "services/self_coding/sandbox.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Workspaces on disk (the unsandboxed kind), where the test can plant things beside the service.
class WorkspaceTest : public ::testing::Test {
 protected:
  std::unique_ptr<Workspace> Make(WorkspaceLimits limits = {}) {
    auto created = sandbox_->CreateWorkspace(dir_.path(), "ws", limits, {});
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? *std::move(created) : nullptr;
  }
  std::string ws() const { return dir_.path() + "/ws"; }

  std::unique_ptr<Sandbox> sandbox_ = MakeSandbox(SandboxMode::kNone);
  TempDir dir_;
  TempDir outside_;
};

TEST_F(WorkspaceTest, WritesFilesAndTheirDirectories) {
  auto w = Make();
  ASSERT_TRUE(w->WriteFile("src/pkg/a.py", "a = 1\n").ok());
  ASSERT_TRUE(w->WriteFile("src/b.py", "").ok());
  EXPECT_EQ(w->ReadFile("src/pkg/a.py").value_or(""), "a = 1\n");
  EXPECT_TRUE(fs::is_regular_file(ws() + "/src/b.py"));
  EXPECT_EQ(w->files_written(), 4);  // two directories, two files
  EXPECT_EQ(w->bytes_written(), 6);
}

TEST_F(WorkspaceTest, RefusesToFollowASymlinkedDirectoryOrFile) {
  auto w = Make();
  fs::create_directory_symlink(outside_.path(), ws() + "/dir");
  fs::create_symlink(outside_.path() + "/planted", ws() + "/file.py");
  auto through_dir = w->WriteFile("dir/x.py", "x");
  EXPECT_FALSE(through_dir.ok());
  EXPECT_FALSE(w->WriteFile("file.py", "x").ok());
  EXPECT_FALSE(fs::exists(outside_.path() + "/x.py"));
  EXPECT_FALSE(fs::exists(outside_.path() + "/planted"));
  EXPECT_FALSE(w->ReadFile("dir/x.py").ok());
}

TEST_F(WorkspaceTest, RefusesDotDotDashAndAtPaths) {
  auto w = Make();
  for (const char* path :
       {"../x.py", "a/../../x.py", "/etc/x", "-o", "src/-rf.cpp", "@args", "a//b", "./a", ""}) {
    auto s = w->WriteFile(path, "x");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << path;
  }
  EXPECT_NE(w->WriteFile("-o", "x").message().find("starts with '-' or '@'"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_.path() + "/x.py"));
}

TEST_F(WorkspaceTest, NeverOverwritesAFile) {
  auto w = Make();
  ASSERT_TRUE(w->WriteFile("a.py", "first").ok());
  EXPECT_FALSE(w->WriteFile("a.py", "second").ok());
  EXPECT_EQ(w->ReadFile("a.py").value_or(""), "first");
}

TEST_F(WorkspaceTest, StopsAtTheByteAndFileCaps) {
  auto w = Make({.max_bytes = 10000, .max_files = 3});
  ASSERT_TRUE(w->WriteFile("a", std::string(6000, 'a')).ok());
  auto too_big = w->WriteFile("b", std::string(6000, 'b'));
  EXPECT_EQ(too_big.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_big.message().find("at most 10000"), std::string::npos) << too_big;
  ASSERT_TRUE(w->WriteFile("c", "c").ok());
  ASSERT_TRUE(w->WriteFile("d", "d").ok());
  auto too_many = w->WriteFile("e", "e");
  EXPECT_EQ(too_many.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(too_many.message().find("at most 3 files"), std::string::npos) << too_many;
}

TEST_F(WorkspaceTest, ASymlinkedParentDirectoryIsRefused) {
  fs::create_directory_symlink(outside_.path(), dir_.path() + "/link");
  auto created = sandbox_->CreateWorkspace(dir_.path() + "/link", "ws", {}, {});
  EXPECT_FALSE(created.ok());
  EXPECT_FALSE(fs::exists(outside_.path() + "/ws"));
}

TEST(UnsafePathReason, AcceptsOrdinaryPathsAndNamesTheProblem) {
  EXPECT_EQ(UnsafePathReason("src/a-b/c@d.py"), "");
  EXPECT_NE(UnsafePathReason("@file").find("'@'"), std::string::npos);
  EXPECT_NE(UnsafePathReason("x/-y").find("'-'"), std::string::npos);
  EXPECT_NE(UnsafePathReason("a/../b").find(".."), std::string::npos);
}

}  // namespace
}  // namespace anima::selfcoding
