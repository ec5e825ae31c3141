#include "services/llm_broker/openai_provider.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/openai_wire.h"
#include "tests/unit/llm_broker/openai_fixtures.h"

namespace anima::broker {
namespace {

using nlohmann::json;

// Records the request; the test then plays the server's part through the handler.
class FakeTransport : public HttpTransport {
 public:
  class Exchange : public HttpExchange {
   public:
    void Cancel() override { cancelled = true; }
    bool cancelled = false;
  };
  std::shared_ptr<HttpExchange> Send(HttpRequest request, HttpHandler handler) override {
    last_request = std::move(request);
    this->handler = std::move(handler);
    exchange = std::make_shared<Exchange>();
    return exchange;
  }
  void Respond(int status, std::vector<std::pair<std::string, std::string>> headers,
               const std::vector<std::string>& pieces, absl::Status end = absl::OkStatus()) {
    HttpResponseHead head;
    head.status = status;
    head.headers = std::move(headers);
    handler.on_head(head);
    for (const auto& p : pieces) handler.on_body(p);
    handler.on_complete(end);
  }
  std::optional<HttpRequest> last_request;
  HttpHandler handler;
  std::shared_ptr<Exchange> exchange;
};

struct Recorder {
  std::vector<std::string> deltas;
  std::optional<ProviderOutcome> outcome;
  int done_calls = 0;
  ProviderSink Sink() {
    ProviderSink sink;
    sink.on_delta = [this](std::string_view d) { deltas.emplace_back(d); };
    sink.on_done = [this](ProviderOutcome o) {
      outcome = std::move(o);
      ++done_calls;
    };
    return sink;
  }
  const ChatResult& result() { return std::get<ChatResult>(*outcome); }
  const ProviderError& error() { return std::get<ProviderError>(*outcome); }
};

class OpenAiProviderTest : public ::testing::Test {
 protected:
  OpenAiProviderTest() {
    OpenAiProviderOptions options;
    options.base_url = "https://api.example.test/v1/";
    options.api_key = "sk-test-key";
    options.models = {"gpt-4o-mini"};
    provider_ = std::make_unique<OpenAiProvider>(options, transport_);
    request_.request_id = "r-0123";
    request_.model = "gpt-4o-mini";
    request_.messages = {{"user", "Hello!"}};
  }
  std::shared_ptr<FakeTransport> transport_ = std::make_shared<FakeTransport>();
  std::unique_ptr<OpenAiProvider> provider_;
  ChatRequest request_;
  Recorder rec_;
};

const std::vector<std::pair<std::string, std::string>> kSse = {
    {"Content-Type", "text/event-stream; charset=utf-8"}};
const std::vector<std::pair<std::string, std::string>> kJson = {
    {"Content-Type", "application/json"}};

TEST_F(OpenAiProviderTest, RequestCarriesOnlySetFieldsAndTheHeaders) {
  request_.system = "You are terse.";
  request_.stream = true;
  provider_->Start(request_, rec_.Sink());
  ASSERT_TRUE(transport_->last_request.has_value());
  const HttpRequest& http = *transport_->last_request;
  EXPECT_EQ(http.url, "https://api.example.test/v1/chat/completions");
  auto header = [&](const std::string& name) {
    for (const auto& [k, v] : http.headers) {
      if (k == name) return v;
    }
    return std::string("<missing>");
  };
  EXPECT_EQ(header("Authorization"), "Bearer sk-test-key");
  EXPECT_EQ(header("X-Client-Request-Id"), "r-0123");
  EXPECT_EQ(header("Accept-Encoding"), "identity");
  json body = json::parse(http.body);
  EXPECT_EQ(body["model"], "gpt-4o-mini");
  EXPECT_EQ(body["messages"][0]["role"], "system");
  EXPECT_EQ(body["messages"][1]["content"], "Hello!");
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
  EXPECT_FALSE(body.contains("temperature"));
  EXPECT_FALSE(body.contains("max_completion_tokens"));
  EXPECT_FALSE(body.contains("max_tokens"));
  EXPECT_EQ(http.body.find("null"), std::string::npos);
}

TEST_F(OpenAiProviderTest, NonStreamingRequestHasNoStreamFields) {
  request_.temperature = 0.5;
  request_.max_tokens = 64;
  provider_->Start(request_, rec_.Sink());
  json body = json::parse(transport_->last_request->body);
  EXPECT_FALSE(body.contains("stream"));
  EXPECT_FALSE(body.contains("stream_options"));
  EXPECT_EQ(body["temperature"], 0.5);
  EXPECT_EQ(body["max_completion_tokens"], 64);
}

TEST_F(OpenAiProviderTest, ParsesTheNonStreamingResponse) {
  provider_->Start(request_, rec_.Sink());
  transport_->Respond(200, kJson, {testing::kOkResponse});
  ASSERT_EQ(rec_.done_calls, 1);
  EXPECT_EQ(rec_.result().text, "Hello! How can I assist you today?");
  EXPECT_EQ(rec_.result().finish_reason, "stop");
  EXPECT_EQ(rec_.result().model, "gpt-4o-mini-2024-07-18");
  EXPECT_EQ(rec_.result().provider, "openai");
  ASSERT_TRUE(rec_.result().usage.has_value());
  EXPECT_EQ(rec_.result().usage->total_tokens, 29);
}

TEST_F(OpenAiProviderTest, StreamsTheRecordedStreamInAnySplit) {
  const std::string stream = testing::kRecordedStream;
  for (size_t cut : {size_t{1}, size_t{7}, size_t{300}, stream.size() - 3}) {
    Recorder rec;
    request_.stream = true;
    provider_->Start(request_, rec.Sink());
    transport_->Respond(200, kSse, {stream.substr(0, cut), stream.substr(cut)});
    ASSERT_EQ(rec.done_calls, 1);
    EXPECT_EQ(rec.deltas, (std::vector<std::string>{"Hi", ",", " how are you?"}));
    EXPECT_EQ(rec.result().text, "Hi, how are you?");
    EXPECT_EQ(rec.result().finish_reason, "stop");
    ASSERT_TRUE(rec.result().usage.has_value());  // from the usage chunk with choices: []
    EXPECT_EQ(rec.result().usage->prompt_tokens, 10);
    EXPECT_EQ(rec.result().usage->completion_tokens, 5);
  }
}

TEST_F(OpenAiProviderTest, MidStreamErrorIsAnErrorNotASuccess) {
  request_.stream = true;
  provider_->Start(request_, rec_.Sink());
  transport_->Respond(200, kSse, {testing::kMidStreamError});
  ASSERT_EQ(rec_.done_calls, 1);
  EXPECT_EQ(rec_.deltas, (std::vector<std::string>{"Hel", "lo"}));
  EXPECT_EQ(rec_.error().code, "stream_error");
  EXPECT_NE(rec_.error().message.find("server had an error"), std::string::npos);
  EXPECT_TRUE(transport_->exchange->cancelled);  // the connection is dropped
}

TEST_F(OpenAiProviderTest, AStreamedAnswerOverTheBodyBoundFails) {
  OpenAiProviderOptions options;
  options.base_url = "https://api.example.test/v1/";
  options.models = {"gpt-4o-mini"};
  options.max_body_bytes = 10;
  OpenAiProvider small(options, transport_);
  request_.stream = true;
  small.Start(request_, rec_.Sink());
  std::string chunk =
      R"(data: {"choices":[{"index":0,"delta":{"content":"123456"},"finish_reason":null}]})"
      "\n\n";
  transport_->Respond(200, kSse, {chunk, chunk, chunk});
  ASSERT_EQ(rec_.done_calls, 1);
  EXPECT_EQ(rec_.deltas, (std::vector<std::string>{"123456"})) << "the second would pass 10";
  EXPECT_EQ(rec_.error().code, "invalid_response");
  EXPECT_FALSE(rec_.error().retryable);
}

TEST_F(OpenAiProviderTest, EndOfBodyWithoutDoneIsIncomplete) {
  request_.stream = true;
  provider_->Start(request_, rec_.Sink());
  std::string stream = testing::kRecordedStream;
  stream.resize(stream.find("data: [DONE]"));
  transport_->Respond(200, kSse, {stream});
  EXPECT_EQ(rec_.error().code, "incomplete_stream");
  EXPECT_TRUE(rec_.error().retryable);
}

TEST_F(OpenAiProviderTest, TruncatedConnectionIsIncomplete) {
  request_.stream = true;
  provider_->Start(request_, rec_.Sink());
  transport_->Respond(200, kSse,
                      {"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"ch"},
                      absl::UnavailableError("partial message"));
  EXPECT_EQ(rec_.error().code, "incomplete_stream");
}

TEST_F(OpenAiProviderTest, HttpErrorsAreNormalised) {
  struct Case {
    int status;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    bool retryable;
    std::optional<int64_t> retry_after_ms;
  };
  std::vector<Case> cases = {
      {401, testing::k401Body, kJson, false, std::nullopt},
      {400, "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\"}}", kJson, false,
       std::nullopt},
      {403, "{}", kJson, false, std::nullopt},
      {404, "{\"error\":\"model not found\"}", kJson, false, std::nullopt},
      {429, testing::k429Body, {{"Retry-After", "1"}, {"retry-after-ms", "800"}}, true, 800},
      {429, testing::k429Body, {{"Retry-After", "2"}}, true, 2000},
      {429, testing::k429Body, kJson, true, 84},  // "Please try again in 84ms."
      {429, testing::k429QuotaBody, kJson, false, std::nullopt},
      {500, testing::k500Body, kJson, true, std::nullopt},
      {503,
       "<html>Service Unavailable</html>",
       {{"Content-Type", "text/html"}},
       true,
       std::nullopt},
  };
  for (const auto& c : cases) {
    Recorder rec;
    provider_->Start(request_, rec.Sink());
    transport_->Respond(c.status, c.headers, {c.body});
    ASSERT_EQ(rec.done_calls, 1);
    const ProviderError& e = rec.error();
    EXPECT_EQ(e.http_status, c.status);
    EXPECT_EQ(e.retryable, c.retryable) << c.status << " " << c.body;
    EXPECT_FALSE(e.message.empty());
    if (c.retry_after_ms) {
      ASSERT_TRUE(e.retry_after.has_value());
      EXPECT_EQ(e.retry_after->count(), *c.retry_after_ms);
    } else {
      EXPECT_FALSE(e.retry_after.has_value());
    }
  }
}

TEST_F(OpenAiProviderTest, CancelReportsCancelled) {
  request_.stream = true;
  auto call = provider_->Start(request_, rec_.Sink());
  call->Cancel();
  EXPECT_TRUE(transport_->exchange->cancelled);
  transport_->handler.on_complete(absl::CancelledError("cancelled"));
  EXPECT_EQ(rec_.error().code, "cancelled");
}

TEST_F(OpenAiProviderTest, ConnectFailureIsRetryable) {
  provider_->Start(request_, rec_.Sink());
  transport_->handler.on_complete(absl::UnavailableError("connect: refused"));
  EXPECT_EQ(rec_.error().code, "connect");
  EXPECT_TRUE(rec_.error().retryable);
}

TEST(OpenAiWireTest, ChunksAreParsedDefensively) {
  auto no_choices = openai::ParseChunk("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}");
  ASSERT_TRUE(std::holds_alternative<openai::StreamChunk>(no_choices));
  EXPECT_EQ(std::get<openai::StreamChunk>(no_choices).usage->total_tokens, 3);
  auto string_error = openai::ParseChunk("{\"error\":\"overloaded\"}");
  ASSERT_TRUE(std::holds_alternative<ProviderError>(string_error));
  EXPECT_EQ(std::get<ProviderError>(string_error).message, "overloaded");
  EXPECT_TRUE(std::holds_alternative<ProviderError>(openai::ParseChunk("[1,2]")));
  EXPECT_TRUE(std::holds_alternative<ProviderError>(openai::ParseChunk("{\"choices\":")));
  auto nulls = openai::ParseChunk(
      "{\"choices\":[{\"delta\":{\"content\":null},\"finish_reason\":null}],\"usage\":null}");
  ASSERT_TRUE(std::holds_alternative<openai::StreamChunk>(nulls));
  EXPECT_FALSE(std::get<openai::StreamChunk>(nulls).usage.has_value());
  EXPECT_TRUE(openai::IsDone("[DONE]"));
  EXPECT_FALSE(openai::IsDone("{}"));
}

TEST(OpenAiWireTest, FinishReasonsAreNormalised) {
  EXPECT_EQ(NormalizeFinishReason("stop"), "stop");
  EXPECT_EQ(NormalizeFinishReason("length"), "length");
  EXPECT_EQ(NormalizeFinishReason("content_filter"), "content_filter");
  EXPECT_EQ(NormalizeFinishReason("tool_calls"), "tool_calls");
  EXPECT_EQ(NormalizeFinishReason("function_call"), "tool_calls");
  EXPECT_EQ(NormalizeFinishReason("SAFETY"), "content_filter");
  EXPECT_EQ(NormalizeFinishReason("something_new"), "other");
}

}  // namespace
}  // namespace anima::broker
