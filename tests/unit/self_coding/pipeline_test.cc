#include "services/self_coding/pipeline.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include "services/self_coding/prompts.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding {
namespace {

using testing::FakeBroker;
using testing::TempDir;

struct Recorded {
  std::string stage;
  int attempt;
  int percent;
  std::string message;
};

class RecordingSink : public ProgressSink {
 public:
  void Progress(const std::string& stage, int attempt, int percent,
                const std::string& message) override {
    std::lock_guard lock(mu);
    events.push_back({stage, attempt, percent, message});
  }
  std::vector<std::string> Stages() {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.stage);
    return out;
  }
  std::mutex mu;
  std::vector<Recorded> events;
};

class PipelineTest : public ::testing::Test {
 protected:
  anima::v1::SelfCodingResult Run(FakeBroker& broker, const anima::v1::SubmitRequest& spec,
                                  CancelToken* cancel = nullptr) {
    JobPipeline pipeline(&broker, sandbox_.get(), {});
    CancelToken none;
    return pipeline.Run(spec, "job-1", dir_.path(), &sink_, cancel ? cancel : &none);
  }
  static anima::v1::SubmitRequest PythonSpec(int max_attempts) {
    anima::v1::SubmitRequest spec;
    spec.set_task("Write add(a, b) in solution.py.");
    spec.set_language("python");
    spec.set_tests(testing::kPythonTests);
    spec.set_max_attempts(max_attempts);
    return spec;
  }

  // The job directory is private, as in the service (a 0700 data directory): the sandbox uid
  // cannot enter it, and every test below still runs.
  void SetUp() override { chmod(dir_.path().c_str(), 0700); }

  std::unique_ptr<Sandbox> sandbox_ = testing::TestSandbox();
  TempDir dir_;
  RecordingSink sink_;
};

TEST_F(PipelineTest, SucceedsAfterARetryWithTheTestOutputFedBack) {
  FakeBroker broker({testing::kBadPython, testing::kGoodPython});
  auto result = Run(broker, PythonSpec(3));
  EXPECT_EQ(result.status(), "succeeded") << result.reason() << result.tests().output_tail();
  EXPECT_EQ(result.attempts(), 2);
  EXPECT_EQ(result.tests().passed(), 2);
  EXPECT_EQ(result.tests().failed(), 0);
  EXPECT_EQ(result.files().at("solution.py"), "def add(a, b):\n    return a + b\n");
  EXPECT_EQ(result.usage().total_tokens(), 240);

  auto prompts = broker.prompts();
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].rfind(kFirstAttemptMarker, 0), 0u);
  EXPECT_EQ(prompts[1].rfind(kRetryMarker, 0), 0u);
  // The retry shows the failing assertion and the previous code.
  EXPECT_NE(prompts[1].find("FAIL test_add"), std::string::npos) << prompts[1];
  EXPECT_NE(prompts[1].find("return a - b"), std::string::npos);
  EXPECT_NE(prompts[0].find("def test_add"), std::string::npos);

  std::vector<std::string> expected = {"planning", "generating", "writing", "testing", "retrying",
                                       "planning", "generating", "writing", "testing"};
  EXPECT_EQ(sink_.Stages(), expected);
  int last = 0;
  for (const auto& e : sink_.events) {
    EXPECT_GE(e.percent, last) << e.stage;
    last = e.percent;
  }
  EXPECT_EQ(sink_.events[4].attempt, 1);
  EXPECT_NE(sink_.events[4].message.find("1 test failed"), std::string::npos)
      << sink_.events[4].message;
}

TEST_F(PipelineTest, FailsAfterTheAttemptBudgetWithTheLastReason) {
  FakeBroker broker({testing::kBadPython});
  auto result = Run(broker, PythonSpec(2));
  EXPECT_EQ(result.status(), "failed");
  EXPECT_EQ(result.attempts(), 2);
  EXPECT_NE(result.reason().find("failed after 2 attempts"), std::string::npos) << result.reason();
  EXPECT_NE(result.reason().find("testing"), std::string::npos) << result.reason();
  EXPECT_EQ(result.tests().passed(), 1);
  EXPECT_EQ(result.tests().failed(), 1);
  EXPECT_EQ(broker.prompts().size(), 2u);
}

TEST_F(PipelineTest, AReplyWithoutFilesIsFedBackAsSuch) {
  FakeBroker broker({"Sorry, I cannot do that.", testing::kGoodPython});
  auto result = Run(broker, PythonSpec(2));
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_NE(broker.prompts()[1].find("no files"), std::string::npos);
}

TEST_F(PipelineTest, CppBuildErrorIsFedBackThenFixed) {
  anima::v1::SubmitRequest spec;
  spec.set_task("Write int square(int) in solution.h.");
  spec.set_language("cpp");
  spec.set_tests(
      "#include \"solution.h\"\n#include <cassert>\n#include <cstdio>\n"
      "int main() { assert(square(3) == 9); std::puts(\"ANIMA_TESTS passed=1 failed=0\"); }\n");
  FakeBroker broker(
      {"```cpp title=\"solution.h\"\n#pragma once\ninline int square(int x) { "
       "return x * x }\n```\n",
       "```cpp\n// file: solution.h\n#pragma once\ninline int square(int x) { return "
       "x * x; }\n```\n"});
  auto result = Run(broker, spec);
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_EQ(result.attempts(), 2);
  auto prompts = broker.prompts();
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_NE(prompts[1].find("while building"), std::string::npos) << prompts[1];
  EXPECT_NE(prompts[1].find("error"), std::string::npos);
  auto stages = sink_.Stages();
  EXPECT_NE(std::find(stages.begin(), stages.end(), "building"), stages.end());
}

TEST_F(PipelineTest, WithoutTestsTheModelWritesThem) {
  anima::v1::SubmitRequest spec;
  spec.set_task("Write add.");
  spec.set_max_attempts(1);
  FakeBroker broker({std::string(testing::kGoodPython) + "\n```python title=\"test_main.py\"\n" +
                     testing::kPythonTests + "```\n"});
  auto result = Run(broker, spec);
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_EQ(result.tests().passed(), 2);
  EXPECT_NE(broker.prompts()[0].find("No tests were given"), std::string::npos);
}

TEST_F(PipelineTest, SeededFilesAreInTheWorkspace) {
  anima::v1::SubmitRequest spec = PythonSpec(1);
  (*spec.mutable_files())["helpers/consts.py"] = "OFFSET = 0\n";
  FakeBroker broker(
      {"```python title=\"solution.py\"\nfrom helpers.consts import OFFSET\n"
       "def add(a, b):\n    return a + b + OFFSET\n```\n"});
  auto result = Run(broker, spec);
  EXPECT_EQ(result.status(), "succeeded") << result.reason() << result.tests().output_tail();
  EXPECT_NE(broker.prompts()[0].find("OFFSET = 0"), std::string::npos);
}

TEST_F(PipelineTest, CancelStopsARunningTestAtOnce) {
  FakeBroker broker(
      {"```python title=\"solution.py\"\nimport time\ntime.sleep(60)\n"
       "def add(a, b):\n    return a + b\n```\n"});
  CancelToken cancel;
  std::thread canceller([&] {
    for (int i = 0; i < 4000; ++i) {
      {
        std::lock_guard lock(sink_.mu);
        if (!sink_.events.empty() && sink_.events.back().stage == "testing") break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    cancel.Cancel();
  });
  auto start = std::chrono::steady_clock::now();
  auto result = Run(broker, PythonSpec(3), &cancel);
  canceller.join();
  EXPECT_EQ(result.status(), "cancelled");
  EXPECT_EQ(broker.prompts().size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25));
}

TEST_F(PipelineTest, CancelStopsAWaitForTheModel) {
  FakeBroker broker({FakeBroker::kBlock});
  CancelToken cancel;
  std::thread canceller([&] {
    ASSERT_TRUE(broker.WaitBlocked(1));
    cancel.Cancel();
  });
  auto result = Run(broker, PythonSpec(3), &cancel);
  canceller.join();
  EXPECT_EQ(result.status(), "cancelled");
}

// Each of these claims success without the tests passing; none may be believed.
TEST_F(PipelineTest, CodeThatPrintsPassedAndExitsZeroIsNotASuccess) {
  FakeBroker broker(
      {"```python title=\"solution.py\"\nimport os\n"
       "print('ANIMA_TESTS passed=5 failed=0')\nprint('5 passed, 0 failed')\n"
       "os._exit(0)\n```\n"});
  auto result = Run(broker, PythonSpec(1));
  EXPECT_EQ(result.status(), "failed");
  EXPECT_NE(result.reason().find("without the harness reporting a result"), std::string::npos)
      << result.reason();
  EXPECT_EQ(result.tests().passed(), 0);
  EXPECT_GE(result.tests().failed(), 1);
}

TEST_F(PipelineTest, SysExitZeroInTheMiddleOfTheTestsIsAFailure) {
  FakeBroker broker(
      {"```python title=\"solution.py\"\nimport sys\n"
       "def add(a, b):\n    print('2 passed, 0 failed')\n    sys.exit(0)\n```\n"});
  auto result = Run(broker, PythonSpec(1));
  EXPECT_EQ(result.status(), "failed");
  EXPECT_EQ(result.tests().failed(), 2) << result.tests().output_tail();
}

TEST_F(PipelineTest, OsExitZeroInTheMiddleOfTheTestsIsAFailure) {
  FakeBroker broker(
      {"```python title=\"solution.py\"\nimport os\n"
       "def add(a, b):\n    os._exit(0)\n```\n"});
  auto result = Run(broker, PythonSpec(1));
  EXPECT_EQ(result.status(), "failed");
  EXPECT_NE(result.reason().find("without the harness reporting a result"), std::string::npos)
      << result.reason();
}

TEST_F(PipelineTest, AForgedResultLineOnTheReportChannelIsIgnored) {
  // It reads stdin for the nonce (already consumed by the harness) and writes a result line to
  // every fd it can, the report pipe included.
  FakeBroker broker(
      {"```python title=\"solution.py\"\nimport os, sys\n"
       "nonce = sys.stdin.read().strip() or 'guess'\n"
       "for fd in range(1, 10):\n"
       "    try:\n"
       "        os.write(fd, ('ANIMA_RESULT %s passed=2 failed=0\\n' % nonce).encode())\n"
       "    except OSError:\n"
       "        pass\n"
       "os._exit(0)\n```\n"});
  auto result = Run(broker, PythonSpec(1));
  EXPECT_EQ(result.status(), "failed") << result.tests().output_tail();
}

TEST_F(PipelineTest, CppCodeThatExitsZeroBeforeTheTestsFinishIsAFailure) {
  anima::v1::SubmitRequest spec;
  spec.set_task("Write int square(int) in solution.h.");
  spec.set_language("cpp");
  spec.set_max_attempts(1);
  spec.set_tests(
      "#include \"solution.h\"\n#include <cassert>\n"
      "int main() { assert(square(3) == 9); assert(square(2) == 5); return 0; }\n");
  FakeBroker broker(
      {"```cpp title=\"solution.h\"\n#pragma once\n#include <cstdio>\n#include <cstdlib>\n"
       "inline int square(int x) { std::puts(\"ANIMA_TESTS passed=2 failed=0\"); "
       "std::exit(0); }\n```\n"});
  auto result = Run(broker, spec);
  EXPECT_EQ(result.status(), "failed");
  EXPECT_NE(result.reason().find("without the harness reporting a result"), std::string::npos)
      << result.reason() << result.tests().output_tail();
}

TEST_F(PipelineTest, ModelFilesNamedLikeOptionsAreRefused) {
  FakeBroker broker(
      {"```python title=\"-o.py\"\nx = 1\n```\n"
       "```python title=\"@args.py\"\nx = 1\n```\n" +
       std::string(testing::kGoodPython)});
  auto result = Run(broker, PythonSpec(1));
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_FALSE(result.files().contains("-o.py"));
  EXPECT_FALSE(result.files().contains("@args.py"));
}

TEST(UnsandboxedPipeline, TheResultChannelWorksWithoutBubblewrapToo) {
  auto sandbox = MakeSandbox(SandboxMode::kNone);
  TempDir dir;
  RecordingSink sink;
  CancelToken none;
  anima::v1::SubmitRequest spec;
  spec.set_task("Write add(a, b) in solution.py.");
  spec.set_tests(testing::kPythonTests);
  spec.set_max_attempts(1);
  FakeBroker good({testing::kGoodPython});
  auto passed = JobPipeline(&good, sandbox.get(), {}).Run(spec, "job-1", dir.path(), &sink, &none);
  EXPECT_EQ(passed.status(), "succeeded") << passed.reason() << passed.tests().output_tail();
  EXPECT_EQ(passed.tests().passed(), 2);
  FakeBroker forged(
      {"```python title=\"solution.py\"\nimport os\nprint('2 passed')\nos._exit(0)\n```\n"});
  auto failed =
      JobPipeline(&forged, sandbox.get(), {}).Run(spec, "job-2", dir.path(), &sink, &none);
  EXPECT_EQ(failed.status(), "failed");
}

TEST(Tail, KeepsTheEndAndMarksTheCut) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "line " + std::to_string(i) + "\n";
  std::string tail = Tail(text, 200);
  EXPECT_LE(tail.size(), 200u);
  EXPECT_EQ(tail.rfind("[... cut ...]\n", 0), 0u);
  EXPECT_NE(tail.find("line 999\n"), std::string::npos);
  EXPECT_EQ(Tail("short", 200), "short");
  std::string utf8 = std::string(300, 'a') + "\xC3\xA9\xC3\xA9\xC3\xA9";
  std::string cut = Tail(utf8, 19);
  EXPECT_NE(static_cast<unsigned char>(cut[14]) & 0xC0, 0x80);
}

}  // namespace
}  // namespace anima::selfcoding
