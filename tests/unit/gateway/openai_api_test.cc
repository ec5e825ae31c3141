#include "gateway/openai_api.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {
namespace {

using Json = nlohmann::json;

ChatCompletionRequest Parse(const std::string& body) {
  auto result = OpenAiApi::ParseChatCompletion(body);
  if (auto* e = std::get_if<OpenAiError>(&result)) {
    ADD_FAILURE() << body << ": " << e->message;
    return {};
  }
  return std::get<ChatCompletionRequest>(result);
}

OpenAiError Error(const std::string& body) {
  auto result = OpenAiApi::ParseChatCompletion(body);
  if (!std::holds_alternative<OpenAiError>(result)) {
    ADD_FAILURE() << body << " was accepted";
    return {};
  }
  return std::get<OpenAiError>(result);
}

TEST(OpenAiApiTest, RequestBecomesAChatEnvelope) {
  auto r = Parse(R"({"model":"openai/gpt-4o","stream":true,"stream_options":{"include_usage":true},
    "temperature":0,"max_tokens":9,"max_completion_tokens":5,"user":"ignored",
    "messages":[{"role":"system","content":"a"},{"role":"user","content":"q1"},
      {"role":"assistant","content":null},{"role":"developer","content":[{"type":"text","text":"b"}]},
      {"role":"user","content":[{"type":"text","text":"q"},{"type":"text","text":"2"}]}]})");
  const auto& chat = r.envelope.chat();
  EXPECT_EQ(r.envelope.type(), "chat");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(chat.stream());
  EXPECT_EQ(chat.provider(), "openai");
  EXPECT_EQ(chat.model(), "gpt-4o");
  EXPECT_TRUE(chat.has_temperature());
  EXPECT_EQ(chat.max_tokens(), 5);  // max_completion_tokens wins
  EXPECT_EQ(chat.system(), "a\n\nb");
  EXPECT_EQ(chat.message(), "q2");
  ASSERT_EQ(chat.history_size(), 2);
  EXPECT_EQ(chat.history(1).role(), "assistant");
  EXPECT_EQ(chat.history(1).content(), "");
}

TEST(OpenAiApiTest, ModelForms) {
  EXPECT_EQ(Parse(R"({"messages":[{"role":"user","content":"x"}]})").envelope.chat().model(), "");
  auto a = Parse(R"({"model":"auto","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(a.envelope.chat().model(), "");
  EXPECT_EQ(a.envelope.chat().provider(), "");
  auto m = Parse(R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(m.envelope.chat().model(), "gpt-4o");
  EXPECT_EQ(m.envelope.chat().provider(), "");
  auto p = Parse(R"({"model":"venice/llama/3","messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(p.envelope.chat().provider(), "venice");
  EXPECT_EQ(p.envelope.chat().model(), "llama/3");
  EXPECT_EQ(Error(R"({"model":"x/","messages":[{"role":"user","content":"x"}]})").param, "model");
}

TEST(OpenAiApiTest, HostileAndMalformedBodies) {
  for (const char* body :
       {"", "{", "null", "[]", "\"x\"", "1e999999", "{\"messages\":[}", "{\"a\":\"\\ud800\"}"}) {
    auto e = Error(body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.type, "invalid_request_error") << body;
  }
  EXPECT_EQ(Error("{").code, "invalid_json");
  std::string deep(100000, '[');
  EXPECT_EQ(Error(deep).code, "invalid_json");
  for (const char* body :
       {R"({"messages":null})", R"({"messages":{}})", R"({"messages":[{"role":1,"content":"x"}]})",
        R"({"messages":[{"content":"x"}]})", R"({"messages":[{"role":"user","content":{"a":1}}]})",
        R"({"messages":[{"role":"user","content":[1]}]})",
        R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})",
        R"({"messages":[{"role":"user","content":"x"}],"temperature":-1})",
        R"({"messages":[{"role":"user","content":"x"}],"max_tokens":1.5})",
        R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})",
        R"({"messages":[{"role":"user","content":"x"}],"stream_options":1})",
        R"({"messages":[{"role":"user","content":"x"}],
                               "stream_options":{"include_usage":"yes"}})"}) {
    auto e = Error(body);
    EXPECT_EQ(e.http_status, 400) << body;
    EXPECT_EQ(e.code, "invalid_message") << body;
    EXPECT_FALSE(e.param.empty()) << body;
  }
}

TEST(OpenAiApiTest, ErrorEventsMapToStatuses) {
  struct Case {
    const char* code;
    int status;
    const char* type;
  } cases[] = {{"invalid_message", 400, "invalid_request_error"},
               {"unauthenticated", 401, "authentication_error"},
               {"too_large", 413, "invalid_request_error"},
               {"overloaded", 429, "rate_limit_error"},
               {"rate_limited", 429, "rate_limit_error"},
               {"provider_error", 502, "server_error"},
               {"unavailable", 503, "server_error"},
               {"deadline_exceeded", 504, "server_error"},
               {"internal", 500, "server_error"},
               {"something_new", 500, "server_error"}};
  for (const auto& c : cases) {
    anima::v1::ErrorEvent event;
    event.set_code(c.code);
    event.set_retry_after_ms(2001);
    auto e = OpenAiApi::ErrorFromEvent(event);
    EXPECT_EQ(e.http_status, c.status) << c.code;
    EXPECT_EQ(e.type, c.type) << c.code;
    EXPECT_EQ(e.code, c.code);
    EXPECT_FALSE(e.message.empty());
    EXPECT_EQ(e.retry_after_seconds, c.status == 429 ? 3 : 0) << c.code;
  }
  EXPECT_EQ(OpenAiApi::ErrorFromStatus(grpc::StatusCode::UNAVAILABLE, "x").http_status, 503);
  EXPECT_EQ(OpenAiApi::ErrorFromStatus(grpc::StatusCode::DEADLINE_EXCEEDED, "x").http_status, 504);
  EXPECT_EQ(OpenAiApi::ErrorFromStatus(grpc::StatusCode::INTERNAL, "x").http_status, 500);
  Json j = Json::parse(OpenAiApi::RenderError(OpenAiApi::BodyTooLarge(10)));
  EXPECT_EQ(j["error"]["code"], "too_large");
  EXPECT_TRUE(j["error"]["param"].is_null());
}

TEST(OpenAiApiTest, RenderedObjects) {
  ChatCompletionRenderer renderer("auto");
  anima::v1::ChatResponse response;
  response.set_message("hi \xff");  // invalid UTF-8 from a provider is replaced, not fatal
  response.set_model("m-1");
  response.mutable_usage()->set_total_tokens(4);
  Json c = Json::parse(renderer.Completion(response));
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["model"], "m-1");
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"]["total_tokens"], 4);
  Json role = Json::parse(renderer.RoleChunk());
  EXPECT_EQ(role["model"], "auto");
  EXPECT_EQ(role["id"], c["id"]);
  Json finish = Json::parse(renderer.FinishChunk(response));
  EXPECT_EQ(finish["model"], "m-1");
  Json usage = Json::parse(renderer.UsageChunk(response));
  EXPECT_EQ(usage["choices"], Json::array());
  Json list = Json::parse(OpenAiApi::RenderModelList({{"p", "m"}}));
  EXPECT_EQ(list["data"][0]["id"], "p/m");
  EXPECT_EQ(list["data"][0]["owned_by"], "p");
}

}  // namespace
}  // namespace anima::gateway
