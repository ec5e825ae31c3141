// The Gemini wire format (reference §3, §4, §6) and Venice's differences in the OpenAI one.
#include "services/llm_broker/gemini_wire.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/openai_wire.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

TEST(GeminiWireTest, RequestUsesSystemInstructionAndUserModelRoles) {
  ChatRequest r;
  r.model = "gemini-2.0-flash";
  r.system = "be terse";
  r.messages = {{"developer", "no emojis"}, {"user", "hi"}, {"assistant", "hello"}, {"user", "?"}};
  r.max_tokens = 64;
  json body = json::parse(gemini::BuildRequestBody(r));
  EXPECT_EQ(body["systemInstruction"]["parts"][0]["text"], "be terse\n\nno emojis");
  ASSERT_EQ(body["contents"].size(), 3u);
  EXPECT_EQ(body["contents"][0]["role"], "user");
  EXPECT_EQ(body["contents"][1]["role"], "model");
  EXPECT_EQ(body["contents"][1]["parts"][0]["text"], "hello");
  EXPECT_EQ(body["generationConfig"]["maxOutputTokens"], 64);
  EXPECT_FALSE(body["generationConfig"].contains("temperature"));  // only set fields
  EXPECT_EQ(body.dump().find("null"), std::string::npos);
}

TEST(GeminiWireTest, FinishReasonsAreNormalisedAndUnknownIsOther) {
  EXPECT_EQ(gemini::NormalizeFinishReason("STOP", false), "stop");
  EXPECT_EQ(gemini::NormalizeFinishReason("STOP", true), "tool_calls");
  EXPECT_EQ(gemini::NormalizeFinishReason("MAX_TOKENS", false), "length");
  for (const char* r : {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                        "IMAGE_SAFETY", "LANGUAGE"}) {
    EXPECT_EQ(gemini::NormalizeFinishReason(r, false), "content_filter") << r;
  }
  for (const char* r : {"OTHER", "MALFORMED_FUNCTION_CALL", "FINISH_REASON_UNSPECIFIED",
                        "SOMETHING_NEW_IN_2027", ""}) {
    EXPECT_EQ(gemini::NormalizeFinishReason(r, false), "other") << r;
  }
}

TEST(GeminiWireTest, ChunksToleratesMissingAndNullFields) {
  auto parsed = gemini::ParseChunk(
      R"({"candidates":[{"content":{"role":"model"},"finishReason":null}],)"
      R"("usageMetadata":{"promptTokenCount":7,"candidatesTokenCount":null,"totalTokenCount":7}})");
  ASSERT_TRUE(std::holds_alternative<gemini::Chunk>(parsed));
  auto& chunk = std::get<gemini::Chunk>(parsed);
  EXPECT_TRUE(chunk.delta.empty());
  EXPECT_FALSE(chunk.finish_reason.has_value());
  ASSERT_TRUE(chunk.usage.has_value());
  EXPECT_EQ(chunk.usage->prompt_tokens, 7);
  // Thoughts are output tokens; thought parts are not text.
  parsed = gemini::ParseChunk(
      R"({"candidates":[{"content":{"parts":[{"text":"hmm","thought":true},{"text":"Hi"}]},)"
      R"("finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,)"
      R"("candidatesTokenCount":41,"thoughtsTokenCount":5,"totalTokenCount":53}})");
  auto& c2 = std::get<gemini::Chunk>(parsed);
  EXPECT_EQ(c2.delta, "Hi");
  EXPECT_EQ(c2.finish_reason, "stop");
  EXPECT_EQ(c2.usage->completion_tokens, 46);
  EXPECT_EQ(c2.usage->total_tokens, 53);
  // A blocked prompt.
  parsed = gemini::ParseChunk(R"({"promptFeedback":{"blockReason":"SAFETY"}})");
  EXPECT_TRUE(std::get<gemini::Chunk>(parsed).blocked);
  EXPECT_EQ(std::get<gemini::Chunk>(parsed).finish_reason, "content_filter");
  // An error event after HTTP 200 is checked first.
  parsed = gemini::ParseChunk(
      R"({"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"},"candidates":[]})");
  ASSERT_TRUE(std::holds_alternative<ProviderError>(parsed));
  EXPECT_TRUE(std::get<ProviderError>(parsed).retryable);
  for (const char* hostile :
       {"", "x", "[]", "null", "1", "\"s\"", "{\"candidates\":5}", "{\"candidates\":[5]}",
        "{\"candidates\":[{\"content\":[]}]}", "{\"usageMetadata\":{\"promptTokenCount\":-5}}"}) {
    auto result = gemini::ParseChunk(hostile);
    if (auto* chunk = std::get_if<gemini::Chunk>(&result)) {
      EXPECT_TRUE(chunk->delta.empty()) << hostile;
      if (chunk->usage) EXPECT_GE(chunk->usage->prompt_tokens, 0) << hostile;
    }
  }
}

TEST(GeminiWireTest, WholeResponsesAndArrays) {
  auto one = gemini::ParseResponse(
      R"({"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":)"
      R"("STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,)"
      R"("totalTokenCount":4},"modelVersion":"gemini-2.0-flash"})");
  ASSERT_TRUE(std::holds_alternative<ChatResult>(one));
  EXPECT_EQ(std::get<ChatResult>(one).text, "Hi");
  EXPECT_EQ(std::get<ChatResult>(one).model, "gemini-2.0-flash");
  auto array = gemini::ParseResponse(
      "[{\n \"candidates\": [{\"content\": {\"parts\": [{\"text\": \"a\"}]}}],"
      "\"usageMetadata\":{\"promptTokenCount\":3,\"totalTokenCount\":3}}\n,\r\n"
      "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"b\"}]},\"finishReason\":"
      "\"MAX_TOKENS\"}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,"
      "\"totalTokenCount\":5}}\n]");
  ASSERT_TRUE(std::holds_alternative<ChatResult>(array));
  EXPECT_EQ(std::get<ChatResult>(array).text, "ab");
  EXPECT_EQ(std::get<ChatResult>(array).finish_reason, "length");
  EXPECT_EQ(std::get<ChatResult>(array).usage->total_tokens, 5);  // the last, not the sum
  auto blocked = gemini::ParseResponse(
      R"({"promptFeedback":{"blockReason":"OTHER"},"usageMetadata":{"promptTokenCount":9}})");
  ASSERT_TRUE(std::holds_alternative<ChatResult>(blocked));
  EXPECT_EQ(std::get<ChatResult>(blocked).finish_reason, "content_filter");
  EXPECT_EQ(std::get<ChatResult>(blocked).usage->prompt_tokens, 9);
  EXPECT_TRUE(std::holds_alternative<ProviderError>(gemini::ParseResponse("{}")));
  EXPECT_TRUE(std::holds_alternative<ProviderError>(gemini::ParseResponse("<html>")));
}

TEST(GeminiWireTest, HttpErrorsObjectOrArrayWithRetryInfo) {
  const std::string per_minute = R"({
  "error": {
    "code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
    "details": [
      {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
       "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
      {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "57.238747106s"}
    ]
  }
})";
  for (const std::string& body : {per_minute, "[" + per_minute + "]"}) {
    ProviderError e = gemini::ParseHttpError(429, body);
    EXPECT_TRUE(e.retryable);
    EXPECT_EQ(e.code, "http_429");
    EXPECT_EQ(e.message, "quota");
    EXPECT_EQ(e.retry_after, 57239ms);
  }
  std::string per_day = per_minute;
  per_day.replace(per_day.find("PerMinute"), 9, "PerDay");
  ProviderError day = gemini::ParseHttpError(429, per_day);
  EXPECT_FALSE(day.retryable);
  EXPECT_EQ(day.code, "http_429_quota");
  EXPECT_FALSE(gemini::ParseHttpError(400, R"({"error":{"code":400,"status":"INVALID_ARGUMENT",)"
                                           R"("message":"API key not valid."}})")
                   .retryable);
  EXPECT_FALSE(gemini::ParseHttpError(403, "").retryable);
  EXPECT_TRUE(gemini::ParseHttpError(503, "<html>bad gateway</html>").retryable);
  EXPECT_EQ(gemini::ParseDuration("1.5s"), 1500ms);
  EXPECT_EQ(gemini::ParseDuration("47s"), 47000ms);
  EXPECT_FALSE(gemini::ParseDuration("47").has_value());
  EXPECT_FALSE(gemini::ParseDuration("-1s").has_value());
  EXPECT_FALSE(gemini::ParseDuration("1e99s").has_value());
}

TEST(VeniceWireTest, RequestSwitchesVeniceSystemPromptOffAndSendsNoNulls) {
  ChatRequest r;
  r.model = "venice-uncensored";
  r.messages = {{"user", "hi"}};
  r.stream = true;
  json body = json::parse(openai::BuildRequestBody(r, /*venice=*/true));
  EXPECT_EQ(body["venice_parameters"]["include_venice_system_prompt"], false);
  EXPECT_EQ(body.dump().find("null"), std::string::npos);
  EXPECT_FALSE(json::parse(openai::BuildRequestBody(r)).contains("venice_parameters"));
}

TEST(VeniceWireTest, StringErrorsAndTheEpochResetHeader) {
  auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'800'000'000));
  HttpResponseHead head;
  head.status = 429;
  head.headers = {{"x-ratelimit-reset-requests", "1800000003"}};
  ProviderError e = openai::ParseHttpError(429, &head, R"({"error":"Rate limit exceeded"})", now);
  EXPECT_EQ(e.message, "Rate limit exceeded");
  EXPECT_TRUE(e.retryable);
  EXPECT_EQ(e.retry_after, 3000ms);
  // OpenAI's duration in the same header is not a timestamp.
  head.headers = {{"x-ratelimit-reset-requests", "6m0s"}};
  EXPECT_FALSE(openai::ParseHttpError(429, &head, "{}", now).retry_after.has_value());
  // Nor is a time past 2100 (found by libFuzzer: in nanoseconds it overflowed).
  for (const char* far : {"99999999999", "4102444801", "9223372036854775807"}) {
    head.headers = {{"x-ratelimit-reset-requests", far}};
    EXPECT_FALSE(openai::ParseHttpError(429, &head, "{}", now).retry_after.has_value()) << far;
  }
  EXPECT_FALSE(
      openai::ParseHttpError(402, nullptr, R"({"error":"Insufficient balance"})", now).retryable);
}

TEST(RetryAfterTest, SecondsAndHttpDates) {
  auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1445412480));
  // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
  EXPECT_EQ(openai::ParseRetryAfterValue("2", now), 2000ms);
  EXPECT_EQ(openai::ParseRetryAfterValue("Wed, 21 Oct 2015 07:28:05 GMT", now), 5000ms);
  EXPECT_EQ(openai::ParseRetryAfterValue("Wed, 21 Oct 2015 07:27:00 GMT", now), 0ms);
  EXPECT_FALSE(openai::ParseRetryAfterValue("soon", now).has_value());
  EXPECT_FALSE(openai::ParseRetryAfterValue("-3", now).has_value());
}

}  // namespace
}  // namespace anima::broker
