// The broker against the real simulator binary (anima-llm-sim): the OpenAI provider under every
// framing stressor and fault the simulator offers, and the anima-llm-broker binary end to end.
// Skipped when the simulator has not been built.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
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

constexpr char kPrompt[] = "Hello, consciousness system!";

class SimTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    if (!std::filesystem::exists(BinDir() + "/anima-llm-sim")) return;
    // Our own rules, so a prompt can pick a fault when the request goes through the broker.
    std::string rules = anima::testing::MakeTempDir("broker-sim") + "/rules.json";
    std::ofstream(rules) << R"({"default_reply": "A simulated answer to {prompt}.",
      "models": ["gpt-4o-mini", "gpt-4o"],
      "rules": [{"match": "[broker:midstream]", "reply": "This answer starts well and then breaks",
                 "scenario": "midstream_error"}]})";
    system_->StartSim(
        {"--first-token-ms=0", "--token-interval-ms=0", "--latency-ms=0", "--rules=" + rules});
  }
  static void TearDownTestSuite() { system_.reset(); }
  void SetUp() override {
    if (system_->sim() == nullptr) GTEST_SKIP() << "anima-llm-sim is not built";
    client_ = *HttpClient::Create({});
  }

  std::string BaseUrl() const {
    return "http://127.0.0.1:" + std::to_string(system_->sim()->port("http")) + "/v1";
  }

  // One provider call with the given x-sim-scenario, waited for.
  RecordedCall Call(const std::string& scenario, bool stream) {
    OpenAiProviderOptions options;
    options.base_url = BaseUrl();
    options.api_key = "sim-key";
    if (!scenario.empty()) options.extra_headers = {{"x-sim-scenario", scenario}};
    OpenAiProvider provider(options, client_);
    ChatRequest request;
    request.request_id = "r-sim";
    request.model = "gpt-4o-mini";
    request.messages = {{"user", kPrompt}};
    request.stream = stream;
    RecordedCall out = CallAndWait(provider, request);
    EXPECT_TRUE(out.outcome.has_value());
    return out;
  }

  static inline std::unique_ptr<System> system_;
  std::shared_ptr<HttpClient> client_;
};

TEST_F(SimTest, StreamingSurvivesEveryFramingStressor) {
  RecordedCall whole = Call("", /*stream=*/false);
  ASSERT_TRUE(std::holds_alternative<ChatResult>(*whole.outcome));
  const std::string expected = std::get<ChatResult>(*whole.outcome).text;
  ASSERT_FALSE(expected.empty());
  for (const std::string scenario :
       {"ok", "split_bytes", "byte_by_byte", "crlf", "comments", "nospace", "multi", "fields",
        "crlf,split_bytes,comments,nospace,fields"}) {
    RecordedCall out = Call(scenario, /*stream=*/true);
    ASSERT_TRUE(std::holds_alternative<ChatResult>(*out.outcome))
        << scenario << ": " << std::get<ProviderError>(*out.outcome).message;
    const auto& result = std::get<ChatResult>(*out.outcome);
    EXPECT_EQ(result.text, expected) << scenario;
    std::string joined;
    for (const auto& d : out.deltas) joined += d;
    EXPECT_EQ(joined, expected) << scenario;
    EXPECT_EQ(result.finish_reason, "stop") << scenario;
    EXPECT_TRUE(result.usage.has_value()) << scenario;
  }
}

TEST_F(SimTest, FaultsAreNormalisedErrors) {
  struct Case {
    std::string scenario;
    bool stream;
    std::string code;
    bool retryable;
  };
  for (const auto& c :
       std::vector<Case>{{"midstream_error", true, "stream_error", true},
                         {"midstream_error,split_bytes", true, "stream_error", true},
                         {"truncated", true, "incomplete_stream", true},
                         {"error_500", false, "http_500", true},
                         {"error_401", true, "http_401", false},
                         {"quota_429", false, "http_429_quota", false}}) {
    RecordedCall out = Call(c.scenario, c.stream);
    ASSERT_TRUE(std::holds_alternative<ProviderError>(*out.outcome)) << c.scenario;
    const auto& e = std::get<ProviderError>(*out.outcome);
    EXPECT_EQ(e.code, c.code) << c.scenario << ": " << e.message;
    EXPECT_EQ(e.retryable, c.retryable) << c.scenario;
  }
  RecordedCall limited = Call("rate_limit_429", false);
  const auto& e = std::get<ProviderError>(*limited.outcome);
  EXPECT_TRUE(e.retryable);
  EXPECT_TRUE(e.retry_after.has_value());
}

TEST_F(SimTest, ConnectionClosedAfterAResponseIsRetriedTransparently) {
  RecordedCall first = Call("close_after", false);
  ASSERT_TRUE(std::holds_alternative<ChatResult>(*first.outcome));
  RecordedCall second = Call("", false);
  ASSERT_TRUE(std::holds_alternative<ChatResult>(*second.outcome));
  EXPECT_EQ(client_->stale_retries(), 1);
  EXPECT_EQ(client_->connections_opened(), 2);
}

TEST_F(SimTest, BrokerBinaryEndToEnd) {
  ASSERT_TRUE(system_->StartBroker());
  Process& broker = *system_->broker();
  auto channel = grpc::CreateChannel(broker.address("grpc"), grpc::InsecureChannelCredentials());
  auto stub = v1::LlmBroker::NewStub(channel);

  v1::CompletionRequest request;
  auto* m = request.add_messages();
  m->set_role("user");
  m->set_content(kPrompt);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    v1::CompletionResponse response;
    auto status = stub->Complete(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << broker.Log();
    EXPECT_FALSE(response.message().empty());
    EXPECT_EQ(response.provider(), "openai");
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
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_TRUE(done.has_value());
    EXPECT_EQ(joined, done->message());
  }
  {
    v1::CompletionRequest broken = request;
    broken.mutable_messages(0)->set_content("[broker:midstream]");
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 20s);
    auto reader = stub->StreamComplete(&context, broken);
    v1::CompletionChunk chunk;
    bool got_done = false;
    while (reader->Read(&chunk)) got_done = got_done || chunk.has_done();
    auto status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_FALSE(got_done);
    v1::BrokerFailure failure;
    ASSERT_TRUE(failure.ParseFromString(status.error_details()));
    EXPECT_EQ(failure.code(), "provider_error");
  }
  auto metrics = anima::testing::ScrapeMetrics(broker.port("metrics"));
  EXPECT_GE(metrics["anima_broker_provider_requests_total{model=\"gpt-4o-mini\",outcome=\"ok\","
                    "provider=\"openai\"}"],
            2);
  EXPECT_GE(metrics["anima_broker_http_connections_opened_total{origin=\"http://127.0.0.1:" +
                    std::to_string(system_->sim()->port("http")) + "\"}"],
            1);
  EXPECT_GT(metrics["anima_broker_tokens_total{kind=\"completion\",model=\"gpt-4o-mini\","
                    "provider=\"openai\"}"],
            0);
  EXPECT_GE(metrics["anima_broker_overhead_seconds_count"], 3);
}

}  // namespace
}  // namespace anima::broker
