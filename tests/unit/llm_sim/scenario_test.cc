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

}  // namespace
}  // namespace anima::sim
