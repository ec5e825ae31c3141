// The broker in process, end to end: a real gRPC server and client, the real HTTP client and
// OpenAI provider, against in-process fake OpenAI servers.
#include "services/llm_broker/llm_broker_service.h"

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "prometheus/registry.h"
#include "services/common/grpc_server.h"
#include "services/llm_broker/broker.h"
#include "services/llm_broker/failover_strategy.h"
#include "services/llm_broker/http_client.h"
#include "services/llm_broker/instrumented_provider.h"
#include "services/llm_broker/openai_provider.h"
#include "services/llm_broker/parallel_strategy.h"
#include "tests/unit/llm_broker/openai_fixtures.h"
#include "tests/unit/llm_broker/test_http_server.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;
using testing::Chunk;
using testing::ChunkedHead;
using testing::JsonResponse;
using testing::kLastChunk;
using testing::TestConnection;
using testing::TestHttpServer;
using testing::TestRequest;
namespace v1 = anima::v1;

// Answers like OpenAI: JSON for stream:false, the recorded SSE stream for stream:true.
bool OpenAiOk(const TestRequest& r, TestConnection& c) {
  auto body = nlohmann::json::parse(r.body);
  if (body.value("stream", false)) {
    c.Write(ChunkedHead(200, "text/event-stream; charset=utf-8"));
    c.Write(Chunk(testing::kRecordedStream));
    c.Write(kLastChunk);
  } else {
    c.Write(JsonResponse(200, testing::kOkResponse));
  }
  return true;
}

class BrokerServer {
 public:
  // Every provider gets `prices`; the strategies are failover (the default) and fanout.
  explicit BrokerServer(const std::vector<std::pair<std::string, std::string>>& providers,
                        std::map<std::string, ModelPrice> prices = {}) {
    HttpClientOptions options;
    client_ = *HttpClient::Create(options);
    metrics_ = std::make_shared<BrokerMetrics>(registry_);
    std::vector<std::shared_ptr<Provider>> list;
    for (const auto& [name, url] : providers) {
      OpenAiProviderOptions o;
      o.name = name;
      o.base_url = url;
      o.api_key = "sk-test";
      o.max_retries = 0;
      ProviderGuards guards;
      guards.prices = prices;
      auto p = std::make_shared<InstrumentedProvider>(std::make_shared<OpenAiProvider>(o, client_),
                                                      metrics_, guards);
      instrumented_.push_back(p);
      list.push_back(p);
    }
    RetryPolicy policy;
    policy.initial_backoff = 1ms;
    auto broker = std::make_shared<Broker>(
        list,
        std::map<std::string, std::shared_ptr<Strategy>>{
            {"failover", std::make_shared<FailoverStrategy>(client_->scheduler(), policy)},
            {"fanout",
             std::make_shared<ParallelStrategy>(ParallelMode::kFanout, client_->scheduler())}},
        "failover");
    service_ = std::make_unique<LlmBrokerService>(broker, metrics_);
    introspection_ = std::make_unique<BrokerIntrospectionService>(service_.get(), instrumented_);
    server_ = *common::GrpcServer::Start("127.0.0.1:0", {service_.get(), introspection_.get()},
                                         registry_);
    auto channel = common::MakeChannel("127.0.0.1:" + std::to_string(server_->port()), nullptr);
    stub_ = v1::LlmBroker::NewStub(channel);
    introspection_stub_ = v1::Introspection::NewStub(channel);
  }
  ~BrokerServer() { server_->Shutdown(1s); }

  v1::LlmBroker::Stub& stub() { return *stub_; }
  v1::Introspection::Stub& introspection() { return *introspection_stub_; }
  HttpClient& client() { return *client_; }

 private:
  prometheus::Registry registry_;
  std::shared_ptr<HttpClient> client_;
  std::shared_ptr<BrokerMetrics> metrics_;
  std::vector<std::shared_ptr<InstrumentedProvider>> instrumented_;
  std::unique_ptr<LlmBrokerService> service_;
  std::unique_ptr<BrokerIntrospectionService> introspection_;
  std::unique_ptr<common::GrpcServer> server_;
  std::unique_ptr<v1::LlmBroker::Stub> stub_;
  std::unique_ptr<v1::Introspection::Stub> introspection_stub_;
};

v1::CompletionRequest Hello() {
  v1::CompletionRequest r;
  r.set_request_id("r-test-1");
  auto* m = r.add_messages();
  m->set_role("user");
  m->set_content("Hello!");
  return r;
}

v1::BrokerFailure FailureOf(const grpc::Status& status) {
  v1::BrokerFailure failure;
  EXPECT_TRUE(failure.ParseFromString(status.error_details()));
  return failure;
}

struct StreamResult {
  std::vector<std::string> deltas;
  std::optional<v1::CompletionResponse> done;
  grpc::Status status;
};

StreamResult Stream(v1::LlmBroker::Stub& stub, const v1::CompletionRequest& request,
                    std::chrono::milliseconds timeout = 10s) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  auto reader = stub.StreamComplete(&context, request);
  StreamResult out;
  v1::CompletionChunk chunk;
  while (reader->Read(&chunk)) {
    if (chunk.has_done()) {
      out.done = chunk.done();
    } else {
      out.deltas.push_back(chunk.delta());
    }
  }
  out.status = reader->Finish();
  return out;
}

TEST(LlmBrokerServiceTest, CompleteEndToEnd) {
  TestHttpServer upstream(OpenAiOk);
  BrokerServer broker({{"openai", upstream.url("/v1")}});
  grpc::ClientContext context;
  v1::CompletionResponse response;
  auto status = broker.stub().Complete(&context, Hello(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.message(), "Hello! How can I assist you today?");
  EXPECT_EQ(response.provider(), "openai");
  EXPECT_EQ(response.finish_reason(), "stop");
  EXPECT_EQ(response.usage().total_tokens(), 29);
  auto requests = upstream.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].target, "/v1/chat/completions");
  EXPECT_EQ(requests[0].headers["authorization"], "Bearer sk-test");
  EXPECT_EQ(requests[0].headers["x-client-request-id"], "r-test-1");
}

TEST(LlmBrokerServiceTest, StreamCompleteEndToEnd) {
  TestHttpServer upstream(OpenAiOk);
  BrokerServer broker({{"openai", upstream.url("/v1")}});
  auto result = Stream(broker.stub(), Hello());
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  std::string text;
  for (const auto& d : result.deltas) text += d;
  EXPECT_EQ(text, "Hi, how are you?");
  ASSERT_TRUE(result.done.has_value());
  EXPECT_EQ(result.done->message(), "Hi, how are you?");
  EXPECT_EQ(result.done->usage().completion_tokens(), 5);
  EXPECT_EQ(result.done->finish_reason(), "stop");
  // Two requests, one upstream connection.
  auto again = Stream(broker.stub(), Hello());
  EXPECT_TRUE(again.status.ok());
  EXPECT_EQ(upstream.connections(), 1);
}

TEST(LlmBrokerServiceTest, ResponsesCarryTheCostOfEveryProviderCall) {
  TestHttpServer upstream(OpenAiOk);
  // gpt-4o-mini, the providers' default model, at $0.15 in / $0.60 out per million tokens.
  BrokerServer broker({{"openai", upstream.url("/v1")}, {"second", upstream.url("/v1")}},
                      {{"gpt-4o-mini", {0.15, 0.6}}});
  constexpr double kWholeCost = (19 * 0.15 + 10 * 0.6) / 1e6;  // kOkResponse: 19 in, 10 out
  constexpr double kStreamCost = (10 * 0.15 + 5 * 0.6) / 1e6;  // kRecordedStream: 10 in, 5 out

  grpc::ClientContext context;
  v1::CompletionResponse response;
  ASSERT_TRUE(broker.stub().Complete(&context, Hello(), &response).ok());
  EXPECT_DOUBLE_EQ(response.cost_usd(), kWholeCost);
  EXPECT_EQ(response.billed_usage().prompt_tokens(), 19);
  EXPECT_EQ(response.billed_usage().total_tokens(), 29);
  // The provider's part of the latency (the upstream answers at once: a little of it).
  EXPECT_GT(response.provider_time_us(), 0);
  EXPECT_LE(response.provider_time_us(), response.latency_ms() * 1000 + 1000);

  auto streamed = Stream(broker.stub(), Hello());
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_TRUE(streamed.done.has_value());
  EXPECT_DOUBLE_EQ(streamed.done->cost_usd(), kStreamCost);
  EXPECT_EQ(streamed.done->billed_usage().total_tokens(), 15);

  // Fanout: both providers answered and both are billed; the answer's usage is one of them.
  auto fanout = Hello();
  fanout.set_strategy("fanout");
  grpc::ClientContext fanout_context;
  v1::CompletionResponse both;
  ASSERT_TRUE(broker.stub().Complete(&fanout_context, fanout, &both).ok());
  ASSERT_EQ(both.candidates_size(), 2);
  EXPECT_EQ(both.usage().total_tokens(), 29);
  EXPECT_EQ(both.billed_usage().total_tokens(), 58);
  EXPECT_DOUBLE_EQ(both.cost_usd(), 2 * kWholeCost);

  // A model without a price costs nothing, but its tokens are still billed.
  auto unpriced = Hello();
  unpriced.set_model("gpt-4o");
  grpc::ClientContext unpriced_context;
  v1::CompletionResponse free;
  ASSERT_TRUE(broker.stub().Complete(&unpriced_context, unpriced, &free).ok());
  EXPECT_EQ(free.cost_usd(), 0);
  EXPECT_EQ(free.billed_usage().total_tokens(), 29);
}

TEST(LlmBrokerServiceTest, Provider500FailsOverToTheSecondProvider) {
  TestHttpServer broken([](const TestRequest&, TestConnection& c) {
    c.Write(JsonResponse(500, testing::k500Body));
    return true;
  });
  TestHttpServer healthy(OpenAiOk);
  BrokerServer broker({{"first", broken.url("/v1")}, {"second", healthy.url("/v1")}});
  grpc::ClientContext context;
  v1::CompletionResponse response;
  auto status = broker.stub().Complete(&context, Hello(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.provider(), "second");
  EXPECT_EQ(broken.requests().size(), 1u);

  grpc::ClientContext describe_context;
  v1::DescribeResponse describe;
  ASSERT_TRUE(
      broker.introspection().Describe(&describe_context, v1::DescribeRequest(), &describe).ok());
  ASSERT_EQ(describe.modules_size(), 3);
  EXPECT_EQ(describe.modules(0).name(), "llm-broker");
  EXPECT_EQ(describe.modules(1).name(), "llm-broker/first");
  EXPECT_EQ(describe.modules(1).counters().at("errors_total"), 1);
  EXPECT_EQ(describe.modules(2).health(), v1::MODULE_HEALTH_HEALTHY);
}

TEST(LlmBrokerServiceTest, EveryProviderFailingIsProviderErrorWithCauses) {
  TestHttpServer broken([](const TestRequest&, TestConnection& c) {
    c.Write(JsonResponse(503, "<html>busy</html>", "Retry-After: 1\r\n"));
    return true;
  });
  TestHttpServer unauthorized([](const TestRequest&, TestConnection& c) {
    c.Write(JsonResponse(401, testing::k401Body));
    return true;
  });
  BrokerServer broker({{"a", broken.url("/v1")}, {"b", unauthorized.url("/v1")}});
  grpc::ClientContext context;
  v1::CompletionResponse response;
  auto status = broker.stub().Complete(&context, Hello(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  auto failure = FailureOf(status);
  EXPECT_EQ(failure.code(), "provider_error");
  ASSERT_EQ(failure.causes_size(), 2);
  EXPECT_EQ(failure.causes(0).provider(), "a");
  EXPECT_EQ(failure.causes(0).http_status(), 503);
  EXPECT_EQ(failure.causes(1).code(), "http_401");
  EXPECT_EQ(failure.retry_after_ms(), 1000);
}

TEST(LlmBrokerServiceTest, MidStreamErrorIsReportedAsAnError) {
  TestHttpServer upstream([](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead(200, "text/event-stream"));
    c.Write(Chunk(testing::kMidStreamError));
    return false;  // then the connection closes, no [DONE]
  });
  TestHttpServer second(OpenAiOk);
  BrokerServer broker({{"openai", upstream.url("/v1")}, {"other", second.url("/v1")}});
  auto result = Stream(broker.stub(), Hello());
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_FALSE(result.done.has_value());
  std::string text;
  for (const auto& d : result.deltas) text += d;
  EXPECT_EQ(text, "Hello");
  auto failure = FailureOf(result.status);
  EXPECT_EQ(failure.code(), "provider_error");
  ASSERT_EQ(failure.causes_size(), 1);
  EXPECT_EQ(failure.causes(0).code(), "stream_error");
  EXPECT_TRUE(second.requests().empty());  // no failover after tokens reached the client
}

TEST(LlmBrokerServiceTest, ClientCancellationClosesTheUpstreamConnection) {
  std::promise<bool> upstream_closed;
  TestHttpServer upstream([&](const TestRequest&, TestConnection& c) {
    c.Write(ChunkedHead(200, "text/event-stream"));
    c.Write(Chunk("data: {\"choices\":[{\"delta\":{\"content\":\"tick\"}}]}\n\n"));
    upstream_closed.set_value(c.WaitPeerClosed(10s));
    return false;
  });
  BrokerServer broker({{"openai", upstream.url("/v1")}});
  grpc::ClientContext context;
  auto reader = broker.stub().StreamComplete(&context, Hello());
  v1::CompletionChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  EXPECT_EQ(chunk.delta(), "tick");
  context.TryCancel();
  while (reader->Read(&chunk)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(upstream_closed.get_future().get());
}

TEST(LlmBrokerServiceTest, CallDeadlineStopsTheProviderRequest) {
  std::promise<bool> upstream_closed;
  TestHttpServer upstream([&](const TestRequest&, TestConnection& c) {
    upstream_closed.set_value(c.WaitPeerClosed(10s));  // never answers
    return false;
  });
  BrokerServer broker({{"openai", upstream.url("/v1")}});
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 300ms);
  v1::CompletionResponse response;
  auto status = broker.stub().Complete(&context, Hello(), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(upstream_closed.get_future().get());
}

TEST(LlmBrokerServiceTest, BadRequestsAreInvalidArgument) {
  TestHttpServer upstream(OpenAiOk);
  BrokerServer broker({{"openai", upstream.url("/v1")}});
  for (auto mutate : std::vector<std::function<void(v1::CompletionRequest&)>>{
           [](v1::CompletionRequest& r) { r.clear_messages(); },
           [](v1::CompletionRequest& r) { r.set_temperature(5); },
           [](v1::CompletionRequest& r) { r.set_provider("nobody"); },
           [](v1::CompletionRequest& r) { r.set_strategy("sideways"); }}) {
    v1::CompletionRequest request = Hello();
    mutate(request);
    grpc::ClientContext context;
    v1::CompletionResponse response;
    auto status = broker.stub().Complete(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(FailureOf(status).code(), "invalid_message");
  }
  auto stream = Stream(broker.stub(), v1::CompletionRequest());
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(upstream.requests().empty());
}

TEST(LlmBrokerServiceTest, ListModels) {
  BrokerServer broker(
      std::vector<std::pair<std::string, std::string>>{{"openai", "http://127.0.0.1:9/v1"}});
  grpc::ClientContext context;
  v1::ListModelsResponse response;
  ASSERT_TRUE(broker.stub().ListModels(&context, v1::ListModelsRequest(), &response).ok());
  ASSERT_EQ(response.models_size(), 1);
  EXPECT_EQ(response.models(0).id(), "openai/gpt-4o-mini");
}

}  // namespace
}  // namespace anima::broker
