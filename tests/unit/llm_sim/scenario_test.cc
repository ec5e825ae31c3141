#include "tools/llm_sim/scenario.h"

#include "gtest/gtest.h"

namespace anima::sim {
namespace {

TEST(ScenarioTest, EmptyMeansOk) {
  auto s = ParseScenario("");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->outcome, Outcome::kOk);
  EXPECT_FALSE(s->modifiers.crlf);
}

TEST(ScenarioTest, OutcomeAndModifiersCombineInAnyOrder) {
  auto s = ParseScenario(" crlf, midstream_error ,SPLIT_BYTES");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->outcome, Outcome::kMidstreamError);
  EXPECT_TRUE(s->modifiers.crlf);
  EXPECT_TRUE(s->modifiers.split_bytes);
  EXPECT_FALSE(s->modifiers.comments);
}

TEST(ScenarioTest, UnknownNamesAndTwoOutcomesAreErrors) {
  auto unknown = ParseScenario("crlf,bogus");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("bogus"), std::string::npos);
  auto two = ParseScenario("error_500,truncated");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("two outcomes"), std::string::npos);
}

TEST(ScenarioTest, EveryNameParsesAndOutcomesRoundTrip) {
  for (const auto& name : ScenarioNames()) {
    auto s = ParseScenario(name);
    ASSERT_TRUE(s.ok()) << name;
    if (s->outcome != Outcome::kOk) {
      EXPECT_EQ(OutcomeName(s->outcome), name);
    }
  }
  EXPECT_TRUE(IsHttpError(Outcome::kQuota429));
  EXPECT_FALSE(IsHttpError(Outcome::kMidstreamError));
}

TEST(FaultMixTest, SharesAreCumulativePerApiAndTheRestIsNoFault) {
  auto mix = FaultMix::Parse(
      "openai=rate_limit_429:0.2, error_500:0.1 ,slow+split_bytes:0.05; gemini=truncated:0.5");
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_NE(mix->Pick("openai", 0.0), nullptr);
  EXPECT_EQ(mix->Pick("openai", 0.0)->outcome, Outcome::kRateLimit429);
  EXPECT_EQ(mix->Pick("openai", 0.199)->outcome, Outcome::kRateLimit429);
  EXPECT_EQ(mix->Pick("openai", 0.2)->outcome, Outcome::kError500);
  const Scenario* slow = mix->Pick("openai", 0.31);
  ASSERT_NE(slow, nullptr);
  EXPECT_EQ(slow->outcome, Outcome::kSlow);
  EXPECT_TRUE(slow->modifiers.split_bytes);
  EXPECT_EQ(mix->Pick("openai", 0.351), nullptr);
  EXPECT_EQ(mix->Pick("openai", 0.999), nullptr);
  EXPECT_EQ(mix->Pick("gemini", 0.49)->outcome, Outcome::kTruncated);
  EXPECT_EQ(mix->Pick("gemini", 0.5), nullptr);
  EXPECT_EQ(mix->Pick("venice", 0.0), nullptr) << "an API not named has no faults";
  EXPECT_TRUE(FaultMix::Parse("")->empty());
}

TEST(FaultMixTest, BadSpecificationsNameWhatIsWrong) {
  auto expect_error = [](const std::string& text, const std::string& part) {
    auto mix = FaultMix::Parse(text);
    ASSERT_FALSE(mix.ok()) << text;
    EXPECT_NE(mix.status().message().find(part), std::string::npos)
        << text << ": " << mix.status().message();
  };
  expect_error("anthropic=error_500:0.1", "expected openai=");
  expect_error("openai=error_500", "SCENARIO:SHARE");
  expect_error("openai=error_500:0", "above 0");
  expect_error("openai=error_500:-0.5", "above 0");
  expect_error("openai=error_500:nan", "above 0");
  expect_error("openai=error_500:1.5", "up to 1");
  expect_error("openai=error_500:0.6,truncated:0.6", "over 1");
  expect_error("openai=bogus:0.1", "unknown scenario 'bogus'");
  expect_error("openai=error_500+truncated:0.1", "two outcomes");
  expect_error("openai=error_500:0.1;openai=truncated:0.1", "named twice");
  expect_error("openai=", "names no scenario");
}

}  // namespace
}  // namespace anima::sim
