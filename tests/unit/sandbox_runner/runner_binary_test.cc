// The built anima-sandbox-runner binary ($ANIMA_BIN_DIR): how it starts, serves and ends.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "grpcpp/create_channel_posix.h"
#include "services/self_coding/sandbox.h"
#include "tests/integration/harness/harness.h"
#include "tests/unit/sandbox_runner/runner_test_support.h"

namespace anima::sandboxrunner {
namespace {

namespace fs = std::filesystem;
using anima::testing::BinDir;
using anima::testing::Process;
using testing::kSecret;
using testing::RunnerClient;
using testing::TempDir;

std::string Runner() { return BinDir() + "/anima-sandbox-runner"; }

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the binary to its end with `args` and `env` added to this process's environment; its
// exit status, or -1.
int ExitStatusOf(const std::vector<std::string>& args, const std::vector<std::string>& env) {
  std::vector<std::string> argv_strings = {Runner()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = env;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), envp.data()) != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(RunnerBinaryTest, AnswersARunThenExitsWhenIdle) {
  TempDir workspaces;
  auto runner = Process::Start(
      Runner(),
      {"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path(), "--idle-timeout-s=1"},
      {{"ANIMA_RUNNER_SECRET", kSecret}});
  ASSERT_NE(runner, nullptr);
  {
    RunnerClient client(
        grpc::CreateChannel(runner->address("grpc"), grpc::InsecureChannelCredentials()));
    // Bound from the environment already.
    EXPECT_EQ(client.Bind(kSecret).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    ASSERT_TRUE(client.Put({{"hello.py", "print('hello from the runner')\n"}}).ok());
    auto run = client.Run(RunnerClient::Command({"python3", "hello.py"}));
    ASSERT_TRUE(run.status.ok()) << run.status.error_message() << runner->Log();
    EXPECT_EQ(run.output(), "hello from the runner\n");
  }
  // The secret was scrubbed from the environment the process started with, which a process of
  // the same uid (a command) cannot read at all: the runner is not dumpable.
  const std::string environ_path = "/proc/" + std::to_string(runner->pid()) + "/environ";
  EXPECT_EQ(ReadAll(environ_path).find(kSecret), std::string::npos);
  if (geteuid() != 0) {
    EXPECT_LT(open(environ_path.c_str(), O_RDONLY | O_CLOEXEC), 0);
    EXPECT_EQ(errno, EACCES);
  }
  EXPECT_EQ(runner->Wait(std::chrono::seconds(10)), 0) << runner->Log();
  std::string log = runner->Log();
  EXPECT_NE(log.find("python3 exit 0"), std::string::npos) << log;
  EXPECT_NE(log.find("stopping: idle"), std::string::npos) << log;
  EXPECT_EQ(log.find(kSecret), std::string::npos) << log;
  EXPECT_EQ(log.find("hello from the runner"), std::string::npos) << "file contents logged";
  EXPECT_TRUE(fs::is_empty(workspaces.path())) << "the workspace outlived the runner";
}

TEST(RunnerBinaryTest, AnUnboundRunnerIsNotStoppedByTheIdleTimer) {
  TempDir workspaces;
  auto runner = Process::Start(
      Runner(),
      {"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path(), "--idle-timeout-s=1"});
  ASSERT_NE(runner, nullptr);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_TRUE(runner->Running()) << runner->Log();
  runner->Signal(SIGTERM);
  EXPECT_EQ(runner->Wait(), 0) << runner->Log();
}

TEST(RunnerBinaryTest, ExitsAfterRelease) {
  TempDir workspaces;
  auto runner =
      Process::Start(Runner(), {"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path(),
                                "--exit-after-release", "--idle-timeout-s=0"});
  ASSERT_NE(runner, nullptr);
  {
    RunnerClient client(
        grpc::CreateChannel(runner->address("grpc"), grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(client.Bind(kSecret).ok());
    ASSERT_TRUE(client.Put({{"a.txt", "a"}}).ok());
    auto s = client.Release();
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(runner->Wait(), 0) << runner->Log();
  EXPECT_TRUE(fs::is_empty(workspaces.path()));
}

TEST(RunnerBinaryTest, SigtermEndsARunningCommandAndExitsZero) {
  TempDir workspaces;
  auto runner =
      Process::Start(Runner(), {"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path()},
                     {{"ANIMA_RUNNER_SECRET", kSecret}});
  ASSERT_NE(runner, nullptr);
  RunnerClient client(
      grpc::CreateChannel(runner->address("grpc"), grpc::InsecureChannelCredentials()));
  anima::v1::PutWorkspaceResponse workspace;
  ASSERT_TRUE(client.Put({{"a", "a"}}, &workspace).ok());
  RunnerClient::RunOutcome run;
  std::thread caller([&] {
    run = client.Run(RunnerClient::Command({"sh", "-c", "touch started; sleep 60"}));
  });
  ASSERT_TRUE(
      testing::Eventually([&] { return fs::exists(fs::path(workspace.workspace()) / "started"); }));
  runner->Signal(SIGTERM);
  EXPECT_EQ(runner->Wait(), 0) << runner->Log();
  caller.join();
  if (run.status.ok()) {
    ASSERT_TRUE(run.result);
    EXPECT_TRUE(run.result->cancelled());
  }
}

TEST(RunnerBinaryTest, ServesAnInheritedSocket) {
  TempDir workspaces;
  int pair[2];
  // The runner's end is inherited (no close-on-exec); this end is not.
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  ASSERT_EQ(fcntl(pair[0], F_SETFD, FD_CLOEXEC), 0);
  auto runner = Process::Start(
      Runner(), {"--fd=" + std::to_string(pair[1]), "--workspace-dir=" + workspaces.path()});
  close(pair[1]);
  ASSERT_NE(runner, nullptr);
  {
    RunnerClient client(grpc::CreateInsecureChannelFromFd("anima-sandbox-runner", pair[0]));
    ASSERT_TRUE(client.Bind(kSecret).ok());
    // Bigger than gRPC's default 4 MiB receive limit: the ceiling's limit holds on this
    // transport too.
    auto s = client.Put({{"big.bin", std::string(6 << 20, 'x')}, {"echo.sh", "echo over fd"}});
    ASSERT_TRUE(s.ok()) << s.error_message();
    auto run = client.Run(RunnerClient::Command({"sh", "echo.sh"}));
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    EXPECT_EQ(run.output(), "over fd\n");
  }
  // The client went away with its end of the socket: nothing is left to serve.
  EXPECT_EQ(runner->Wait(), 0) << runner->Log();
  EXPECT_NE(runner->Log().find("stopping: connection closed"), std::string::npos) << runner->Log();
}

TEST(RunnerBinaryTest, RunsInsideBubblewrapOnASocketpair) {
  // As the self-coding service's local provider starts it: the binary from outside the sandbox's
  // view, one end of a socketpair at fd 3, the bubblewrap workspace as its workspace directory.
  auto bwrap = selfcoding::MakeSandbox(selfcoding::SandboxMode::kBubblewrap);
  if (!bwrap->Available().ok()) GTEST_SKIP() << "bubblewrap unavailable: " << bwrap->Available();
  auto workspace = bwrap->CreateWorkspace("", "", selfcoding::WorkspaceLimits{}, {});
  ASSERT_TRUE(workspace.ok()) << workspace.status();
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  selfcoding::SandboxCommand command;
  command.program = Runner();
  command.argv = {"anima-sandbox-runner", "--fd=3", "--workspace-dir=" + bwrap->workspace_mount(),
                  "--exit-after-release"};
  command.connection_fd = pair[1];
  command.limits.wall_time = std::chrono::seconds(60);
  if (selfcoding::kBuiltWithSanitizer) command.limits.memory_bytes = 0;  // see kBuiltWithSanitizer
  selfcoding::CancelToken cancel;
  absl::StatusOr<selfcoding::SandboxResult> ended;
  std::thread sandbox([&] { ended = bwrap->Run(command, **workspace, &cancel); });
  {
    RunnerClient client(grpc::CreateInsecureChannelFromFd("anima-sandbox-runner", pair[0]));
    grpc::Status s = client.Bind(kSecret);
    EXPECT_TRUE(s.ok()) << s.error_message();
    anima::v1::PutWorkspaceResponse put;
    s = client.Put({{"t.py", "import os\nprint('inside', os.getcwd())\n"}}, &put);
    EXPECT_TRUE(s.ok()) << s.error_message();
    auto run = client.Run(RunnerClient::Command({"python3", "t.py"}));
    EXPECT_TRUE(run.status.ok()) << run.status.error_message();
    EXPECT_EQ(run.output(), "inside " + put.workspace() + "\n");
    EXPECT_EQ(put.workspace().rfind(bwrap->workspace_mount() + "/", 0), 0u) << put.workspace();
    EXPECT_TRUE(client.Release().ok());
  }
  if (HasFailure()) cancel.Cancel();
  sandbox.join();
  close(pair[1]);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(ended->ok()) << ended->reason << "\n" << ended->output;
}

TEST(RunnerBinaryTest, BadStartsExitTwo) {
  TempDir workspaces;
  EXPECT_EQ(ExitStatusOf({"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path()},
                         {"ANIMA_RUNNER_SECRET=short"}),
            2);
  EXPECT_EQ(ExitStatusOf({"--listen=127.0.0.1:0", "--workspace-dir=/nonexistent/dir"}, {}), 2);
  EXPECT_EQ(
      ExitStatusOf(
          {"--listen=127.0.0.1:0", "--workspace-dir=" + workspaces.path(), "--max-wall-s=0"}, {}),
      2);
}

}  // namespace
}  // namespace anima::sandboxrunner
