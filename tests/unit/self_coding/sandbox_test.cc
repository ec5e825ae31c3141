#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "services/self_coding/remote_sandbox.h"
#include "services/self_coding/sandbox.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::TempDir;

// Every limit and escape attempt runs twice: in bubblewrap directly ("bwrap"), and through the
// remote sandbox on an anima-sandbox-runner that a local provider starts inside bubblewrap per
// workspace ("runner"), the path self-coding takes on Kubernetes. The runner's workspace takes
// its files once, before its first command, so the runner variant gives each program a fresh
// workspace (and runner) of the same limits.
class SandboxTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    local_ = MakeSandbox(SandboxMode::kBubblewrap);
    if (!local_->Available().ok()) {
      GTEST_SKIP() << "bubblewrap unavailable here: " << local_->Available();
    }
    if (remote()) {
      const char* bin = std::getenv("ANIMA_BIN_DIR");
      ASSERT_NE(bin, nullptr) << "run under ctest (ANIMA_BIN_DIR names the built binaries)";
      SandboxLimits runner;
      runner.cpu_seconds = 600;
      runner.memory_bytes = kBuiltWithSanitizer ? 0 : 4LL << 30;
      runner.max_processes = 256;
      runner.file_size_bytes = 64LL << 20;
      runner.wall_time = std::chrono::minutes(5);
      sandbox_ = MakeRemoteSandbox(MakeLocalRunnerProvider(
          local_.get(), std::string(bin) + "/anima-sandbox-runner", runner));
    } else {
      sandbox_ = std::move(local_);
    }
    NewWorkspace(WorkspaceLimits{});
  }

  bool remote() const { return GetParam() == "runner"; }

  void NewWorkspace(const WorkspaceLimits& limits) {
    workspace_.reset();
    limits_ = limits;
    ran_ = false;
    auto created = sandbox_->CreateWorkspace(dir_.path(), "ws", limits, {});
    ASSERT_TRUE(created.ok()) << created.status();
    workspace_ = *std::move(created);
  }

  // Runs `code` as a new file prog<N>.py (workspace files are never overwritten).
  SandboxResult RunPython(const std::string& code, SandboxLimits limits = {},
                          CancelToken* cancel = nullptr,
                          std::function<void(std::string_view)> on_output = nullptr) {
    if (remote() && ran_) NewWorkspace(limits_);
    std::string file = "prog" + std::to_string(++programs_) + ".py";
    EXPECT_TRUE(workspace_->WriteFile(file, code).ok());
    SandboxCommand command;
    command.argv = {"python3", file};
    command.limits = limits;
    command.on_output = std::move(on_output);
    return RunCommand(command, cancel);
  }

  SandboxResult RunCommand(const SandboxCommand& command, CancelToken* cancel = nullptr) {
    CancelToken none;
    ran_ = true;
    auto result = sandbox_->Run(command, *workspace_, cancel != nullptr ? cancel : &none);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : SandboxResult{};
  }

  // A file as the sandboxed code sees it now (read inside the sandbox, so on a runner too).
  std::optional<std::string> ReadBack(const std::string& path) {
    SandboxCommand command;
    command.argv = {"cat", path};
    auto result = RunCommand(command);
    if (!result.ok()) return std::nullopt;
    return result.output;
  }

  // The service is healthy after a hostile run: a plain command still works.
  void ExpectStillWorks() {
    auto result = RunPython("print('still fine')\n");
    EXPECT_TRUE(result.ok()) << result.reason << result.output;
    EXPECT_NE(result.output.find("still fine"), std::string::npos);
  }

  std::unique_ptr<Sandbox> local_;
  std::unique_ptr<Sandbox> sandbox_;
  TempDir dir_;
  std::unique_ptr<Workspace> workspace_;
  WorkspaceLimits limits_;
  bool ran_ = false;
  int programs_ = 0;
};

INSTANTIATE_TEST_SUITE_P(BubblewrapAndRunner, SandboxTest, ::testing::Values("bwrap", "runner"),
                         [](const auto& info) { return info.param; });

// What only bubblewrap itself does (the service's own writes after a run, fds and programs
// handed to bwrap).
using BubblewrapTest = SandboxTest;
INSTANTIATE_TEST_SUITE_P(Bubblewrap, BubblewrapTest, ::testing::Values("bwrap"),
                         [](const auto& info) { return info.param; });

TEST_P(SandboxTest, RunsCodeInTheWorkspaceAndCapturesOutput) {
  auto result = RunPython(
      "import os\nprint('hello', os.getcwd())\nopen('out.txt','w').write('x')\n"
      "import sys\nprint('err', file=sys.stderr)\nsys.exit(3)\n");
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_TRUE(result.reason.empty()) << result.reason;
  EXPECT_NE(result.output.find("hello /workspace"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("err"), std::string::npos);
  EXPECT_EQ(ReadBack("out.txt").value_or(""), "x");
}

TEST_P(SandboxTest, CannotReachTheNetwork) {
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

TEST_P(SandboxTest, CannotWriteOutsideTheWorkspace) {
  TempDir outside;
  std::string target = outside.path() + "/escaped.txt";
  auto result = RunPython(
      "import os\n"
      "for p in ['" +
      target + "', '/usr/escaped.txt', '/etc/escaped.txt', " +
      // On a runner the workspace is a directory in the attempt's own tmpfs, so its parent is
      // writable and private to the attempt; under bwrap it is the read-only root.
      (remote() ? "" : "'../escaped.txt', ") +
      "\n"
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
  EXPECT_FALSE(std::filesystem::exists("/escaped.txt"));
  EXPECT_EQ(ReadBack("inside.txt").value_or(""), "ok");
}

TEST_P(SandboxTest, InfiniteLoopHitsTheCpuLimit) {
  SandboxLimits limits;
  limits.cpu_seconds = 1;
  auto result = RunPython("while True:\n    pass\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("CPU time limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_P(SandboxTest, SleeperHitsTheWallTimeLimit) {
  SandboxLimits limits;
  limits.wall_time = std::chrono::milliseconds(500);
  auto result = RunPython("import time\ntime.sleep(60)\n", limits);
  EXPECT_NE(result.reason.find("wall time limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_P(SandboxTest, ForkBombIsContained) {
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
    // Read with read(2): processes of other programs come and go while this looks.
    int fd = open((entry.path() / "cmdline").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    if (n > 0 && std::string(buf, n).find("prog1.py") != std::string::npos) left++;
  }
  EXPECT_EQ(left, 0);
  ExpectStillWorks();
}

TEST_P(SandboxTest, MemoryHogHitsTheMemoryLimit) {
  SandboxLimits limits;
  limits.memory_bytes = 256LL << 20;
  auto result = RunPython("x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("memory limit"), std::string::npos) << result.reason;
  ExpectStillWorks();
}

TEST_P(SandboxTest, OutputFloodHitsTheOutputLimit) {
  SandboxLimits limits;
  limits.output_bytes = 64 * 1024;
  auto result = RunPython("while True:\n    print('x' * 1000)\n", limits);
  EXPECT_NE(result.reason.find("output limit"), std::string::npos) << result.reason;
  EXPECT_LE(result.output.size(), 64u * 1024);
  ExpectStillWorks();
}

TEST_P(SandboxTest, BigFileHitsTheFileSizeLimit) {
  SandboxLimits limits;
  limits.file_size_bytes = 1 << 20;
  auto result = RunPython("open('big', 'wb').write(b'x' * (8 << 20))\n", limits);
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.reason.find("file size limit"), std::string::npos) << result.reason;
}

TEST_P(SandboxTest, CancellationKillsTheRunAtOnce) {
  CancelToken cancel;
  SandboxLimits limits;
  limits.wall_time = std::chrono::seconds(60);
  auto start = std::chrono::steady_clock::now();
  // Cancelled once the program has really started (it says so first).
  auto result = RunPython("print('started', flush=True)\nimport time\ntime.sleep(60)\n", limits,
                          &cancel, [&](std::string_view out) {
                            if (out.find("started") != std::string_view::npos) cancel.Cancel();
                          });
  EXPECT_TRUE(result.cancelled);
  EXPECT_EQ(result.reason, "cancelled");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST_P(SandboxTest, CannotCreateUserOrOtherNamespaces) {
  SandboxCommand command;
  command.argv = {"sh", "-c",
                  "unshare -U true && echo UNSHARED_U; unshare -r true && echo UNSHARED_R; "
                  "unshare -m true && echo UNSHARED_M; echo done"};
  CancelToken none;
  ran_ = true;  // the workspace went to the runner with this run
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->output.find("done"), std::string::npos) << result->output;
  EXPECT_EQ(result->output.find("UNSHARED"), std::string::npos) << result->output;
  ExpectStillWorks();
}

TEST_P(SandboxTest, TheSeccompFilterDeniesEscapesButNotNormalWork) {
  // Raw system calls, so no library wrapper can hide the errno. x86-64 and arm64 numbers.
  auto result = RunPython(R"py(import ctypes, os, platform, subprocess
libc = ctypes.CDLL(None, use_errno=True)
numbers = {
    "x86_64": dict(unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, ptrace=101,
                   keyctl=250, add_key=248, bpf=321, perf_event_open=298, userfaultfd=323,
                   init_module=175, open_by_handle_at=304, process_vm_readv=310, clone3=435,
                   clone=56),
    "aarch64": dict(unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, ptrace=117,
                    keyctl=219, add_key=217, bpf=280, perf_event_open=241, userfaultfd=282,
                    init_module=105, open_by_handle_at=265, process_vm_readv=270, clone3=435,
                    clone=220),
}[platform.machine()]
for name, nr in numbers.items():
    if name == "clone":
        # CLONE_NEWUSER | SIGCHLD: must fail before any process is made.
        rc = libc.syscall(nr, 0x10000000 | 17, 0, 0, 0, 0)
    else:
        rc = libc.syscall(nr, 0, 0, 0, 0, 0)
    print(name, rc, os.strerror(ctypes.get_errno()) if rc < 0 else "ALLOWED")
print("child says", subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout.strip())
)py");
  ASSERT_TRUE(result.ok()) << result.reason << result.output;
  for (const char* name : {"unshare", "setns", "mount", "umount2", "pivot_root", "ptrace", "keyctl",
                           "add_key", "bpf", "perf_event_open", "userfaultfd", "init_module",
                           "open_by_handle_at", "process_vm_readv", "clone"}) {
    EXPECT_NE(result.output.find(std::string(name) + " -1 Operation not permitted"),
              std::string::npos)
        << name << "\n"
        << result.output;
  }
  // ENOSYS, so glibc falls back to clone (which the filter can inspect): processes still start.
  EXPECT_NE(result.output.find("clone3 -1 Function not implemented"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("child says hi"), std::string::npos) << result.output;
}

TEST_P(SandboxTest, TestsThatWriteTooManyFilesStopAtTheWorkspaceCap) {
  NewWorkspace({.max_bytes = 8 << 20, .max_files = 300});
  auto result = RunPython(
      "import errno, os\n"
      "n = 0\n"
      "try:\n"
      "    for i in range(100000):\n"
      "        open('f%d' % i, 'w').close()\n"
      "        n += 1\n"
      "except OSError as e:\n"
      "    print('files', n, 'then', errno.errorcode[e.errno], flush=True)\n"
      "    raise\n");
  EXPECT_FALSE(result.ok());
  EXPECT_NE(result.output.find("then ENOSPC"), std::string::npos) << result.output;
  int files = -1;
  auto at = result.output.find("files ");
  ASSERT_NE(at, std::string::npos) << result.output;
  ASSERT_EQ(std::sscanf(result.output.c_str() + at, "files %d", &files), 1);
  EXPECT_LT(files, 300);
  EXPECT_NE(result.reason.find("workspace limit"), std::string::npos) << result.reason;
}

TEST_P(SandboxTest, TestsThatWriteTooManyBytesStopAtTheWorkspaceCapInTmpToo) {
  NewWorkspace({.max_bytes = 4 << 20, .max_files = 100});
  auto result = RunPython(
      "import errno\n"
      "for where in ['/tmp/a', 'b']:\n"
      "    written = 0\n"
      "    try:\n"
      "        with open(where, 'wb') as f:\n"
      "            for _ in range(64):\n"
      "                f.write(b'x' * (1 << 20))\n"
      "                f.flush()\n"
      "                written += 1\n"
      "    except OSError as e:\n"
      "        print(where, written, 'MiB then', errno.errorcode[e.errno], flush=True)\n");
  EXPECT_NE(result.output.find("/tmp/a"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("then ENOSPC"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find(" 64 MiB"), std::string::npos) << result.output;
}

TEST_P(SandboxTest, InputArrivesOnStdinAndTheReportComesBackApart) {
  ASSERT_TRUE(workspace_
                  ->WriteFile("r.py",
                              "import os, sys\n"
                              "secret = sys.stdin.readline().strip()\n"
                              "print('on stdout')\n"
                              "os.write(3, ('got ' + secret + '\\n').encode())\n")
                  .ok());
  ASSERT_TRUE(workspace_->WriteFile("w.py", "import os\nos.write(3, b'x')\n").ok());
  SandboxCommand command;
  command.argv = {"python3", "r.py"};
  command.input = "s3cret\n";
  command.report = true;
  CancelToken none;
  ran_ = true;  // the workspace went to the runner with this run
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->ok()) << result->reason << result->output;
  EXPECT_EQ(result->report, "got s3cret\n");
  EXPECT_EQ(result->output, "on stdout\n");
  // Without `report`, fd 3 is not open at all.
  command.argv = {"python3", "w.py"};
  command.report = false;
  result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok());
  EXPECT_NE(result->output.find("Bad file descriptor"), std::string::npos) << result->output;
}

TEST_P(BubblewrapTest, SymlinksLeftByTheCodeDoNotRedirectTheServicesWrites) {
  TempDir outside;
  auto result = RunPython(
      "import os\n"
      "os.symlink('" +
      outside.path() +
      "', 'dir')\n"
      "os.symlink('" +
      outside.path() +
      "/planted', 'file.py')\n"
      "os.symlink('/workspace/../etc', 'up')\n");
  ASSERT_TRUE(result.ok()) << result.reason << result.output;
  EXPECT_FALSE(workspace_->WriteFile("dir/x.py", "x").ok());
  EXPECT_FALSE(workspace_->WriteFile("file.py", "x").ok());
  EXPECT_FALSE(workspace_->WriteFile("up/passwd", "x").ok());
  EXPECT_FALSE(std::filesystem::exists(outside.path() + "/x.py"));
  EXPECT_FALSE(std::filesystem::exists(outside.path() + "/planted"));
  EXPECT_FALSE(workspace_->ReadFile("dir/x.py").ok());
}

TEST_P(BubblewrapTest, WorkspacesAreNotOnTheHostDisk) {
  // The data directory can be 0700 and unreadable to the sandbox uid: nothing is put in it.
  ASSERT_TRUE(workspace_->WriteFile("a.py", "print('ran')\n").ok());
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path()));
  auto result = RunPython("print(open('a.py').read())\n");
  EXPECT_NE(result.output.find("ran"), std::string::npos) << result.output;
}

TEST_P(BubblewrapTest, AConnectionArrivesAtFd3AndAProgramOutsideUsrRuns) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  SandboxCommand command;
  command.argv = {"sh", "-c", "echo hello >&3; read reply <&3; echo \"got $reply\""};
  command.connection_fd = pair[1];
  ASSERT_EQ(write(pair[0], "world\n", 6), 6);
  CancelToken none;
  ran_ = true;  // the workspace went to the runner with this run
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output, "got world\n") << result->reason;
  char buf[16] = {};
  EXPECT_EQ(read(pair[0], buf, sizeof(buf)), 6);
  EXPECT_STREQ(buf, "hello\n");
  close(pair[0]);
  close(pair[1]);

  // A program the sandbox would not otherwise see (not under /usr), run with its own argv.
  TempDir bin;
  std::string program = bin.path() + "/tool.sh";
  std::ofstream(program) << "#!/bin/sh\necho \"tool says $1\"\nls /proc/self/fd\n";
  std::filesystem::permissions(
      program, std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                   std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                   std::filesystem::perms::others_exec);
  SandboxCommand tool;
  tool.argv = {"tool", "hi"};
  tool.program = program;
  result = sandbox_->Run(tool, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  // Only stdin, stdout, stderr (and ls's own directory fd): bwrap closed the program's fd.
  EXPECT_EQ(result->output, "tool says hi\n0\n1\n2\n3\n") << result->reason;
}

// kContained: what anima-sandbox-runner runs commands in, inside a sandbox of its own.
class ContainedSandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sandbox_ = MakeSandbox(SandboxMode::kContained);
    ASSERT_TRUE(sandbox_->Available().ok()) << sandbox_->Available();
    auto created = sandbox_->CreateWorkspace(dir_.path(), "ws", WorkspaceLimits{}, {});
    ASSERT_TRUE(created.ok()) << created.status();
    workspace_ = *std::move(created);
  }

  SandboxResult Run(const std::vector<std::string>& argv, SandboxLimits limits = {},
                    CancelToken* cancel = nullptr) {
    SandboxCommand command;
    command.argv = argv;
    command.limits = limits;
    CancelToken none;
    auto result = sandbox_->Run(command, *workspace_, cancel != nullptr ? cancel : &none);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : SandboxResult{};
  }

  SandboxResult RunPython(const std::string& code, SandboxLimits limits = {},
                          CancelToken* cancel = nullptr) {
    return Run({"python3", "-c", code}, limits, cancel);
  }

  bool Exists(const std::string& name) const {
    return std::filesystem::exists(dir_.path() + "/ws/" + name);
  }

  std::unique_ptr<Sandbox> sandbox_;
  TempDir dir_;
  std::unique_ptr<Workspace> workspace_;
};

TEST_F(ContainedSandboxTest, RunsInTheWorkspaceDirectoryWithNoNewPrivsAndTheFilter) {
  EXPECT_EQ(sandbox_->name(), "contained");
  ASSERT_TRUE(workspace_->WriteFile("in.txt", "from the service").ok());
  auto result = Run({"sh", "-c",
                     "pwd; cat in.txt; echo; echo made > out.txt; "
                     "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; exit 3"});
  EXPECT_EQ(result.exit_code, 3);
  EXPECT_TRUE(result.reason.empty()) << result.reason;
  EXPECT_NE(result.output.find(dir_.path() + "/ws\n"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("from the service"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("NoNewPrivs:\t1"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("Seccomp:\t2"), std::string::npos) << result.output;
  EXPECT_EQ(workspace_->ReadFile("out.txt").value_or(""), "made\n");
  workspace_.reset();
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/ws")) << "the workspace outlived its object";
}

TEST_F(ContainedSandboxTest, TheSeccompFilterDeniesNamespacesMountAndPtrace) {
  auto result = RunPython(R"py(import ctypes, os, platform
libc = ctypes.CDLL(None, use_errno=True)
numbers = {"x86_64": dict(unshare=272, mount=165, ptrace=101, setns=308),
           "aarch64": dict(unshare=97, mount=40, ptrace=117, setns=268)}[platform.machine()]
for name, nr in numbers.items():
    rc = libc.syscall(nr, 0x10000000 if name == "unshare" else 0, 0, 0, 0, 0)
    print(name, rc, os.strerror(ctypes.get_errno()) if rc < 0 else "ALLOWED")
)py");
  ASSERT_TRUE(result.ok()) << result.reason << result.output;
  for (const char* name : {"unshare", "mount", "ptrace", "setns"}) {
    EXPECT_NE(result.output.find(std::string(name) + " -1 Operation not permitted"),
              std::string::npos)
        << name << "\n"
        << result.output;
  }
  // The same through the tools, which would succeed here without the filter when run as root.
  result = Run({"sh", "-c",
                "unshare -U true && echo UNSHARED; unshare -m true && echo MOUNTNS; "
                "echo done"});
  EXPECT_NE(result.output.find("done"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("UNSHARED"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("MOUNTNS"), std::string::npos) << result.output;
}

// The runner's neighbours (its own port, the service that drives it under compose) are one
// connect() away from contained code: IP sockets are refused; Unix sockets (multiprocessing,
// socketpair) still work.
TEST_F(ContainedSandboxTest, CodeGetsNoIpSocketsButUnixSocketsWork) {
  auto result = RunPython(R"py(import socket
for family, name in [(socket.AF_INET, "inet"), (socket.AF_INET6, "inet6")]:
    try:
        socket.socket(family, socket.SOCK_STREAM)
        print(name, "ALLOWED")
    except OSError as e:
        print(name, "denied", e.strerror)
a, b = socket.socketpair()
a.sendall(b"ping")
print("unix", b.recv(4).decode())
)py");
  ASSERT_TRUE(result.ok()) << result.reason << result.output;
  EXPECT_NE(result.output.find("inet denied Operation not permitted"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("inet6 denied Operation not permitted"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("unix ping"), std::string::npos) << result.output;
}

TEST_F(ContainedSandboxTest, CpuFileSizeAndMemoryLimitsApply) {
  SandboxLimits limits;
  limits.cpu_seconds = 1;
  auto result = RunPython("while True:\n    pass\n", limits);
  EXPECT_NE(result.reason.find("CPU time limit"), std::string::npos) << result.reason;

  limits = {};
  limits.file_size_bytes = 1 << 20;
  result = RunPython("open('big', 'wb').write(b'x' * (8 << 20))\n", limits);
  EXPECT_NE(result.reason.find("file size limit"), std::string::npos) << result.reason;
  EXPECT_LE(std::filesystem::file_size(dir_.path() + "/ws/big"), 1u << 20);

  limits = {};
  limits.memory_bytes = 256LL << 20;
  result = RunPython("x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n", limits);
  EXPECT_NE(result.reason.find("memory limit"), std::string::npos) << result.reason;
}

TEST_F(ContainedSandboxTest, TheProcessLimitAppliesWhenNotRoot) {
  if (geteuid() == 0) GTEST_SKIP() << "RLIMIT_NPROC does not bind root";
  SandboxLimits limits;
  limits.max_processes = 16;
  limits.wall_time = std::chrono::seconds(10);
  auto result = RunPython(
      "import os, time\n"
      "n = 0\n"
      "try:\n"
      "    while n < 1000:\n"
      "        if os.fork() == 0:\n"
      "            os.close(1)\n"  // so the run ends with the parent; the group kill takes these
      "            os.close(2)\n"
      "            time.sleep(30)\n"
      "            os._exit(0)\n"
      "        n += 1\n"
      "except OSError as e:\n"
      "    print('forks', n, 'then errno', e.errno, flush=True)\n",
      limits);
  int forks = -1, errno_seen = 0;
  auto at = result.output.find("forks ");
  ASSERT_NE(at, std::string::npos) << result.output;
  ASSERT_EQ(std::sscanf(result.output.c_str() + at, "forks %d then errno %d", &forks, &errno_seen),
            2);
  EXPECT_LE(forks, 16);
  EXPECT_EQ(errno_seen, EAGAIN);
}

TEST_F(ContainedSandboxTest, OutputIsSeenAsItComesAndCappedAtTheLimit) {
  std::vector<std::string> pieces;
  bool done_before_first_piece = true;
  SandboxCommand command;
  // "done" appears only after the first line was printed and 300 ms passed.
  command.argv = {"sh", "-c", "echo one; sleep 0.3; touch done; echo two"};
  command.on_output = [&](std::string_view piece) {
    if (pieces.empty()) done_before_first_piece = Exists("done");
    pieces.emplace_back(piece);
  };
  CancelToken none;
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->ok()) << result->reason;
  EXPECT_GE(pieces.size(), 2u);
  EXPECT_FALSE(done_before_first_piece) << "the first output came only at the end";
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, "one\ntwo\n");
  EXPECT_EQ(result->output, "one\ntwo\n");

  // A flood: stopped at the cap, and on_output saw exactly what was kept.
  joined.clear();
  command.argv = {"python3", "-c", "while True:\n    print('x' * 1000)\n"};
  command.limits.output_bytes = 64 * 1024;
  command.on_output = [&](std::string_view piece) { joined.append(piece); };
  result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_NE(result->reason.find("output limit"), std::string::npos) << result->reason;
  EXPECT_EQ(result->output.size(), 64u * 1024);
  EXPECT_EQ(joined, result->output);
}

TEST_F(ContainedSandboxTest, WallTimeAndCancelKillTheWholeGroup) {
  // A grandchild that closed its output would write `late` after half a second.
  const std::string spawn =
      "(exec >/dev/null 2>&1 </dev/null; sleep 0.5; touch late) & echo started; sleep 60";
  SandboxLimits limits;
  limits.wall_time = std::chrono::milliseconds(300);
  auto result = Run({"sh", "-c", spawn}, limits);
  EXPECT_NE(result.reason.find("wall time limit"), std::string::npos) << result.reason;

  limits.wall_time = std::chrono::seconds(60);
  CancelToken cancel;
  std::thread canceller([&] {
    for (int i = 0; i < 2000 && !Exists("started"); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    cancel.Cancel();
  });
  result = Run({"sh", "-c",
                "(exec >/dev/null 2>&1 </dev/null; sleep 0.5; touch late2) & touch started; "
                "sleep 60"},
               limits, &cancel);
  canceller.join();
  EXPECT_TRUE(result.cancelled);
  EXPECT_EQ(result.reason, "cancelled");
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  EXPECT_FALSE(Exists("late")) << "a grandchild outlived the wall time";
  EXPECT_FALSE(Exists("late2")) << "a grandchild outlived the cancellation";
}

TEST_F(ContainedSandboxTest, ABackgroundProcessLeftBehindDoesNotOutliveTheRun) {
  auto result =
      Run({"sh", "-c", "(exec >/dev/null 2>&1 </dev/null; sleep 0.5; touch late) & echo left it"});
  EXPECT_TRUE(result.ok()) << result.reason << result.output;
  EXPECT_EQ(result.output, "left it\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  EXPECT_FALSE(Exists("late"));
}

TEST_F(ContainedSandboxTest, AConnectionArrivesAtFd3InsteadOfAReportPipe) {
  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  SandboxCommand command;
  command.argv = {"sh", "-c", "echo hello >&3"};
  command.connection_fd = pair[1];
  CancelToken none;
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->ok()) << result->reason << result->output;
  char buf[16] = {};
  EXPECT_EQ(read(pair[0], buf, sizeof(buf)), 6);
  EXPECT_STREQ(buf, "hello\n");
  // The socket stays the caller's.
  EXPECT_EQ(write(pair[1], "x", 1), 1);

  command.report = true;
  result = sandbox_->Run(command, *workspace_, &none);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  close(pair[0]);
  close(pair[1]);
}

TEST_F(ContainedSandboxTest, InputReportAndAMissingCommand) {
  SandboxCommand command;
  command.argv = {"sh", "-c", "read line; echo \"report $line\" >&3; echo out"};
  command.input = "s3cret\n";
  command.report = true;
  CancelToken none;
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->report, "report s3cret\n");
  EXPECT_EQ(result->output, "out\n");

  command = {};
  command.argv = {"no-such-command-here"};
  result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 127);
  EXPECT_NE(result->output.find("cannot execute"), std::string::npos) << result->output;
}

TEST_F(ContainedSandboxTest, AProgramRunsWhereItIsWithItsOwnArgv) {
  TempDir bin;
  std::string program = bin.path() + "/tool.sh";
  std::ofstream(program) << "#!/bin/sh\necho \"$0 says $1 in $(pwd)\"\n";
  std::filesystem::permissions(program, std::filesystem::perms::owner_all);
  SandboxCommand command;
  command.argv = {"tool", "hi"};
  command.program = program;
  CancelToken none;
  auto result = sandbox_->Run(command, *workspace_, &none);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output, program + " says hi in " + dir_.path() + "/ws\n") << result->reason;
}

TEST_F(ContainedSandboxTest, ACommandDoesNotInheritAnIgnoredSigpipe) {
  // Services ignore SIGPIPE (BlockShutdownSignals); an ignored signal survives exec.
  auto previous = signal(SIGPIPE, SIG_IGN);
  auto result = Run({"grep", "SigIgn", "/proc/self/status"});
  signal(SIGPIPE, previous);
  EXPECT_EQ(result.output, "SigIgn:\t0000000000000000\n") << result.reason;
}

TEST(UnsandboxedMode, RunsInTheWorkspaceWithLimitsAndTimeouts) {
  auto sandbox = MakeSandbox(SandboxMode::kNone);
  ASSERT_TRUE(sandbox->Available().ok());
  EXPECT_EQ(sandbox->name(), "none");
  TempDir dir;
  auto workspace = sandbox->CreateWorkspace(dir.path(), "ws", {}, {});
  ASSERT_TRUE(workspace.ok()) << workspace.status();
  CancelToken cancel;
  SandboxCommand command;
  command.argv = {"sh", "-c", "pwd; echo hi > out.txt"};
  command.limits.wall_time = std::chrono::milliseconds(500);
  auto ok = sandbox->Run(command, **workspace, &cancel);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->ok()) << ok->reason << ok->output;
  EXPECT_NE(ok->output.find(dir.path() + "/ws"), std::string::npos) << ok->output;
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/ws/out.txt"));
  command.argv = {"sleep", "30"};
  auto slow = sandbox->Run(command, **workspace, &cancel);
  ASSERT_TRUE(slow.ok());
  EXPECT_NE(slow->reason.find("wall time limit"), std::string::npos) << slow->reason;
  workspace->reset();
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/ws")) << "the workspace outlived its object";
}

TEST(SandboxAvailability, MissingBubblewrapRefusesWithAClearError) {
  auto sandbox = MakeSandbox(SandboxMode::kBubblewrap, "/nonexistent/bwrap");
  auto status = sandbox->Available();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("--sandbox=none"), std::string::npos) << status;
  EXPECT_TRUE(MakeSandbox(SandboxMode::kNone)->Available().ok());
}

TEST(SandboxAvailability, ABubblewrapThatCannotSetUpRefusesJobs) {
  if (!MakeSandbox(SandboxMode::kBubblewrap)->Available().ok()) GTEST_SKIP();
  // A "bwrap" that fails as bwrap does on a setup error: no command ever runs unsandboxed.
  auto sandbox = MakeSandbox(SandboxMode::kBubblewrap, "/bin/false");
  auto status = sandbox->Available();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("could not start"), std::string::npos) << status;
}

}  // namespace
}  // namespace anima::selfcoding
