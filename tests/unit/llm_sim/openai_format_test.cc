#include "tools/llm_sim/openai_format.h"

#include "gtest/gtest.h"

namespace anima::sim::openai {
namespace {

using ojson = nlohmann::ordered_json;

std::vector<std::string> Keys(const ojson& j) {
  std::vector<std::string> keys;
  for (const auto& item : j.items()) keys.push_back(item.key());
  return keys;
}

// The first chunk of the recorded stream in reference/provider-wire-formats.md §1.4.
constexpr char kRecordedRoleChunk[] =
    R"({"id":"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs","object":"chat.completion.chunk","created":1761564674,"model":"gpt-3.5-turbo-0125","service_tier":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"kSx18"})";

TEST(OpenAiFormatTest, RoleChunkMatchesTheRecordingByteForByteExceptRandomFields) {
  CompletionIdentity identity{"chatcmpl-CVFjOTBIgA3kuQLnIXXxtg7Ge7hbs", 1761564674,
                              "gpt-3.5-turbo-0125"};
  std::string chunk = RoleChunk(identity, {/*include_usage=*/true, /*include_obfuscation=*/true});
  ojson ours = ojson::parse(chunk);
  ojson recorded = ojson::parse(kRecordedRoleChunk);
  EXPECT_EQ(Keys(ours), Keys(recorded));
  ours["obfuscation"] = "kSx18";
  EXPECT_EQ(ours.dump(), kRecordedRoleChunk);
  EXPECT_EQ(chunk.find('\n'), std::string::npos);
}

TEST(OpenAiFormatTest, UsageChunkHasEmptyChoicesAndFullUsage) {
  CompletionIdentity identity{"chatcmpl-x", 1, "m"};
  ojson chunk = ojson::parse(UsageChunk(identity, {10, 5}, {true, false}));
  EXPECT_EQ(chunk["choices"], ojson::array());
  EXPECT_EQ(chunk["usage"]["total_tokens"], 15);
  EXPECT_EQ(chunk["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
  EXPECT_FALSE(chunk.contains("obfuscation"));
  EXPECT_FALSE(ojson::parse(ContentChunk(identity, "x", {false, false})).contains("usage"));
}

TEST(OpenAiFormatTest, ErrorBodyHasAllFourFields) {
  ojson body = ojson::parse(ErrorBody({429, "m", "insufficient_quota", std::nullopt, "q"}));
  EXPECT_EQ(Keys(body["error"]), (std::vector<std::string>{"message", "type", "param", "code"}));
  EXPECT_TRUE(body["error"]["param"].is_null());
}

TEST(OpenAiFormatTest, TokensAreWordsWithTheirLeadingSpace) {
  EXPECT_EQ(SplitIntoTokens("Hi, how are you?"),
            (std::vector<std::string>{"Hi,", " how", " are", " you?"}));
  EXPECT_EQ(SplitIntoTokens("  lead\n\nnext "),
            (std::vector<std::string>{"  lead", "\n\nnext", " "}));
  EXPECT_TRUE(SplitIntoTokens("").empty());
  EXPECT_EQ(CountWords("  one two\tthree\n"), 3);
  EXPECT_EQ(CountWords(""), 0);
}

TEST(OpenAiFormatTest, ParsesWhatTheSimulatorNeeds) {
  ParsedRequest p = ParseChatRequest(R"({
      "model":"gpt-4o-mini","stream":true,
      "stream_options":{"include_usage":true,"include_obfuscation":false},
      "max_tokens":9,
      "tools":[{"type":"function","function":{"name":"lookup","parameters":{}}}],
      "messages":[{"role":"developer","content":"Be brief."},
                  {"role":"user","content":[{"type":"text","text":"first part"},
                                            {"type":"image_url","image_url":{"url":"x"}}]},
                  {"role":"assistant","content":null,"tool_calls":[]},
                  {"role":"user","content":"last one"}]})");
  ASSERT_FALSE(p.error) << p.error->message;
  EXPECT_EQ(p.request.model, "gpt-4o-mini");
  EXPECT_TRUE(p.request.stream);
  EXPECT_TRUE(p.request.include_usage);
  EXPECT_FALSE(p.request.include_obfuscation);
  EXPECT_EQ(p.request.last_user_text, "last one");
  EXPECT_EQ(p.request.prompt_tokens, 6);
  EXPECT_EQ(p.request.max_completion_tokens, 9);
  EXPECT_EQ(p.request.first_tool_name, "lookup");
}

TEST(OpenAiFormatTest, RejectsLikeTheRealEndpoint) {
  struct Case {
    const char* body;
    const char* code;  // "" for null
  };
  for (const Case& c :
       {Case{"", ""}, Case{"[1]", ""}, Case{R"({"messages":[]})", ""},
        Case{R"({"model":"m"})", "missing_required_parameter"},
        Case{R"({"model":"m","messages":"hi"})", "invalid_type"},
        Case{R"({"model":"m","messages":[]})", "empty_array"},
        Case{R"({"model":"m","messages":[{"role":"user"}],"stream":"yes"})", "invalid_type"},
        Case{R"({"model":"m","messages":[{"role":"user"}],"stream_options":{}})", ""}}) {
    ParsedRequest p = ParseChatRequest(c.body);
    ASSERT_TRUE(p.error) << c.body;
    EXPECT_EQ(p.error->status, 400);
    EXPECT_EQ(p.error->type, "invalid_request_error");
    EXPECT_EQ(p.error->code.value_or(""), c.code) << c.body;
  }
}

}  // namespace
}  // namespace anima::sim::openai
