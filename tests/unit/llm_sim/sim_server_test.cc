// The simulator in process on port 0, spoken to over real sockets.
#include "tools/llm_sim/sim_server.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "tests/unit/llm_sim/test_client.h"
#include "tools/llm_sim/openai_api.h"

namespace anima::sim {
namespace {

using nlohmann::json;
using testing::ChatBody;
using testing::ChatRequestBytes;
using testing::HttpResponse;
using testing::RawConnection;
using testing::SseEvents;

constexpr char kRules[] = R"({
  "default_reply": "Echo of {prompt} from {model}",
  "models": ["gpt-4o-mini", "anima-sim"],
  "rules": [
    {"match": "Hello, consciousness system!", "reply": "Hello! I am Anima, and I am listening."},
    {"match": "/^count (to )?three$/i", "reply": "one two three"},
    {"match": "please fail", "reply": "never sent", "status": 429},
    {"match": "weather", "scenario": "tool_call", "tool_name": "get_weather",
     "tool_arguments": {"location": "Boston"}}
  ]
})";

class SimServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(SimServerOptions{}); }

  void StartServer(SimServerOptions options, bool require_key = true,
                   const std::string& faults = "") {
    server_.reset();
    auto config = std::make_shared<SimConfig>();
    auto rules = RuleSet::FromJson(json::parse(kRules), "rules");
    ASSERT_TRUE(rules.ok()) << rules.status();
    config->rules = *rules;
    config->require_key = require_key;
    auto mix = FaultMix::Parse(faults);
    ASSERT_TRUE(mix.ok()) << mix.status();
    config->faults = *mix;
    registry_ = std::make_shared<prometheus::Registry>();
    std::vector<std::unique_ptr<ProviderApi>> apis;
    apis.push_back(std::make_unique<OpenAiApi>(config));
    options.port = 0;
    auto server = SimServer::Start(options, std::move(apis), registry_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  HttpResponse Exchange(const std::string& request) {
    RawConnection connection(server_->port());
    EXPECT_TRUE(connection.connected());
    EXPECT_FALSE(connection.Send(request));
    return connection.Read();
  }

  HttpResponse Chat(const std::string& message, bool stream, std::vector<std::string> headers = {},
                    bool include_usage = false) {
    return Exchange(ChatRequestBytes(ChatBody(message, stream, include_usage), headers));
  }

  double MetricValue(const std::string& name, const std::map<std::string, std::string>& labels) {
    for (const auto& family : registry_->Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) {
        bool match = true;
        for (const auto& [key, value] : labels) {
          bool found = false;
          for (const auto& label : metric.label) found |= label.name == key && label.value == value;
          match &= found;
        }
        if (match) return metric.counter.value + metric.gauge.value;
      }
    }
    return 0;
  }

  // Polls a metric until it equals `want` or 10 s pass.
  bool WaitForMetric(const std::string& name, double want) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      if (MetricValue(name, {}) == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<SimServer> server_;
};

std::string Content(const std::vector<std::string>& events) {
  std::string content;
  for (const auto& data : events) {
    if (data == "[DONE]") continue;
    json chunk = json::parse(data);
    if (!chunk.contains("choices")) continue;
    for (const auto& choice : chunk["choices"]) {
      const auto& delta = choice["delta"];
      if (delta.contains("content") && delta["content"].is_string()) {
        content += delta["content"].get<std::string>();
      }
    }
  }
  return content;
}

TEST_F(SimServerTest, NonStreamingAnswerHasTheChatCompletionShape) {
  HttpResponse r = Chat("Hello, consciousness system!", /*stream=*/false);
  ASSERT_TRUE(r.complete) << r.error.message();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_EQ(r.Header("content-length"), std::to_string(r.body.size()));
  EXPECT_EQ(r.Header("x-request-id").rfind("req_", 0), 0u);
  EXPECT_FALSE(r.Header("openai-processing-ms").empty());
  EXPECT_FALSE(r.Header("x-ratelimit-remaining-requests").empty());

  auto body = nlohmann::ordered_json::parse(r.body);
  std::vector<std::string> keys;
  for (const auto& item : body.items()) keys.push_back(item.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"id", "object", "created", "model", "choices", "usage",
                                            "service_tier", "system_fingerprint"}));
  EXPECT_EQ(body["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["model"], "gpt-4o-mini");
  ASSERT_EQ(body["choices"].size(), 1u);
  const auto& choice = body["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_EQ(choice["message"]["content"], "Hello! I am Anima, and I am listening.");
  EXPECT_TRUE(choice["message"]["refusal"].is_null());
  EXPECT_EQ(choice["finish_reason"], "stop");
  // "You are terse." + "Hello, consciousness system!" = 6 words; the reply has 8 pieces.
  EXPECT_EQ(body["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(body["usage"]["completion_tokens"], 8);
  EXPECT_EQ(body["usage"]["total_tokens"], 14);
}

TEST_F(SimServerTest, StreamWithUsageFollowsTheRecordedEventSequence) {
  HttpResponse r = Chat("count to three", /*stream=*/true, {}, /*include_usage=*/true);
  ASSERT_TRUE(r.complete) << r.error.message();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("content-type").rfind("text/event-stream", 0), 0u);
  EXPECT_EQ(r.Header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.Header("content-length"), "");

  std::vector<std::string> events = SseEvents(r.body);
  // role, "one", " two", " three", finish, usage, [DONE]
  ASSERT_EQ(events.size(), 7u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  std::vector<json> chunks;
  for (size_t i = 0; i + 1 < events.size(); ++i) chunks.push_back(json::parse(events[i]));
  for (const auto& chunk : chunks) {
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["id"], chunks[0]["id"]);
    EXPECT_EQ(chunk["created"], chunks[0]["created"]);
    EXPECT_EQ(chunk["model"], "gpt-4o-mini");
    EXPECT_TRUE(chunk.contains("obfuscation"));
  }
  EXPECT_EQ(chunks[0]["choices"][0]["delta"],
            json::parse(R"({"role":"assistant","content":"","refusal":null})"));
  EXPECT_EQ(chunks[1]["choices"][0]["delta"], json::parse(R"({"content":"one"})"));
  EXPECT_EQ(chunks[2]["choices"][0]["delta"], json::parse(R"({"content":" two"})"));
  EXPECT_EQ(chunks[3]["choices"][0]["delta"], json::parse(R"({"content":" three"})"));
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_TRUE(chunks[i]["choices"][0]["finish_reason"].is_null());
    EXPECT_TRUE(chunks[i]["usage"].is_null());
  }
  EXPECT_EQ(chunks[4]["choices"][0]["delta"], json::object());
  EXPECT_EQ(chunks[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(chunks[4]["usage"].is_null());
  EXPECT_EQ(chunks[5]["choices"], json::array());
  EXPECT_EQ(chunks[5]["usage"]["prompt_tokens"], 6);
  EXPECT_EQ(chunks[5]["usage"]["completion_tokens"], 3);
  EXPECT_EQ(chunks[5]["usage"]["total_tokens"], 9);
  // Byte layout: "data: " + compact JSON + blank line.
  EXPECT_EQ(r.body.rfind("data: {\"id\":\"chatcmpl-", 0), 0u);
  EXPECT_NE(r.body.find("}\n\ndata: "), std::string::npos);
  EXPECT_EQ(r.body.substr(r.body.size() - 14), "data: [DONE]\n\n");
}

TEST_F(SimServerTest, StreamWithoutUsageHasNoUsageChunkOrField) {
  HttpResponse r = Chat("count to three", /*stream=*/true);
  ASSERT_TRUE(r.complete);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[5], "[DONE]");
  json finish = json::parse(events[4]);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "stop");
  for (size_t i = 0; i < 5; ++i) EXPECT_FALSE(json::parse(events[i]).contains("usage"));
  EXPECT_EQ(Content(events), "one two three");
}

struct ErrorCase {
  std::string scenario;
  int status;
  std::string type;
  std::string code;  // "" for null
  bool retry_after;
};

class SimServerErrorTest : public SimServerTest, public ::testing::WithParamInterface<ErrorCase> {};

TEST_P(SimServerErrorTest, ScenarioAnswersWithOpenAiErrorShape) {
  const ErrorCase& c = GetParam();
  for (bool stream : {false, true}) {
    HttpResponse r = Chat("anything", stream, {"x-sim-scenario: " + c.scenario});
    ASSERT_TRUE(r.complete);
    EXPECT_EQ(r.status, c.status);
    EXPECT_EQ(r.Header("content-type"), "application/json");
    EXPECT_EQ(r.Header("x-request-id").rfind("req_", 0), 0u);
    json body = json::parse(r.body);
    ASSERT_TRUE(body["error"].is_object()) << r.body;
    EXPECT_EQ(body["error"]["type"], c.type);
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"].contains("param"));
    if (c.code.empty()) {
      EXPECT_TRUE(body["error"]["code"].is_null());
    } else {
      EXPECT_EQ(body["error"]["code"], c.code);
    }
    if (c.retry_after) {
      EXPECT_EQ(r.Header("retry-after"), "1");
      EXPECT_EQ(r.Header("retry-after-ms"), "800");
    } else {
      EXPECT_EQ(r.Header("retry-after"), "");
      EXPECT_EQ(r.Header("retry-after-ms"), "");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllErrors, SimServerErrorTest,
    ::testing::Values(
        ErrorCase{"error_400", 400, "invalid_request_error", "unsupported_parameter", false},
        ErrorCase{"error_401", 401, "invalid_request_error", "invalid_api_key", false},
        ErrorCase{"error_403", 403, "request_forbidden", "unsupported_country_region_territory",
                  false},
        ErrorCase{"error_404_model", 404, "invalid_request_error", "model_not_found", false},
        ErrorCase{"rate_limit_429", 429, "tokens", "rate_limit_exceeded", true},
        ErrorCase{"rate_limit_429_no_header", 429, "tokens", "rate_limit_exceeded", false},
        ErrorCase{"quota_429", 429, "insufficient_quota", "insufficient_quota", false},
        ErrorCase{"error_500", 500, "server_error", "", false},
        ErrorCase{"error_503", 503, "server_error", "", false}),
    [](const auto& info) { return info.param.scenario; });

TEST_F(SimServerTest, ErrorBodiesCarryTheRecordedMessages) {
  json rate = json::parse(Chat("x", false, {"x-sim-scenario: rate_limit_429"}).body);
  EXPECT_EQ(rate["error"]["message"],
            "Rate limit reached for gpt-4o-mini in organization org-XXXX on tokens per min (TPM): "
            "Limit 200000, Used 195869, Requested 4412. Please try again in 84ms. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.");
  HttpResponse r401 = Chat("x", false, {"x-sim-scenario: error_401"});
  EXPECT_EQ(json::parse(r401.body)["error"]["message"].get<std::string>().rfind(
                "Incorrect API key provided: sk-*", 0),
            0u);
  json model = json::parse(Chat("x", false, {"x-sim-scenario: error_404_model"}).body);
  EXPECT_EQ(model["error"]["message"],
            "The model `gpt-4o-mini` does not exist or you do not have access to it.");
  HttpResponse r503 = Chat("x", false, {"x-sim-scenario: error_503"});
  EXPECT_NE(json::parse(r503.body)["error"]["message"].get<std::string>().find(
                r503.Header("x-request-id")),
            std::string::npos);
}

TEST_F(SimServerTest, MissingKeyGets401UnlessNotRequired) {
  HttpResponse r = Exchange(ChatRequestBytes(ChatBody("hi", false), {}, /*with_key=*/false));
  EXPECT_EQ(r.status, 401);
  json body = json::parse(r.body);
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["message"].get<std::string>().rfind("You didn't provide an API key.", 0),
            0u);

  StartServer(SimServerOptions{}, /*require_key=*/false);
  EXPECT_EQ(Exchange(ChatRequestBytes(ChatBody("hi", false), {}, false)).status, 200);
}

TEST_F(SimServerTest, InvalidBodiesGet400InvalidRequestError) {
  struct Case {
    std::string body;
    std::string param;  // "" for null
  };
  for (const Case& c : std::vector<Case>{
           {"{not json", ""},
           {R"({"messages":[{"role":"user","content":"hi"}]})", ""},
           {R"({"model":"gpt-4o-mini"})", "messages"},
           {R"({"model":"gpt-4o-mini","messages":[]})", "messages"},
           {R"({"model":"gpt-4o-mini","messages":[{"content":"hi"}]})", "messages[0].role"}}) {
    HttpResponse r = Exchange(ChatRequestBytes(c.body, {}));
    EXPECT_EQ(r.status, 400) << c.body;
    json body = json::parse(r.body);
    EXPECT_EQ(body["error"]["type"], "invalid_request_error") << c.body;
    if (c.param.empty()) {
      EXPECT_TRUE(body["error"]["param"].is_null()) << c.body;
    } else {
      EXPECT_EQ(body["error"]["param"], c.param) << c.body;
    }
  }
}

TEST_F(SimServerTest, UnknownPathAndUnknownScenario) {
  HttpResponse r = Exchange("GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["message"], "Invalid URL (GET /v1/nothing)");

  HttpResponse bad = Chat("hi", false, {"x-sim-scenario: no_such_thing"});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(json::parse(bad.body)["error"]["message"].get<std::string>().find("no_such_thing"),
            std::string::npos);
}

TEST_F(SimServerTest, RulesPickTheReplyAndDefaultQuotesThePrompt) {
  EXPECT_EQ(json::parse(Chat("COUNT TO THREE", false).body)["choices"][0]["message"]["content"],
            "one two three");
  EXPECT_EQ(json::parse(Chat("what is 6 x 7?", false).body)["choices"][0]["message"]["content"],
            "Echo of what is 6 x 7? from gpt-4o-mini");
  // A rule can also choose an error.
  EXPECT_EQ(Chat("please fail now", false).status, 429);
  // The header wins over the rule.
  EXPECT_EQ(Chat("please fail now", false, {"x-sim-scenario: ok"}).status, 200);
}

TEST_F(SimServerTest, ToolCallRuleStreamsArgumentsInFragments) {
  HttpResponse r = Chat("what is the weather?", true);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_GE(events.size(), 4u);
  json first = json::parse(events[0]);
  const auto& call = first["choices"][0]["delta"]["tool_calls"][0];
  EXPECT_EQ(call["index"], 0);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_TRUE(first["choices"][0]["delta"]["content"].is_null());
  std::string arguments;
  for (size_t i = 1; i + 2 < events.size(); ++i) {
    arguments +=
        json::parse(events[i])["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
            .get<std::string>();
  }
  EXPECT_EQ(json::parse(arguments), json::parse(R"({"location":"Boston"})"));
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(SimServerTest, MaxCompletionTokensCutsTheReplyWithFinishLength) {
  std::string body =
      R"({"model":"m","max_completion_tokens":2,"messages":[{"role":"user","content":"count to three"}]})";
  json r = json::parse(Exchange(ChatRequestBytes(body, {})).body);
  EXPECT_EQ(r["choices"][0]["message"]["content"], "one two");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 2);
}

TEST_F(SimServerTest, KeepAliveServesTwoRequestsOnOneConnection) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(ChatRequestBytes(ChatBody("count to three", true), {})));
  HttpResponse first = connection.Read();
  ASSERT_TRUE(first.complete);
  EXPECT_EQ(Content(SseEvents(first.body)), "one two three");
  ASSERT_FALSE(
      connection.Send(ChatRequestBytes(ChatBody("Hello, consciousness system!", false), {})));
  HttpResponse second = connection.Read();
  ASSERT_TRUE(second.complete);
  EXPECT_EQ(second.status, 200);
  EXPECT_EQ(second.Header("connection"), "");
}

TEST_F(SimServerTest, ConnectionCloseIsHonoured) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(ChatRequestBytes(ChatBody("hi", false), {"Connection: close"})));
  HttpResponse r = connection.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("connection"), "close");
  EXPECT_TRUE(connection.WaitForClose(std::chrono::seconds(10)));
}

class SimServerStressorTest : public SimServerTest,
                              public ::testing::WithParamInterface<std::string> {};

TEST_P(SimServerStressorTest, FramingStressorKeepsTheContent) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(ChatRequestBytes(
      R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Grüß Gott, こんにちは, 👋 and more words to split"}]})",
      {"x-sim-scenario: " + GetParam(), "Connection: close"})));
  std::string raw = connection.ReadAllRaw();
  size_t head_end = raw.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  bool terminated = false;
  std::vector<std::string> chunks = testing::DecodeChunks(raw.substr(head_end + 4), &terminated);
  EXPECT_TRUE(terminated);
  // Feed the SSE reader exactly as the chunks arrived, as a client's reads would.
  testing::SseReader reader;
  for (const auto& chunk : chunks) reader.Feed(chunk);
  const auto& events = reader.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(Content(events), "Echo of Grüß Gott, こんにちは, 👋 and more words to split from m");
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"], 13);

  std::string scenario = GetParam();
  std::string body;
  for (const auto& chunk : chunks) body += chunk;
  if (scenario.find("split_bytes") != std::string::npos ||
      scenario.find("byte_by_byte") != std::string::npos) {
    EXPECT_GT(chunks.size(), 10 * events.size());
    for (const auto& chunk : chunks) EXPECT_LE(chunk.size(), 12u);
  }
  if (scenario.find("crlf") != std::string::npos) {
    EXPECT_NE(body.find("}\r\n\r\n"), std::string::npos);
    EXPECT_EQ(body.find("}\n\n"), std::string::npos);
  }
  if (scenario.find("comments") != std::string::npos) {
    EXPECT_NE(body.find(": keep-alive"), std::string::npos);
  }
  if (scenario.find("nospace") != std::string::npos) {
    EXPECT_EQ(body.find("data: "), std::string::npos);
  }
  if (scenario.find("multi") != std::string::npos) {
    EXPECT_LT(chunks.size(), events.size());
  }
}

INSTANTIATE_TEST_SUITE_P(Stressors, SimServerStressorTest,
                         ::testing::Values("ok", "crlf", "split_bytes", "crlf,split_bytes",
                                           "byte_by_byte,crlf", "comments,nospace", "multi",
                                           "multi,comments,crlf", "fields"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == ',' ? '_' : c;
                           return name;
                         });

TEST_F(SimServerTest, MidstreamErrorSendsContentThenErrorAndNoDone) {
  HttpResponse r = Chat("count to three", true, {"x-sim-scenario: midstream_error"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("connection"), "");  // the close is a surprise
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;  // role, "one", " two", error
  EXPECT_EQ(Content({events[0], events[1], events[2]}), "one two");
  EXPECT_EQ(
      events[3],
      R"({"error": {"message": "The server had an error while processing your request. Sorry about that!", "type": "server_error"}})");
}

TEST_F(SimServerTest, MalformedEventSendsContentThenCutJsonAndCloses) {
  HttpResponse r = Chat("count to three", true, {"x-sim-scenario: malformed_event"});
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.complete) << "the chunked body ends properly; only the event is broken";
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  std::vector<std::string> events = SseEvents(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;  // role, "one", " two", the broken one
  EXPECT_EQ(Content({events[0], events[1], events[2]}), "one two");
  EXPECT_TRUE(json::parse(events[3], nullptr, false).is_discarded()) << events[3];
  EXPECT_EQ(events[3].rfind("{\"id\":\"chatcmpl-", 0), 0u) << events[3];
}

TEST_F(SimServerTest, AFaultStormDrawsItsShareAndSparesRequestsThatNameAScenario) {
  StartServer(SimServerOptions{}, true, "openai=error_500:0.5,truncated:0.25");
  std::map<int, int> statuses;
  int truncated = 0;
  constexpr int kRequests = 400;
  for (int i = 0; i < kRequests; ++i) {
    HttpResponse r = Chat("count to three", false);
    statuses[r.status]++;
    if (r.status == 200 && !r.complete) truncated++;
  }
  // 50% / 25% / 25% of 400: each count within +-60 of its mean (over 5 standard deviations).
  EXPECT_NEAR(statuses[500], 200, 60);
  EXPECT_NEAR(truncated, 100, 60);
  EXPECT_NEAR(statuses[200] - truncated, 100, 60);
  EXPECT_EQ(statuses[500] + statuses[200], kRequests);
  EXPECT_EQ(MetricValue("anima_sim_requests_total", {{"scenario", "error_500"}}), statuses[500]);
  // A request that names its scenario is not part of the storm.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Chat("count to three", false, {"x-sim-scenario: ok"}).status, 200);
  }
}

TEST_F(SimServerTest, TruncatedStreamClosesMidJsonWithoutTerminator) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(
      ChatRequestBytes(ChatBody("count to three", true), {"x-sim-scenario: truncated"})));
  HttpResponse r = connection.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_TRUE(r.error) << "the parser must see the stream cut short";
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  // Whole events for the role and two words, then a piece of the next event's JSON.
  std::vector<std::string> events = SseEvents(r.body);
  EXPECT_EQ(events.size(), 3u);
  size_t tail = r.body.rfind("\n\n");
  ASSERT_NE(tail, std::string::npos);
  std::string fragment = r.body.substr(tail + 2);
  EXPECT_EQ(fragment.rfind("data: {\"id\":", 0), 0u) << fragment;
  EXPECT_TRUE(json::parse(fragment.substr(6), nullptr, false).is_discarded());
}

TEST_F(SimServerTest, OversizedBodyGets413) {
  SimServerOptions options;
  options.max_body_bytes = 4096;
  StartServer(options);
  std::string big(8192, 'a');
  HttpResponse r = Exchange(ChatRequestBytes(ChatBody(big, false), {}));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(json::parse(r.body)["error"]["type"], "invalid_request_error");
}

TEST_F(SimServerTest, ModelsHealthAndMetrics) {
  HttpResponse models =
      Exchange("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n\r\n");
  EXPECT_EQ(models.status, 200);
  json list = json::parse(models.body);
  EXPECT_EQ(list["object"], "list");
  ASSERT_EQ(list["data"].size(), 2u);
  EXPECT_EQ(list["data"][0]["id"], "gpt-4o-mini");
  EXPECT_EQ(list["data"][0]["object"], "model");

  HttpResponse health = Exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  Chat("x", false, {"x-sim-scenario: quota_429"});
  EXPECT_EQ(
      MetricValue("anima_sim_requests_total",
                  {{"route", "chat_completions"}, {"scenario", "quota_429"}, {"status", "429"}}),
      1);
  EXPECT_EQ(MetricValue("anima_sim_requests_total",
                        {{"route", "models"}, {"scenario", "ok"}, {"status", "200"}}),
            1);
}

TEST_F(SimServerTest, ClientClosingASlowStreamCountsAsCancelled) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(
      ChatRequestBytes(ChatBody("count to three", true),
                       {"x-sim-first-token-ms: 60000", "x-sim-token-interval-ms: 60000"})));
  ASSERT_TRUE(WaitForMetric("anima_sim_active_streams", 1));
  connection.Close();
  EXPECT_TRUE(WaitForMetric("anima_sim_streams_cancelled_total", 1));
  EXPECT_TRUE(WaitForMetric("anima_sim_active_streams", 0));
}

TEST_F(SimServerTest, IdleKeepAliveConnectionsAreClosedWhenAsked) {
  SimServerOptions options;
  options.idle_close_seconds = 1;
  StartServer(options);
  RawConnection connection(server_->port());
  ASSERT_FALSE(connection.Send(ChatRequestBytes(ChatBody("hi", false), {})));
  EXPECT_EQ(connection.Read().status, 200);
  EXPECT_TRUE(connection.WaitForClose(std::chrono::seconds(10)));
}

TEST_F(SimServerTest, CloseAfterDropsTheConnectionWithoutAnnouncingIt) {
  RawConnection connection(server_->port());
  ASSERT_FALSE(
      connection.Send(ChatRequestBytes(ChatBody("hi", false), {"x-sim-scenario: close_after"})));
  HttpResponse r = connection.Read();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("connection"), "");
  EXPECT_TRUE(connection.WaitForClose(std::chrono::seconds(10)));
}

}  // namespace
}  // namespace anima::sim
