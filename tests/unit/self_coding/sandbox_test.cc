#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstdio>

#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "services/self_coding/sandbox.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::TempDir;

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sandbox_ = MakeSandbox(SandboxMode::kBubblewrap);
    if (!sandbox_->Available().ok()) {
      GTEST_SKIP() << "bubblewrap unavailable here: " << sandbox_->Available();
    }
  }

  SandboxResult RunPython(const std::string& code, SandboxLimits limits = {},
                          CancelToken* cancel = nullptr) {
    { std::ofstream(workspace_.path() + "/prog.py") << code; }
    CancelToken none;
    auto result = sandbox_->Run({{"python3", "prog.py"}, workspace_.path(), limits},
                                cancel != nullptr ? cancel : &none);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : SandboxResult{};
  }

  // The service is healthy after a hostile run: a plain command still works.
  void ExpectStillWorks() {
    auto result = RunPython("print('still fine')\n");
    EXPECT_TRUE(result.ok()) << result.reason << result.output;
    EXPECT_NE(result.output.find("still fine"), std::string::npos);
  }

  std::unique_ptr<Sandbox> sandbox_;
  TempDir workspace_;
};

TEST_F(SandboxTest, RunsCodeInTheWorkspaceAndCapturesOutput) {
  auto result = RunPython(
      "import os\nprint('hello', os.getcwd())\nopen('out.txt','w').write('x')\n"
      "import sys\nprint('err', file=sys.stderr)\nsys.exit(3)\n");
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_TRUE(result.reason.empty()) << result.reason;
  EXPECT_NE(result.output.find("hello /workspace"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("err"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(workspace_.path() + "/out.txt"));
}

TEST_F(SandboxTest, CannotReachTheNetwork) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  socklen_t len = sizeof(addr);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  int port = ntohs(addr.sin_port);

  auto result = RunPython(
      "import socket\n"
      "try:\n"
      "    socket.create_connection(('127.0.0.1', " +
      std::to_string(port) +
      "), timeout=3)\n"
      "    print('CONNECTED')\n"
      "except OSError as e:\n"
      "    print('BLOCKED', e)\n"
      "try:\n"
      "    socket.getaddrinfo('example.com', 80)\n"
      "    print('RESOLVED')\n"
      "except OSError as e:\n"
      "    print('NO DNS', e)\n");
  EXPECT_NE(result.output.find("BLOCKED"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("CONNECTED"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("RESOLVED"), std::string::npos) << result.output;
  pollfd p{listener, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0) << "the listener saw a connection";
  close(listener);
}

TEST_F(SandboxTest, CannotWriteOutsideTheWorkspace) {
  TempDir outside;
  std::string target = outside.path() + "/escaped.txt";
  auto result = RunPython(
      "import os\n"
      "for p in ['" +
      target +
      "', '/usr/escaped.txt', '/etc/escaped.txt', '../escaped.txt',\n"
      "          '/proc/sys/kernel/hostname']:\n"
      "    try:\n"
      "        open(p, 'w').write('x')\n"
      "        print('WROTE', p)\n"
      "    except OSError as e:\n"
      "        print('DENIED', p, e.strerror)\n"
      "open('inside.txt', 'w').write('ok')\n");
  EXPECT_EQ(result.output.find("WROTE"), std::string::npos) << result.output;
  EXPECT_FALSE(std::filesystem::exists(target));
  EXPECT_FALSE(std::filesystem::exists("/usr/escaped.txt"));
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(workspace_.path()).parent_path() /
                                       "escaped.txt"));
  EXPECT_TRUE(std::filesystem::exists(workspace_.path() + "/inside.txt"));
}

TEST_F(SandboxTest, InfiniteLoopHitsTheCpuLimit) {
  SandboxLimits limits;
  limits.cpu_seconds = 1;
  auto result = RunPython("while True:\n    pass\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("CPU time limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_F(SandboxTest, SleeperHitsTheWallTimeLimit) {
  SandboxLimits limits;
  limits.wall_time = std::chrono::milliseconds(500);
  auto result = RunPython("import time\ntime.sleep(60)\n", limits);
  EXPECT_NE(result.reason.find("wall time limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_F(SandboxTest, ForkBombIsContained) {
  SandboxLimits limits;
  limits.max_processes = 32;
  limits.wall_time = std::chrono::seconds(3);
  // Forks children that stay alive until fork fails, says how many it got, then keeps forking
  // as a bomb would until the wall time ends it.
  auto result = RunPython(
      "import os, time\n"
      "n = 0\n"
      "try:\n"
      "    while True:\n"
      "        if os.fork() == 0:\n"
      "            time.sleep(60)\n"
      "            os._exit(0)\n"
      "        n += 1\n"
      "except OSError as e:\n"
      "    print('forks', n, 'then errno', e.errno, flush=True)\n"
      "while True:\n"
      "    try:\n"
      "        os.fork()\n"
      "    except OSError:\n"
      "        pass\n",
      limits);
  EXPECT_FALSE(result.ok());
  EXPECT_FALSE(result.reason.empty());
  // The process limit, not the wall time alone, stopped it: fork failed (EAGAIN) before 32.
  int forks = -1, errno_seen = 0;
  auto at = result.output.find("forks ");
  ASSERT_NE(at, std::string::npos) << result.output;
  ASSERT_EQ(std::sscanf(result.output.c_str() + at, "forks %d then errno %d", &forks, &errno_seen),
            2)
      << result.output;
  EXPECT_LT(forks, 32);
  EXPECT_EQ(errno_seen, EAGAIN);
  // Nothing of it is left running, and this process can still start processes.
  int left = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::ifstream cmdline(entry.path() / "cmdline");
    std::string text((std::istreambuf_iterator<char>(cmdline)), std::istreambuf_iterator<char>());
    if (text.find("prog.py") != std::string::npos) left++;
  }
  EXPECT_EQ(left, 0);
  ExpectStillWorks();
}

TEST_F(SandboxTest, MemoryHogHitsTheMemoryLimit) {
  SandboxLimits limits;
  limits.memory_bytes = 256LL << 20;
  auto result = RunPython("x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("memory limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_F(SandboxTest, OutputFloodHitsTheOutputLimit) {
  SandboxLimits limits;
  limits.output_bytes = 64 * 1024;
  auto result = RunPython("while True:\n    print('x' * 1000)\n", limits);
  EXPECT_NE(result.reason.find("output limit"), std::string::npos) << result.reason;
  EXPECT_LE(result.output.size(), 64u * 1024);
  ExpectStillWorks();
}

TEST_F(SandboxTest, BigFileHitsTheFileSizeLimit) {
  SandboxLimits limits;
  limits.file_size_bytes = 1 << 20;
  auto result = RunPython("open('big', 'wb').write(b'x' * (8 << 20))\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("file size limit"), std::string::npos) << result.reason;
}

TEST_F(SandboxTest, CancellationKillsTheRunAtOnce) {
  CancelToken cancel;
  std::thread canceller([&] {
    // Cancel once the program has really started (it writes a marker file first).
    for (int i = 0; i < 2000 && !std::filesystem::exists(workspace_.path() + "/started"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    cancel.Cancel();
  });
  SandboxLimits limits;
  limits.wall_time = std::chrono::seconds(60);
  auto start = std::chrono::steady_clock::now();
  auto result =
      RunPython("open('started', 'w').close()\nimport time\ntime.sleep(60)\n", limits, &cancel);
  canceller.join();
  EXPECT_TRUE(result.cancelled);
  EXPECT_EQ(result.reason, "cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST(UnsandboxedMode, RunsInTheWorkspaceWithLimitsAndTimeouts) {
  auto sandbox = MakeSandbox(SandboxMode::kNone);
  ASSERT_TRUE(sandbox->Available().ok());
  EXPECT_EQ(sandbox->name(), "none");
  TempDir workspace;
  CancelToken cancel;
  SandboxLimits limits;
  limits.wall_time = std::chrono::milliseconds(500);
  auto ok =
      sandbox->Run({{"sh", "-c", "pwd; echo hi > out.txt"}, workspace.path(), limits}, &cancel);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->ok()) << ok->reason << ok->output;
  EXPECT_NE(ok->output.find(workspace.path()), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(workspace.path() + "/out.txt"));
  auto slow = sandbox->Run({{"sleep", "30"}, workspace.path(), limits}, &cancel);
  ASSERT_TRUE(slow.ok());
  EXPECT_NE(slow->reason.find("wall time limit"), std::string::npos) << slow->reason;
}

TEST(SandboxAvailability, MissingBubblewrapRefusesWithAClearError) {
  auto sandbox = MakeSandbox(SandboxMode::kBubblewrap, "/nonexistent/bwrap");
  auto status = sandbox->Available();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("--sandbox=none"), std::string::npos) << status;
  EXPECT_TRUE(MakeSandbox(SandboxMode::kNone)->Available().ok());
}

}  // namespace
}  // namespace anima::selfcoding
