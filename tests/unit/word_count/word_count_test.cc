#include "tools/word_count/word_count.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace anima::wordcount {
namespace {

TEST(WordCountTest, CountsWordsCharactersAndLines) {
  auto out = CountWords(R"({"type":"word_count","text":"hello  wide\nworld, ünïcode"})");
  ASSERT_TRUE(out.ok()) << out.status();
  auto j = nlohmann::json::parse(*out);
  EXPECT_EQ(j["type"], "word_count_result");
  EXPECT_EQ(j["words"], 4);
  EXPECT_EQ(j["characters"], 26);  // code points, not bytes
  EXPECT_EQ(j["lines"], 2);
}

TEST(WordCountTest, EmptyTextIsZero) {
  auto j = nlohmann::json::parse(*CountWords(R"({"text":""})"));
  EXPECT_EQ(j["words"], 0);
  EXPECT_EQ(j["lines"], 0);
}

TEST(WordCountTest, MissingOrWrongTextIsAnErrorNamingTheField) {
  for (const char* bad : {R"({"type":"word_count"})", R"({"text":5})", "[1]", "not json"}) {
    auto out = CountWords(bad);
    ASSERT_FALSE(out.ok()) << bad;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_NE(CountWords(R"({"text":5})").status().message().find("text"), std::string::npos);
}

}  // namespace
}  // namespace anima::wordcount
