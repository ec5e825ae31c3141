// The Venice and Gemini providers against the real simulator binary (anima-llm-sim), streaming
// and not, under its scenarios and framing stressors; and the broker binary answering requests
// with "provider": "venice" / "gemini". Skipped when the simulator has not been built.
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "services/llm_broker/gemini_provider.h"
#include "services/llm_broker/http_client.h"
#include "services/llm_broker/openai_provider.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"
#include "tests/unit/llm_broker/recorded_call.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;
namespace v1 = anima::v1;
using anima::broker::testing::CallAndWait;
using anima::broker::testing::RecordedCall;
using anima::testing::BinDir;
using anima::testing::Process;
using anima::testing::System;

constexpr char kPrompt[] = "Tell me something about the sky and the sea please";

class ProviderSimTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    if (!std::filesystem::exists(BinDir() + "/anima-llm-sim")) return;
    system_->StartSim({"--first-token-ms=0", "--token-interval-ms=0", "--latency-ms=0"});
  }
  static void TearDownTestSuite() { system_.reset(); }
  void SetUp() override {
    if (system_->sim() == nullptr) GTEST_SKIP() << "anima-llm-sim is not built";
    client_ = *HttpClient::Create({});
  }

 public:
  std::string Origin() const {
    return "http://127.0.0.1:" + std::to_string(system_->sim()->port("http"));
  }

  std::shared_ptr<Provider> Venice(const std::string& scenario, std::string key = "sim-key") {
    OpenAiProviderOptions options;
    options.name = "venice";
    options.venice = true;
    options.base_url = Origin() + "/api/v1";
    options.api_key = std::move(key);
    options.default_model = "venice-uncensored";
    if (!scenario.empty()) options.extra_headers = {{"x-sim-scenario", scenario}};
    return std::make_shared<OpenAiProvider>(options, client_);
  }

  std::shared_ptr<Provider> Gemini(const std::string& scenario, std::string key = "sim-key") {
    GeminiProviderOptions options;
    options.base_url = Origin() + "/v1beta";
    options.api_key = std::move(key);
    if (!scenario.empty()) options.extra_headers = {{"x-sim-scenario", scenario}};
    return std::make_shared<GeminiProvider>(options, client_);
  }

  RecordedCall Call(Provider& provider, bool stream, const std::string& system = "") {
    ChatRequest request;
    request.request_id = "r-sim";
    request.model = provider.default_model();
    request.system = system;
    request.messages = {{"user", kPrompt}, {"assistant", "Sure."}, {"user", kPrompt}};
    request.stream = stream;
    RecordedCall out = CallAndWait(provider, request);
    EXPECT_TRUE(out.outcome.has_value());
    return out;
  }

  static inline std::unique_ptr<System> system_;
  std::shared_ptr<HttpClient> client_;
};

ChatResult ResultOf(const RecordedCall& out) {
  ChatResult empty;
  if (!out.outcome || !std::holds_alternative<ChatResult>(*out.outcome)) {
    ADD_FAILURE() << "not a result: "
                  << (out.outcome ? std::get<ProviderError>(*out.outcome).code : "none");
    return empty;
  }
  return std::get<ChatResult>(*out.outcome);
}

ProviderError ErrorOf(const RecordedCall& out) {
  ProviderError empty;
  if (!out.outcome || !std::holds_alternative<ProviderError>(*out.outcome)) {
    ADD_FAILURE() << "not an error";
    return empty;
  }
  return std::get<ProviderError>(*out.outcome);
}

TEST_F(ProviderSimTest, VeniceAnswersInBothModesUnderEveryStressor) {
  RecordedCall whole = Call(*Venice(""), false, "be terse");
  ChatResult w = ResultOf(whole);
  ASSERT_FALSE(w.text.empty());
  EXPECT_EQ(w.provider, "venice");
  EXPECT_EQ(w.finish_reason, "stop");
  ASSERT_TRUE(w.usage.has_value());
  EXPECT_EQ(w.usage->total_tokens, w.usage->prompt_tokens + w.usage->completion_tokens);
  for (const std::string scenario :
       {"ok", "split_bytes", "byte_by_byte", "crlf,comments,nospace,fields", "multi"}) {
    RecordedCall out = Call(*Venice(scenario), true, "be terse");
    ChatResult r = ResultOf(out);
    EXPECT_EQ(r.text, w.text) << scenario;
    EXPECT_EQ(out.Joined(), w.text) << scenario;
    ASSERT_TRUE(r.usage.has_value()) << scenario;
    EXPECT_EQ(r.usage->completion_tokens, w.usage->completion_tokens) << scenario;
  }
  EXPECT_EQ(ResultOf(Call(*Venice("length"), true)).finish_reason, "length");
}

TEST_F(ProviderSimTest, VeniceErrorsAreNormalised) {
  struct Case {
    std::string scenario;
    bool stream;
    std::string code;
    bool retryable;
  };
  for (const auto& c : std::vector<Case>{{"error_400", false, "http_400", false},
                                         {"error_401", true, "http_401", false},
                                         {"quota_429", false, "http_402", false},
                                         {"error_503", true, "http_503", true},
                                         {"midstream_error", true, "stream_error", true},
                                         {"truncated", true, "incomplete_stream", true}}) {
    ProviderError e = ErrorOf(Call(*Venice(c.scenario), c.stream));
    EXPECT_EQ(e.code, c.code) << c.scenario << ": " << e.message;
    EXPECT_EQ(e.retryable, c.retryable) << c.scenario;
  }
  // The string error body is read, and the epoch reset header becomes the retry hint.
  RecordedCall limited = Call(*Venice("rate_limit_429"), false);
  ProviderError e = ErrorOf(limited);
  EXPECT_EQ(e.message, "Rate limit exceeded");
  EXPECT_TRUE(e.retryable);
  ASSERT_TRUE(e.retry_after.has_value());
  EXPECT_LE(*e.retry_after, 3s);
  // No key at all: Venice's 401 "Authentication failed".
  ProviderError unauthenticated = ErrorOf(Call(*Venice("", ""), false));
  EXPECT_EQ(unauthenticated.http_status, 401);
  EXPECT_EQ(unauthenticated.message, "Authentication failed");
}

TEST_F(ProviderSimTest, GeminiAnswersInBothModesUnderEveryStressor) {
  RecordedCall whole = Call(*Gemini(""), false, "be terse");
  ChatResult w = ResultOf(whole);
  ASSERT_FALSE(w.text.empty());
  EXPECT_EQ(w.provider, "gemini");
  EXPECT_EQ(w.finish_reason, "stop");
  ASSERT_TRUE(w.usage.has_value());
  for (const std::string scenario : {"ok", "split_bytes", "byte_by_byte", "comments,fields",
                                     "multi", "nospace", "empty_parts", "null_fields"}) {
    RecordedCall out = Call(*Gemini(scenario), true, "be terse");
    ChatResult r = ResultOf(out);
    EXPECT_EQ(r.text, w.text) << scenario;
    EXPECT_EQ(out.Joined(), w.text) << scenario;
    EXPECT_EQ(r.finish_reason, "stop") << scenario;
    // Cumulative usage: the last value, never the sum of every chunk's.
    ASSERT_TRUE(r.usage.has_value()) << scenario;
    EXPECT_EQ(r.usage->prompt_tokens, w.usage->prompt_tokens) << scenario;
    EXPECT_EQ(r.usage->completion_tokens, w.usage->completion_tokens) << scenario;
    EXPECT_EQ(r.usage->total_tokens, w.usage->total_tokens) << scenario;
  }
}

TEST_F(ProviderSimTest, GeminiEdgeCasesAreNormalised) {
  for (bool stream : {false, true}) {
    // A blocked prompt: no text, content_filter, and the prompt's usage still counted.
    ChatResult blocked = ResultOf(Call(*Gemini("prompt_blocked"), stream));
    EXPECT_EQ(blocked.finish_reason, "content_filter") << stream;
    EXPECT_TRUE(blocked.text.empty()) << stream;
    ASSERT_TRUE(blocked.usage.has_value()) << stream;
    EXPECT_GT(blocked.usage->prompt_tokens, 0) << stream;
    // SAFETY / RECITATION with no content at the end.
    EXPECT_EQ(ResultOf(Call(*Gemini("safety_stop"), stream)).finish_reason, "content_filter");
    EXPECT_EQ(ResultOf(Call(*Gemini("recitation"), stream)).finish_reason, "content_filter");
    // MAX_TOKENS: length, and the thinking tokens are part of the output.
    ChatResult length = ResultOf(Call(*Gemini("length"), stream));
    EXPECT_EQ(length.finish_reason, "length");
    ASSERT_TRUE(length.usage.has_value());
    EXPECT_EQ(length.usage->total_tokens,
              length.usage->prompt_tokens + length.usage->completion_tokens);
    EXPECT_EQ(ResultOf(Call(*Gemini("tool_call"), stream)).finish_reason, "tool_calls");
  }
}

TEST_F(ProviderSimTest, GeminiErrorsAreNormalised) {
  struct Case {
    std::string scenario;
    bool stream;
    std::string code;
    bool retryable;
  };
  for (const auto& c :
       std::vector<Case>{{"error_400", true, "http_400", false},
                         {"error_401", false, "http_400", false},
                         {"error_403,wrapped", false, "http_403", false},
                         {"error_404_model", true, "http_404", false},
                         {"quota_429", false, "http_429_quota", false},
                         {"quota_429,wrapped", true, "http_429_quota", false},
                         {"error_500,wrapped", false, "http_500", true},
                         {"error_503", true, "http_503", true},
                         {"midstream_error", true, "stream_error", true},
                         {"midstream_error,split_bytes", true, "stream_error", true},
                         {"truncated", true, "incomplete_stream", true}}) {
    ProviderError e = ErrorOf(Call(*Gemini(c.scenario), c.stream));
    EXPECT_EQ(e.code, c.code) << c.scenario << ": " << e.message;
    EXPECT_EQ(e.retryable, c.retryable) << c.scenario;
  }
  for (const std::string scenario : {"rate_limit_429", "rate_limit_429,wrapped"}) {
    ProviderError e = ErrorOf(Call(*Gemini(scenario), false));
    EXPECT_TRUE(e.retryable) << scenario;
    ASSERT_TRUE(e.retry_after.has_value()) << scenario;
    EXPECT_EQ(*e.retry_after, 1500ms) << scenario;
  }
  // No key: 403 PERMISSION_DENIED, not retried.
  ProviderError missing = ErrorOf(Call(*Gemini("", ""), false));
  EXPECT_EQ(missing.http_status, 403);
  EXPECT_FALSE(missing.retryable);
}

TEST_F(ProviderSimTest, BrokerBinaryServesEveryProvider) {
  ASSERT_TRUE(system_->StartBroker(
      {"--venice-base-url=" + Origin() + "/api/v1", "--gemini-base-url=" + Origin() + "/v1beta"}));
  Process& broker = *system_->broker();
  auto channel = grpc::CreateChannel(broker.address("grpc"), grpc::InsecureChannelCredentials());
  auto stub = v1::LlmBroker::NewStub(channel);
  for (const std::string provider : {"", "openai", "venice", "gemini"}) {
    v1::CompletionRequest request;
    request.set_provider(provider);
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content(kPrompt);
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + 20s);
      v1::CompletionResponse response;
      auto status = stub->Complete(&context, request, &response);
      ASSERT_TRUE(status.ok()) << provider << ": " << status.error_message() << "\n"
                               << broker.Log();
      EXPECT_EQ(response.provider(), provider.empty() ? "openai" : provider);
      EXPECT_FALSE(response.message().empty());
      EXPECT_GT(response.usage().total_tokens(), 0);
    }
    {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + 20s);
      auto reader = stub->StreamComplete(&context, request);
      v1::CompletionChunk chunk;
      std::string joined;
      std::optional<v1::CompletionResponse> done;
      while (reader->Read(&chunk)) {
        if (chunk.has_done()) {
          done = chunk.done();
        } else {
          joined += chunk.delta();
        }
      }
      ASSERT_TRUE(reader->Finish().ok()) << provider;
      ASSERT_TRUE(done.has_value()) << provider;
      EXPECT_EQ(joined, done->message()) << provider;
      EXPECT_EQ(done->provider(), provider.empty() ? "openai" : provider);
    }
  }
  auto metrics = anima::testing::ScrapeMetrics(broker.port("metrics"));
  EXPECT_GT(metrics["anima_broker_cost_usd_total{model=\"gpt-4o-mini\",provider=\"openai\"}"], 0);
  EXPECT_EQ(metrics["anima_broker_breaker_state{provider=\"gemini\"}"], 0);
  // Strategies per request: fanout answers with every provider's candidate, in provider order.
  for (const std::string strategy : {"failover", "hedge", "race", "fanout"}) {
    v1::CompletionRequest request;
    request.set_strategy(strategy);
    auto* m = request.add_messages();
    m->set_role("user");
    m->set_content(kPrompt);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    v1::CompletionResponse response;
    auto status = stub->Complete(&context, request, &response);
    ASSERT_TRUE(status.ok()) << strategy << ": " << status.error_message();
    EXPECT_FALSE(response.message().empty()) << strategy;
    if (strategy == "fanout") {
      ASSERT_EQ(response.candidates_size(), 3) << broker.Log();
      EXPECT_EQ(response.candidates(0).provider(), "openai");
      EXPECT_EQ(response.candidates(1).provider(), "venice");
      EXPECT_EQ(response.candidates(2).provider(), "gemini");
      EXPECT_EQ(response.provider(), "openai");
      EXPECT_EQ(response.message(), response.candidates(0).message());
      for (const auto& c : response.candidates()) {
        EXPECT_FALSE(c.message().empty()) << c.provider();
        EXPECT_FALSE(c.has_error()) << c.provider();
      }
    } else {
      EXPECT_EQ(response.candidates_size(), 0) << strategy;
    }
  }
}

}  // namespace
}  // namespace anima::broker
