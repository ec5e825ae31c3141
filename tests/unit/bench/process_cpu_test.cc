#include "tools/bench/process_cpu.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "tools/bench/overload_scenario.h"

namespace anima::bench {
namespace {

TEST(ParseCpuPidsTest, NamesAndPids) {
  auto watch = ParseCpuPids("gateway=12,router=34,sim=5");
  ASSERT_TRUE(watch.ok()) << watch.status();
  ASSERT_EQ(watch->size(), 3u);
  EXPECT_EQ((*watch)[0].name, "gateway");
  EXPECT_EQ((*watch)[0].pid, 12);
  EXPECT_EQ((*watch)[2].name, "sim");
  EXPECT_EQ((*watch)[2].pid, 5);
}

TEST(ParseCpuPidsTest, RefusesWhatIsNotNameEqualsPid) {
  for (const char* bad :
       {"", ",", "gateway", "=12", "gateway=", "gateway=x", "gateway=-3", "gateway=0",
        "gateway=12x", "Gateway=1", "a b=1", "g=1,g=2", "g=99999999999999999999"}) {
    EXPECT_FALSE(ParseCpuPids(bad).ok()) << bad;
  }
}

TEST(ParseStatCpuSecondsTest, CountsFieldsAfterTheLastParenthesis) {
  // A command name with spaces and a ") " inside must not shift the fields.
  const std::string line =
      "4242 (evil) 1 2 3) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345";
  auto seconds = ParseStatCpuSeconds(line, 100);
  ASSERT_TRUE(seconds.ok()) << seconds.status();
  EXPECT_DOUBLE_EQ(*seconds, 3.0);  // (250 + 50) ticks at 100 a second
}

TEST(ParseStatCpuSecondsTest, RefusesTruncatedAndMalformedLines) {
  EXPECT_FALSE(ParseStatCpuSeconds("", 100).ok());
  EXPECT_FALSE(ParseStatCpuSeconds("4242 (x) S 1 2 3", 100).ok());
  EXPECT_FALSE(
      ParseStatCpuSeconds("4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 2a5 50", 100).ok());
  EXPECT_FALSE(ParseStatCpuSeconds("4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50", 0).ok());
}

TEST(ProcessCpuSecondsTest, ReadsThisProcessAndRefusesAMissingOne) {
  EXPECT_TRUE(ProcessCpuSeconds(::getpid()).ok());
  EXPECT_FALSE(ProcessCpuSeconds(0x3ffffff0).ok());
}

TEST(ProcessCpuTest, MicrosPerMessageAndTheRatioToTheSimulator) {
  std::vector<ProcessCpu> cpu = {{"gateway", 1.0}, {"router", 0.5}, {"broker", 1.5}, {"sim", 1.0}};
  EXPECT_DOUBLE_EQ(MicrosPerMessage(cpu[0], 10000), 100.0);
  EXPECT_DOUBLE_EQ(MicrosPerMessage(cpu[0], 0), 0.0);
  EXPECT_DOUBLE_EQ(AnimaOverSim(cpu), 3.0);
  cpu.pop_back();
  EXPECT_DOUBLE_EQ(AnimaOverSim(cpu), 0.0) << "no simulator, no ratio";
}

TEST(OverloadScenarioTest, StepsParseAscendingFactors) {
  auto steps = ParseSteps("0.1,1,1.5,3");
  ASSERT_TRUE(steps.ok()) << steps.status();
  EXPECT_EQ(*steps, (std::vector<double>{0.1, 1, 1.5, 3}));
  for (const char* bad : {"", "1,1", "2,1", "0", "-1", "x", "1,,y", "21", "1e9"}) {
    EXPECT_FALSE(ParseSteps(bad).ok()) << bad;
  }
}

TEST(OverloadScenarioTest, JudgesEachStepAgainstCapacityAndTheUnloadedStep) {
  OverloadResult r;
  r.capacity = 1000;
  OverloadStep unloaded{0.1, {}};
  unloaded.result.ok = 1000;
  unloaded.result.window_s = 10;
  unloaded.result.latency = {.count = 1000, .p99_ms = 2.0};
  OverloadStep over{3, {}};
  over.result.ok = 9200;
  over.result.window_s = 10;
  over.result.latency = {.count = 9200, .p99_ms = 7.0};
  over.result.errors = {{"overloaded", 20000}, {"too_many_in_flight", 5}, {"timeout", 3}};
  r.steps = {unloaded, over};
  const StepVerdict v = Judge(r, 1);
  EXPECT_DOUBLE_EQ(v.goodput_share, 0.92);
  EXPECT_DOUBLE_EQ(v.p99_over_unloaded, 3.5);
  EXPECT_EQ(v.refused, 20005);
  EXPECT_EQ(v.other_errors, 3);
  const std::string text = FormatOverloadText(r);
  EXPECT_NE(text.find("3.00x"), std::string::npos) << text;
  EXPECT_NE(text.find("92%"), std::string::npos) << text;
  EXPECT_EQ(OverloadToJson(r)["steps"][1]["refused"], 20005);
}

}  // namespace
}  // namespace anima::bench
