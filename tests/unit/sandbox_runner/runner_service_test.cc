// The runner's service in process on 127.0.0.1:0, driven through a real gRPC client, running
// real commands in the contained sandbox.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

#include "grpc/health/v1/health.grpc.pb.h"
#include "services/sandbox_runner/runner.h"
#include "services/sandbox_runner/runner_service.h"
#include "tests/unit/sandbox_runner/runner_test_support.h"

namespace anima::sandboxrunner {
namespace {

namespace fs = std::filesystem;
using testing::kSecret;
using testing::RunnerClient;
using testing::TempDir;

class RunnerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(RunnerCeilings{}); }

  void Start(const RunnerCeilings& ceilings) {
    client_.reset();
    server_.reset();
    service_.reset();
    runner_.reset();
    auto sandbox = selfcoding::MakeSandbox(selfcoding::SandboxMode::kContained);
    ASSERT_TRUE(sandbox->Available().ok()) << sandbox->Available();
    RunnerOptions options;
    options.workspace_dir = dir_.path();
    options.ceilings = ceilings;
    runner_ = std::make_unique<Runner>(std::move(sandbox), options);
    service_ = std::make_unique<RunnerService>(runner_.get());
    RunnerServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.max_receive_bytes = MaxRequestBytes(ceilings);
    auto server = RunnerServer::Start(service_.get(), server_options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    client_ = std::make_unique<RunnerClient>(channel_);
  }

  // Bound, with a workspace holding `files`.
  void Ready(const std::vector<std::pair<std::string, std::string>>& files = {{"x", "x"}}) {
    ASSERT_TRUE(client_->Bind(kSecret).ok());
    auto s = client_->Put(files, &workspace_);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  bool InWorkspace(const std::string& name) const {
    return fs::exists(fs::path(workspace_.workspace()) / name);
  }

  void TearDown() override {
    client_.reset();
    if (server_ != nullptr) server_->Shutdown(std::chrono::seconds(1));
    server_.reset();
    service_.reset();
    runner_.reset();
  }

  TempDir dir_;
  std::unique_ptr<Runner> runner_;
  std::unique_ptr<RunnerService> service_;
  std::unique_ptr<RunnerServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<RunnerClient> client_;
  anima::v1::PutWorkspaceResponse workspace_;
};

TEST_F(RunnerServiceTest, BindsOnceWithALongEnoughSecret) {
  auto s = client_->Bind("too-short");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  anima::v1::BindResponse response;
  s = client_->Bind(kSecret, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.runner().rfind("anima-sandbox-runner ", 0), 0u) << response.runner();
  for (const std::string& secret : {std::string(kSecret), std::string(40, 'z'), std::string("x")}) {
    s = client_->Bind(secret);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  }
  // The first secret still holds.
  EXPECT_TRUE(client_->Put({{"a.py", "print(1)"}}).ok());
}

TEST_F(RunnerServiceTest, EveryMethodButBindNeedsTheBearerSecret) {
  auto s = client_->Put({{"a.py", "x"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(s.error_message().find("not bound"), std::string::npos) << s.error_message();
  ASSERT_TRUE(client_->Bind(kSecret).ok());

  const std::string wrong = std::string(kSecret) + "x";
  for (const std::string& secret : {std::string(), wrong, std::string("s3cret")}) {
    SCOPED_TRACE("secret \"" + secret + "\"");
    EXPECT_EQ(client_->Put({{"a.py", "x"}}, nullptr, 0, 0, secret).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    auto run = client_->Run(RunnerClient::Command({"true"}), secret);
    EXPECT_EQ(run.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(run.outputs.empty());
    EXPECT_FALSE(run.result);
    EXPECT_EQ(client_->Release(secret).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Another scheme with the right secret is no better.
  grpc::ClientContext context;
  context.AddMetadata("authorization", std::string("Basic ") + kSecret);
  anima::v1::ReleaseResponse response;
  EXPECT_EQ(client_->stub().Release(&context, {}, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The scheme's case does not matter (RFC 7235); the secret's does.
  grpc::ClientContext lower;
  lower.AddMetadata("authorization", std::string("bearer ") + kSecret);
  EXPECT_TRUE(client_->stub().Release(&lower, {}, &response).ok());

  EXPECT_TRUE(client_->Put({{"a.py", "x"}}).ok());
  EXPECT_TRUE(client_->Release().ok());
}

TEST_F(RunnerServiceTest, TheHealthServiceNeedsNoSecret) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse response;
  auto s = health->Check(&context, {}, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(RunnerServiceTest, HostilePathsAreRefusedByName) {
  ASSERT_TRUE(client_->Bind(kSecret).ok());
  for (const std::string path : {"../x", "/etc/passwd", "-rf", "a/../../b", ""}) {
    SCOPED_TRACE("path \"" + path + "\"");
    auto s = client_->Put({{"fine.py", "x"}, {path, "planted"}});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("\"" + path + "\""), std::string::npos) << s.error_message();
    // No half-written workspace is left to run in.
    EXPECT_EQ(client_->Run(RunnerClient::Command({"true"})).status.error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  EXPECT_FALSE(fs::exists(fs::path(dir_.path()).parent_path() / "x"));
  EXPECT_FALSE(fs::exists(fs::path(dir_.path()) / "b"));
  // The same path twice is the request's fault too.
  auto s = client_->Put({{"a.py", "1"}, {"a.py", "2"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
}

TEST_F(RunnerServiceTest, WorkspacesOverTheLimitsAreResourceExhausted) {
  RunnerCeilings ceilings;
  ceilings.workspace_bytes = 64 * 1024;
  ceilings.workspace_files = 5;
  Start(ceilings);
  ASSERT_TRUE(client_->Bind(kSecret).ok());
  // Within the request's own limit but over the ceiling (a request for 1 TB gets 64 KiB).
  auto s = client_->Put({{"big", std::string(100 * 1024, 'x')}}, nullptr, 1LL << 40, 0);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  // Over the request's lower limit.
  s = client_->Put({{"big", std::string(10 * 1024, 'x')}}, nullptr, 8 * 1024, 0);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  // Too many files, by the ceiling and by the request.
  std::vector<std::pair<std::string, std::string>> files;
  for (int i = 0; i < 6; ++i) files.emplace_back("f" + std::to_string(i), "x");
  s = client_->Put(files);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  files.resize(3);
  s = client_->Put(files, nullptr, 0, 2);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  anima::v1::PutWorkspaceResponse response;
  s = client_->Put(files, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.files(), 3);
  EXPECT_EQ(response.bytes(), 3);
}

TEST_F(RunnerServiceTest, RunStreamsOutputAsItComesThenOneResult) {
  Ready({{"talk.py",
          "import os, time\n"
          "for i in range(3):\n"
          "    print('piece', i, flush=True)\n"
          "    while not os.path.exists('ack%d' % i):\n"
          "        time.sleep(0.01)\n"
          "print('done')\n"}});
  // The command waits for an acknowledgement of each piece, which this test gives only once it
  // has received that piece: the output cannot all have come at the end.
  anima::v1::RunCommandRequest request = RunnerClient::Command({"python3", "talk.py"});
  grpc::ClientContext context;
  RunnerClient::Authorize(context, kSecret);
  auto reader = client_->stub().Run(&context, request);
  anima::v1::RunCommandEvent event;
  std::string output;
  int outputs = 0, results = 0, events_after_result = 0;
  anima::v1::RunCommandResult result;
  while (reader->Read(&event)) {
    if (results > 0) events_after_result++;
    if (event.has_result()) {
      results++;
      result = event.result();
      continue;
    }
    outputs++;
    output += event.output();
    for (int i = 0; i < 3; ++i) {
      if (output.find("piece " + std::to_string(i)) != std::string::npos) {
        std::ofstream(fs::path(workspace_.workspace()) / ("ack" + std::to_string(i))).put('x');
      }
    }
  }
  auto s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(output, "piece 0\npiece 1\npiece 2\ndone\n");
  EXPECT_GE(outputs, 3);
  EXPECT_EQ(results, 1);
  EXPECT_EQ(events_after_result, 0);
  EXPECT_EQ(result.exit_code(), 0);
  EXPECT_TRUE(result.reason().empty()) << result.reason();
  EXPECT_EQ(result.output_bytes(), static_cast<int64_t>(output.size()));
}

TEST_F(RunnerServiceTest, TheReportAtFd3AndTheInputComeThrough) {
  Ready({{"r.py",
          "import os, sys\n"
          "line = sys.stdin.readline().strip()\n"
          "print('on stdout')\n"
          "os.write(3, ('report ' + line).encode())\n"
          "sys.exit(4)\n"}});
  auto request = RunnerClient::Command({"python3", "r.py"});
  request.set_report(true);
  request.set_input("from stdin\n");
  auto run = client_->Run(request);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_TRUE(run.result);
  EXPECT_EQ(run.result->report(), "report from stdin");
  EXPECT_EQ(run.output(), "on stdout\n");
  EXPECT_EQ(run.result->exit_code(), 4);
  EXPECT_TRUE(run.result->reason().empty());
}

TEST_F(RunnerServiceTest, BadRunRequestsAreRefused) {
  ASSERT_TRUE(client_->Bind(kSecret).ok());
  EXPECT_EQ(client_->Run(RunnerClient::Command({"true"})).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(client_->Put({{"a", "a"}}).ok());
  EXPECT_EQ(client_->Run(RunnerClient::Command({})).status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  auto request = RunnerClient::Command({"cat"});
  request.set_input(std::string(5000, 'x'));
  EXPECT_EQ(client_->Run(request).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(RunnerServiceTest, OneCommandAtATimeAndCancellingKillsTheTree) {
  Ready();
  // The caller's context lives only while its Run call does: it is cancelled under the lock, and
  // only while the call is still going (a call that ended early fails the test, not the process).
  std::mutex mutex;
  grpc::ClientContext* running = nullptr;
  bool ended = false;
  RunnerClient::RunOutcome first;
  std::thread caller([&] {
    first = client_->Run(
        RunnerClient::Command(
            {"sh", "-c",
             "(exec >/dev/null 2>&1 </dev/null; sleep 0.5; touch late) & touch started; "
             "sleep 60"}),
        kSecret, [&](grpc::ClientContext& context) {
          std::lock_guard<std::mutex> lock(mutex);
          running = &context;
        });
    std::lock_guard<std::mutex> lock(mutex);
    running = nullptr;
    ended = true;
  });
  EXPECT_TRUE(testing::Eventually([&] {
    std::lock_guard<std::mutex> lock(mutex);
    return (running != nullptr && InWorkspace("started")) || ended;
  }));
  auto second = client_->Run(RunnerClient::Command({"true"}));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << second.status.error_message();
  {
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_FALSE(ended) << "the first command ended before it was cancelled";
    if (running != nullptr) running->TryCancel();
  }
  caller.join();
  EXPECT_EQ(first.status.error_code(), grpc::StatusCode::CANCELLED) << first.status.error_message();
  // The grandchild would have written `late` 500 ms after starting.
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  EXPECT_FALSE(InWorkspace("late")) << "a process of the cancelled command lived on";
  // And the runner takes the next command.
  RunnerClient::RunOutcome next;
  EXPECT_TRUE(testing::Eventually([&] {
    next = client_->Run(RunnerClient::Command({"echo", "next"}));
    return next.status.error_code() != grpc::StatusCode::FAILED_PRECONDITION;
  }));
  EXPECT_TRUE(next.status.ok()) << next.status.error_message();
  EXPECT_EQ(next.output(), "next\n");
}

TEST_F(RunnerServiceTest, ADeadlineKillsTheTreeToo) {
  Ready();
  auto run = client_->Run(
      RunnerClient::Command(
          {"sh", "-c", "(exec >/dev/null 2>&1 </dev/null; sleep 0.5; touch late) & sleep 60"}),
      kSecret, [](grpc::ClientContext& context) {
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
      });
  EXPECT_EQ(run.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  std::this_thread::sleep_for(std::chrono::milliseconds(900));
  EXPECT_FALSE(InWorkspace("late"));
}

TEST_F(RunnerServiceTest, LimitsAreClampedToTheCeilings) {
  RunnerCeilings ceilings;
  ceilings.memory_bytes = 512LL << 20;
  ceilings.cpu_seconds = 7;
  ceilings.file_size_bytes = 3LL << 20;
  Start(ceilings);
  Ready({{"limits.py",
          "import resource as r\n"
          "print(r.getrlimit(r.RLIMIT_AS)[0], r.getrlimit(r.RLIMIT_CPU)[0],"
          " r.getrlimit(r.RLIMIT_FSIZE)[0])\n"}});
  auto request = RunnerClient::Command({"python3", "limits.py"});
  request.mutable_limits()->set_memory_bytes(1LL << 40);  // 1 TB
  request.mutable_limits()->set_cpu_seconds(1000000);
  auto run = client_->Run(request);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(run.output(), absl::StrCat(512LL << 20, " 7 ", 3LL << 20, "\n")) << run.output();
  // Below the ceilings, the request holds.
  request.mutable_limits()->set_memory_bytes(256LL << 20);
  request.mutable_limits()->set_cpu_seconds(2);
  request.mutable_limits()->set_file_size_bytes(1LL << 20);
  run = client_->Run(request);
  EXPECT_EQ(run.output(), absl::StrCat(256LL << 20, " 2 ", 1LL << 20, "\n")) << run.output();
}

TEST_F(RunnerServiceTest, WallTimeAndOutputStopAtTheCeilings) {
  RunnerCeilings ceilings;
  ceilings.output_bytes = 200 * 1024;
  ceilings.wall_time = std::chrono::milliseconds(1000);
  Start(ceilings);
  Ready({{"flood.py", "while True:\n    print('x' * 1000)\n"}});
  auto request = RunnerClient::Command({"python3", "flood.py"});
  request.mutable_limits()->set_output_bytes(1LL << 40);
  auto run = client_->Run(request);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_TRUE(run.result);
  EXPECT_NE(run.result->reason().find("output limit"), std::string::npos) << run.result->reason();
  EXPECT_EQ(run.output().size(), 200u * 1024);
  EXPECT_EQ(run.result->output_bytes(), 200 * 1024);
  for (const auto& piece : run.outputs) EXPECT_LE(piece.size(), 64u * 1024);

  request = RunnerClient::Command({"sleep", "60"});
  request.mutable_limits()->set_wall_time_ms(3600 * 1000);
  run = client_->Run(request);
  ASSERT_TRUE(run.result);
  EXPECT_NE(run.result->reason().find("wall time limit (1 s)"), std::string::npos)
      << run.result->reason();
  EXPECT_FALSE(run.result->cancelled());
}

TEST_F(RunnerServiceTest, ReleaseAndANewWorkspaceDeleteTheOldOne) {
  Ready({{"pkg/a.py", "x"}});
  const std::string first = workspace_.workspace();
  EXPECT_TRUE(fs::exists(fs::path(first) / "pkg/a.py"));
  EXPECT_EQ(fs::path(first).parent_path(), fs::path(dir_.path()));
  anima::v1::PutWorkspaceResponse second;
  ASSERT_TRUE(client_->Put({{"b.py", "yy"}}, &second).ok());
  EXPECT_FALSE(fs::exists(first)) << "the previous workspace was kept";
  EXPECT_TRUE(fs::exists(fs::path(second.workspace()) / "b.py"));
  EXPECT_EQ(second.bytes(), 2);
  ASSERT_TRUE(client_->Release().ok());
  EXPECT_FALSE(fs::exists(second.workspace()));
  EXPECT_EQ(client_->Run(RunnerClient::Command({"true"})).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(RunnerServiceTest, ReleaseEndsARunningCommand) {
  Ready();
  RunnerClient::RunOutcome run;
  std::thread caller([&] {
    run = client_->Run(RunnerClient::Command({"sh", "-c", "touch started; sleep 60"}));
  });
  ASSERT_TRUE(testing::Eventually([&] { return InWorkspace("started"); }));
  const std::string path = workspace_.workspace();
  ASSERT_TRUE(client_->Release().ok());
  caller.join();
  EXPECT_FALSE(fs::exists(path));
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_TRUE(run.result);
  EXPECT_TRUE(run.result->cancelled());
}

// The plain Runner: when the process should stop.
class RunnerStopTest : public ::testing::Test {
 protected:
  std::unique_ptr<Runner> Make(RunnerOptions options) {
    options.workspace_dir = dir_.path();
    return std::make_unique<Runner>(selfcoding::MakeSandbox(selfcoding::SandboxMode::kContained),
                                    options);
  }
  TempDir dir_;
};

TEST_F(RunnerStopTest, ABoundRunnerStopsWhenIdleAndARunningCommandHoldsTheTimer) {
  RunnerOptions options;
  options.idle_timeout = std::chrono::milliseconds(200);
  auto runner = Make(options);
  ASSERT_TRUE(runner->Bind(kSecret).ok());
  ASSERT_TRUE(runner->PutWorkspace({}, 0, 0).ok());
  std::atomic<bool> finished{false};
  std::thread command([&] {
    Runner::CallScope call(runner.get());
    selfcoding::SandboxCommand sleep;
    sleep.argv = {"sleep", "0.6"};
    selfcoding::CancelToken none;
    auto result = runner->Run(sleep, &none);
    EXPECT_TRUE(result.ok() && result->ok());
    finished = true;
  });
  EXPECT_EQ(runner->WaitForStop(), StopReason::kIdle);
  EXPECT_TRUE(finished) << "stopped for idleness while a command ran";
  command.join();
}

TEST_F(RunnerStopTest, ReleaseStopsARunnerThatExitsAfterRelease) {
  RunnerOptions options;
  options.exit_after_release = true;
  auto runner = Make(options);
  ASSERT_TRUE(runner->Bind(kSecret).ok());
  ASSERT_TRUE(runner->PutWorkspace({{"a", "b"}}, 0, 0).ok());
  runner->Release();
  EXPECT_EQ(runner->WaitForStop(), StopReason::kReleased);
  EXPECT_EQ(runner->PutWorkspace({}, 0, 0).status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(RunnerStopTest, StopCancelsTheRunningCommand) {
  auto runner = Make({});
  ASSERT_TRUE(runner->Bind(kSecret).ok());
  ASSERT_TRUE(runner->PutWorkspace({}, 0, 0).ok());
  absl::StatusOr<selfcoding::SandboxResult> result;
  std::thread command([&] {
    selfcoding::SandboxCommand sleep;
    sleep.argv = {"sleep", "60"};
    selfcoding::CancelToken none;
    result = runner->Run(sleep, &none);
  });
  // Stop may come before the command starts: then Run is refused instead.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  runner->Stop(StopReason::kSignal);
  EXPECT_EQ(runner->WaitForStop(), StopReason::kSignal);
  command.join();
  if (result.ok()) {
    EXPECT_TRUE(result->cancelled);
  } else {
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  }
}

}  // namespace
}  // namespace anima::sandboxrunner
