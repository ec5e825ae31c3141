// The Venice and Gemini APIs of the simulator as pure functions of a request: the routes, auth,
// bodies and headers each real service sends (reference §2, §3, §5).
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/llm_sim/gemini_api.h"
#include "tools/llm_sim/venice_api.h"

namespace anima::sim {
namespace {

using nlohmann::json;

std::shared_ptr<SimConfig> Config(std::string key = "") {
  auto config = std::make_shared<SimConfig>();
  config->api_key = std::move(key);
  return config;
}

std::string Body(const ResponsePlan& plan) {
  std::string body;
  for (const auto& w : plan.writes) body += w.bytes;
  return body;
}

std::string HeaderOf(const ResponsePlan& plan, const std::string& name) {
  for (const auto& [k, v] : plan.headers) {
    if (k == name) return v;
  }
  return "";
}

SimRequest Post(std::string target, std::string body,
                std::map<std::string, std::string> headers = {}) {
  SimRequest r;
  r.method = "POST";
  r.target = std::move(target);
  r.body = std::move(body);
  r.headers = std::move(headers);
  return r;
}

const char kVeniceBody[] =
    R"({"model":"venice-uncensored","messages":[{"role":"user","content":"hi there"}],)"
    R"("venice_parameters":{"include_venice_system_prompt":false}})";

TEST(VeniceApiTest, AnswersOpenAiShapedWithVeniceExtras) {
  VeniceApi api(Config());
  EXPECT_FALSE(api.Handle(Post("/v1/chat/completions", kVeniceBody)).has_value());
  auto plan =
      api.Handle(Post("/api/v1/chat/completions", kVeniceBody, {{"authorization", "Bearer k"}}));
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->status, 200);
  EXPECT_FALSE(HeaderOf(*plan, "CF-RAY").empty());
  EXPECT_TRUE(HeaderOf(*plan, "x-request-id").empty());
  // x-ratelimit-reset-requests is a unix timestamp, not OpenAI's duration.
  EXPECT_GT(std::stoll(HeaderOf(*plan, "x-ratelimit-reset-requests")), 1'700'000'000LL);
  json body = json::parse(Body(*plan));
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_TRUE(body["cost"]["usd"].is_number());
  EXPECT_EQ(body["venice_parameters"]["include_venice_system_prompt"], false);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
}

TEST(VeniceApiTest, ErrorsAreStringsAndNullsAreRejected) {
  VeniceApi api(Config());
  auto missing = api.Handle(Post("/api/v1/chat/completions", kVeniceBody));
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->status, 401);
  EXPECT_EQ(json::parse(Body(*missing))["error"], "Authentication failed");

  auto with_null = api.Handle(Post(
      "/api/v1/chat/completions",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":null})",
      {{"authorization", "Bearer k"}}));
  EXPECT_EQ(with_null->status, 400);
  json body = json::parse(Body(*with_null));
  EXPECT_EQ(body["error"], "Invalid request parameters");
  EXPECT_TRUE(body["details"].contains("max_completion_tokens"));

  auto limited =
      api.Handle(Post("/api/v1/chat/completions", kVeniceBody,
                      {{"authorization", "Bearer k"}, {"x-sim-scenario", "rate_limit_429"}}));
  EXPECT_EQ(limited->status, 429);
  EXPECT_TRUE(json::parse(Body(*limited))["error"].is_string());
  EXPECT_FALSE(HeaderOf(*limited, "x-ratelimit-reset-requests").empty());
  EXPECT_TRUE(HeaderOf(*limited, "retry-after").empty());

  auto broke = api.Handle(Post("/api/v1/chat/completions", kVeniceBody,
                               {{"authorization", "Bearer k"}, {"x-sim-scenario", "quota_429"}}));
  EXPECT_EQ(broke->status, 402);

  auto strict = api.Handle(
      Post("/api/v1/chat/completions",
           R"({"model":"m","messages":[{"role":"user","content":"x"}],"web_search_options":{}})",
           {{"authorization", "Bearer k"}, {"x-sim-strict", "1"}}));
  EXPECT_EQ(strict->status, 400);
}

const char kGeminiBody[] =
    R"({"systemInstruction":{"parts":[{"text":"be terse"}]},)"
    R"("contents":[{"role":"user","parts":[{"text":"one two three four five six seven"}]}]})";
const char kStream[] = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
const char kUnary[] = "/v1beta/models/gemini-2.0-flash:generateContent";

TEST(GeminiApiTest, SseIsCrlfFramedWithCumulativeUsageAndNoDone) {
  GeminiApi api(Config());
  auto plan = api.Handle(Post(kStream, kGeminiBody, {{"x-goog-api-key", "k"}}));
  ASSERT_TRUE(plan.has_value());
  EXPECT_EQ(plan->status, 200);
  EXPECT_EQ(HeaderOf(*plan, "Content-Type"), "text/event-stream");
  std::string body = Body(*plan);
  EXPECT_EQ(body.find("[DONE]"), std::string::npos);
  EXPECT_EQ(body.substr(body.size() - 4), "\r\n\r\n");
  std::vector<json> events;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\r\n\r\n", pos);
    ASSERT_NE(end, std::string::npos);
    events.push_back(json::parse(body.substr(pos + 6, end - pos - 6)));
    pos = end;
  }
  ASSERT_GE(events.size(), 2u);
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_FALSE(events[i]["candidates"][0].contains("finishReason"));
    EXPECT_EQ(events[i]["usageMetadata"]["promptTokenCount"],
              events.back()["usageMetadata"]["promptTokenCount"]);
  }
  EXPECT_EQ(events.back()["candidates"][0]["finishReason"], "STOP");
  EXPECT_TRUE(events.back()["usageMetadata"].contains("candidatesTokenCount"));
}

TEST(GeminiApiTest, WithoutAltSseTheStreamIsOneJsonArray) {
  GeminiApi api(Config());
  auto plan = api.Handle(Post("/v1beta/models/gemini-2.0-flash:streamGenerateContent", kGeminiBody,
                              {{"x-goog-api-key", "k"}}));
  ASSERT_TRUE(plan.has_value());
  json body = json::parse(Body(*plan));
  ASSERT_TRUE(body.is_array());
  EXPECT_GE(body.size(), 2u);
  EXPECT_EQ(body.back()["candidates"][0]["finishReason"], "STOP");
}

TEST(GeminiApiTest, AuthAndValidationAsTheRealService) {
  GeminiApi api(Config("right"));
  EXPECT_EQ(api.Handle(Post(kUnary, kGeminiBody))->status, 403);
  auto bad = api.Handle(Post(kUnary, kGeminiBody, {{"x-goog-api-key", "wrong"}}));
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(Body(*bad))["error"]["details"][0]["reason"], "API_KEY_INVALID");
  EXPECT_EQ(api.Handle(Post(std::string(kUnary) + "?key=right", kGeminiBody))->status, 200);
  auto role =
      api.Handle(Post(kUnary, R"({"contents":[{"role":"assistant","parts":[{"text":"x"}]}]})",
                      {{"x-goog-api-key", "right"}}));
  EXPECT_EQ(role->status, 400);
  EXPECT_EQ(json::parse(Body(*role))["error"]["message"], "Please use a valid role: user, model.");
  auto unknown = api.Handle(
      Post(kUnary, R"({"contents":[{"role":"user","parts":[{"text":"x"}]}],"temperature":1})",
           {{"x-goog-api-key", "right"}}));
  EXPECT_EQ(unknown->status, 400);
  EXPECT_NE(json::parse(Body(*unknown))["error"]["message"].get<std::string>().find(
                "Unknown name \"temperature\""),
            std::string::npos);
  for (const char* hostile : {"", "[", "null", "[1,2]", "{\"contents\":[]}", "{\"contents\":[1]}",
                              "{\"contents\":\"x\"}"}) {
    auto plan = api.Handle(Post(kUnary, hostile, {{"x-goog-api-key", "right"}}));
    EXPECT_EQ(plan->status, 400) << hostile;
  }
  EXPECT_EQ(api.Handle(Post("/v1beta/models/x:countTokens", kGeminiBody))->status, 404);
  EXPECT_FALSE(api.Handle(Post("/v1/chat/completions", kGeminiBody)).has_value());
}

TEST(GeminiApiTest, ScenariosHaveGeminisShapes) {
  GeminiApi api(Config());
  auto run = [&](const std::string& target, const std::string& scenario) {
    return *api.Handle(
        Post(target, kGeminiBody, {{"x-goog-api-key", "k"}, {"x-sim-scenario", scenario}}));
  };
  json blocked = json::parse(Body(run(kUnary, "prompt_blocked")));
  EXPECT_EQ(blocked["promptFeedback"]["blockReason"], "SAFETY");
  EXPECT_FALSE(blocked.contains("candidates"));
  std::string blocked_sse = Body(run(kStream, "prompt_blocked"));
  EXPECT_EQ(blocked_sse.substr(blocked_sse.size() - 2), "\r\n");
  EXPECT_NE(blocked_sse.substr(blocked_sse.size() - 4), "\r\n\r\n");

  json safety = json::parse(Body(run(kUnary, "safety_stop")));
  EXPECT_EQ(safety["candidates"][0]["finishReason"], "SAFETY");
  json length = json::parse(Body(run(kUnary, "length")));
  EXPECT_EQ(length["candidates"][0]["finishReason"], "MAX_TOKENS");
  EXPECT_GT(length["usageMetadata"]["thoughtsTokenCount"], 0);

  ResponsePlan limited = run(kUnary, "rate_limit_429");
  EXPECT_EQ(limited.status, 429);
  json details = json::parse(Body(limited))["error"]["details"];
  EXPECT_EQ(details.back()["retryDelay"], "1.5s");
  json wrapped = json::parse(Body(run(kUnary, "error_503,wrapped")));
  ASSERT_TRUE(wrapped.is_array());
  EXPECT_EQ(wrapped[0]["error"]["status"], "UNAVAILABLE");
  json per_day = json::parse(Body(run(kUnary, "quota_429")));
  EXPECT_NE(
      per_day["error"]["details"][1]["violations"][0]["quotaId"].get<std::string>().find("PerDay"),
      std::string::npos);

  ResponsePlan midstream = run(kStream, "midstream_error");
  EXPECT_NE(Body(midstream).find(R"("status":"UNAVAILABLE")"), std::string::npos);
  EXPECT_EQ(midstream.ending, Ending::kCloseAfterLast);
  EXPECT_EQ(run(kStream, "truncated").ending, Ending::kTruncate);
  EXPECT_NE(Body(run(kStream, "null_fields")).find(R"("finishReason":null)"), std::string::npos);
}

}  // namespace
}  // namespace anima::sim
