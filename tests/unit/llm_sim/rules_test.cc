#include "tools/llm_sim/rules.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace anima::sim {
namespace {

using nlohmann::json;

absl::StatusOr<RuleSet> Parse(const char* text) {
  return RuleSet::FromJson(json::parse(text), "r");
}

TEST(RulesTest, SubstringRegexAndModelFilters) {
  auto rules = Parse(R"({"rules":[
      {"match":"alpha","model":"m2","reply":"for m2"},
      {"match":"alpha","reply":"any model"},
      {"match":"/^be+ta$/i","reply":"regex"}]})");
  ASSERT_TRUE(rules.ok()) << rules.status();
  const Rule* r = rules->Match("xx alpha yy", "m2");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(rules->ReplyFor(r, "", ""), "for m2");
  EXPECT_EQ(rules->ReplyFor(rules->Match("alpha", "m1"), "", ""), "any model");
  EXPECT_EQ(rules->ReplyFor(rules->Match("BEEETA", "m1"), "", ""), "regex");
  EXPECT_EQ(rules->Match("a beta b", "m1"), nullptr);
}

TEST(RulesTest, DefaultReplyFillsPlaceholders) {
  auto rules = Parse(R"({"default_reply":"You said {prompt} to {model}."})");
  ASSERT_TRUE(rules.ok());
  EXPECT_EQ(rules->ReplyFor(nullptr, "hi there", "gpt-x"), "You said hi there to gpt-x.");
  RuleSet builtin;
  EXPECT_NE(builtin.ReplyFor(nullptr, "unique prompt 42", "m").find("unique prompt 42"),
            std::string::npos);
}

TEST(RulesTest, StatusIsShorthandForTheErrorScenario) {
  auto rules = Parse(R"({"rules":[{"match":"x","status":503},
                                  {"match":"y","scenario":"crlf","status":429}]})");
  ASSERT_TRUE(rules.ok()) << rules.status();
  EXPECT_EQ(rules->Match("x", "m")->scenario->outcome, Outcome::kError503);
  const Rule* y = rules->Match("y", "m");
  EXPECT_EQ(y->scenario->outcome, Outcome::kRateLimit429);
  EXPECT_TRUE(y->scenario->modifiers.crlf);
}

TEST(RulesTest, ErrorsNameTheField) {
  struct Case {
    const char* text;
    const char* field;
  };
  for (const Case& c :
       {Case{R"({"rules":[{"reply":"no match"}]})", "r.rules[0].match"},
        Case{R"({"rules":[{"match":"/[/"}]})", "r.rules[0].match"},
        Case{R"({"rules":[{"match":"a","scenario":"nope"}]})", "r.rules[0].scenario"},
        Case{R"({"rules":[{"match":"a","status":418}]})", "r.rules[0].status"},
        Case{R"({"rules":[{"match":"a","colour":"red"}]})", "r.rules[0].colour"},
        Case{R"({"rulez":[]})", "r.rulez"}, Case{R"({"models":[""]})", "r.models[0]"}}) {
    auto rules = Parse(c.text);
    ASSERT_FALSE(rules.ok()) << c.text;
    EXPECT_NE(rules.status().message().find(c.field), std::string::npos)
        << rules.status().message();
  }
}

TEST(RulesTest, ShippedRulesFileLoadsAndAnswersTheGreeting) {
  const char* source = std::getenv("ANIMA_SOURCE_DIR");
  ASSERT_NE(source, nullptr);
  auto rules = RuleSet::LoadFile(std::string(source) + "/tools/llm_sim/rules.json");
  ASSERT_TRUE(rules.ok()) << rules.status();
  const Rule* greeting = rules->Match("Hello, consciousness system!", "gpt-4o-mini");
  ASSERT_NE(greeting, nullptr);
  EXPECT_NE(rules->ReplyFor(greeting, "", "").find("Anima"), std::string::npos);
}

}  // namespace
}  // namespace anima::sim
