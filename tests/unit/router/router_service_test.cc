// The router in process, through a real gRPC client, against a fake broker on a real port.
#include <map>
#include <thread>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "gtest/gtest.h"
#include "services/common/grpc_server.h"
#include "services/router/router_service.h"
#include "services/router/state_poller.h"

namespace anima::router {
namespace {

using anima::v1::Event;

// Replies with the last user message reversed, as deltas of 2 characters; messages starting
// with "fail" fail like the broker does when every provider failed.
class FakeBroker final : public anima::v1::LlmBroker::Service {
 public:
  grpc::Status Complete(grpc::ServerContext* ctx, const anima::v1::CompletionRequest* req,
                        anima::v1::CompletionResponse* res) override {
    last_request = *req;
    if (req->messages().rbegin()->content().rfind("fail", 0) == 0) return Failure();
    *res = Reply(*req);
    return grpc::Status::OK;
  }
  grpc::Status StreamComplete(grpc::ServerContext* ctx, const anima::v1::CompletionRequest* req,
                              grpc::ServerWriter<anima::v1::CompletionChunk>* writer) override {
    last_request = *req;
    if (req->messages().rbegin()->content().rfind("fail", 0) == 0) return Failure();
    auto reply = Reply(*req);
    for (size_t i = 0; i < reply.message().size(); i += 2) {
      anima::v1::CompletionChunk chunk;
      chunk.set_delta(reply.message().substr(i, 2));
      writer->Write(chunk);
    }
    anima::v1::CompletionChunk done;
    *done.mutable_done() = reply;
    writer->Write(done);
    return grpc::Status::OK;
  }

  grpc::Status ListModels(grpc::ServerContext*, const anima::v1::ListModelsRequest*,
                          anima::v1::ListModelsResponse* res) override {
    auto* m = res->add_models();
    m->set_id("fake/fake-1");
    m->set_provider("fake");
    m->set_model("fake-1");
    return grpc::Status::OK;
  }

  anima::v1::CompletionRequest last_request;

 private:
  static anima::v1::CompletionResponse Reply(const anima::v1::CompletionRequest& req) {
    std::string text = req.messages().rbegin()->content();
    std::reverse(text.begin(), text.end());
    anima::v1::CompletionResponse res;
    res.set_message(text);
    res.set_provider("fake");
    res.set_model("fake-1");
    res.set_finish_reason("stop");
    res.mutable_usage()->set_prompt_tokens(3);
    res.mutable_usage()->set_completion_tokens(2);
    res.mutable_usage()->set_total_tokens(5);
    return res;
  }
  static grpc::Status Failure() {
    anima::v1::BrokerFailure failure;
    failure.set_code("provider_error");
    failure.set_message("every provider failed");
    failure.add_causes()->set_provider("openai");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "all failed", failure.SerializeAsString());
  }
};

class RouterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_server_ = *common::GrpcServer::Start("127.0.0.1:0", {&broker_}, registry_);
    broker_address_ = "127.0.0.1:" + std::to_string(broker_server_->port());
    StartRouter(broker_address_);
  }

  void StartRouter(const std::string& broker_address) {
    auto channel = common::MakeChannel(broker_address, nullptr);
    poller_ =
        std::make_unique<StatePoller>(std::vector<Backend>{{"llm-broker", broker_address, channel}},
                                      std::chrono::milliseconds(100000), &counters_);
    Downstreams downstreams;
    downstreams.broker = channel;
    service_ = std::make_unique<RouterService>(downstreams, &config_, poller_.get(), &counters_,
                                               registry_, RouterOptions{});
    poller_->SetScheduler(&service_->scheduler(), config_.scheduler);
    poller_->PollOnce();
    router_server_ = *common::GrpcServer::Start("127.0.0.1:0", {service_.get()}, registry_);
    stub_ = anima::v1::Router::NewStub(
        common::MakeChannel("127.0.0.1:" + std::to_string(router_server_->port()), nullptr));
  }

  std::vector<Event> Dispatch(const anima::v1::Envelope& env) {
    grpc::ClientContext ctx;
    auto reader = stub_->Dispatch(&ctx, env);
    std::vector<Event> events;
    Event e;
    while (reader->Read(&e)) events.push_back(e);
    EXPECT_TRUE(reader->Finish().ok());
    return events;
  }

  static anima::v1::Envelope Chat(const std::string& message, bool stream,
                                  const std::string& conversation = "") {
    anima::v1::Envelope env;
    env.set_request_id("r-test");
    env.set_type("chat");
    env.mutable_chat()->set_message(message);
    env.mutable_chat()->set_stream(stream);
    env.mutable_chat()->set_conversation_id(conversation);
    return env;
  }

  prometheus::Registry registry_;
  FakeBroker broker_;
  std::unique_ptr<common::GrpcServer> broker_server_;
  std::string broker_address_;
  DispatchCounters counters_;
  RouterConfig config_ = DefaultRouterConfig();
  std::unique_ptr<StatePoller> poller_;
  std::unique_ptr<RouterService> service_;
  std::unique_ptr<common::GrpcServer> router_server_;
  std::unique_ptr<anima::v1::Router::Stub> stub_;
};

TEST_F(RouterServiceTest, ChatWithoutStreamGivesOneResponse) {
  auto events = Dispatch(Chat("hello", false, "conv-1"));
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_chat_response());
  EXPECT_EQ(events[0].chat_response().message(), "olleh");
  EXPECT_EQ(events[0].chat_response().conversation_id(), "conv-1");
  EXPECT_EQ(events[0].chat_response().usage().total_tokens(), 5);
  EXPECT_EQ(broker_.last_request.request_id(), "r-test");
}

TEST_F(RouterServiceTest, ChatStreamGivesDeltasThenResponse) {
  auto events = Dispatch(Chat("abcdef", true));
  ASSERT_EQ(events.size(), 4u);
  std::string joined;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(events[i].has_chat_delta());
    joined += events[i].chat_delta().delta();
  }
  EXPECT_EQ(joined, "fedcba");
  ASSERT_TRUE(events[3].has_chat_response());
  // No conversation id given: the router made one, so the client can continue it.
  EXPECT_EQ(events[3].chat_response().conversation_id().rfind("conv-", 0), 0u);
}

TEST_F(RouterServiceTest, ConversationTurnsAreSentAsContext) {
  Dispatch(Chat("first", false, "c-mem"));
  Dispatch(Chat("second", true, "c-mem"));
  const auto& msgs = broker_.last_request.messages();
  ASSERT_EQ(msgs.size(), 3);
  EXPECT_EQ(msgs[0].content(), "first");
  EXPECT_EQ(msgs[1].role(), "assistant");
  EXPECT_EQ(msgs[1].content(), "tsrif");
  EXPECT_EQ(msgs[2].content(), "second");
}

TEST_F(RouterServiceTest, StatelessChatsNeitherReadNorStoreMemory) {
  Dispatch(Chat("remembered", false, "c-both"));
  auto stateless = Chat("from the API", false, "c-both");
  stateless.mutable_chat()->set_stateless(true);
  auto events = Dispatch(stateless);
  ASSERT_EQ(broker_.last_request.messages_size(), 1) << "memory was not read";
  ASSERT_FALSE(events.empty());
  // A stateless chat without an id gets none (nothing could continue it).
  auto anonymous = Chat("no id", false);
  anonymous.mutable_chat()->set_stateless(true);
  auto answer = Dispatch(anonymous);
  ASSERT_FALSE(answer.empty());
  EXPECT_TRUE(answer.back().chat_response().conversation_id().empty());
  Dispatch(Chat("next", false, "c-both"));
  const auto& msgs = broker_.last_request.messages();
  ASSERT_EQ(msgs.size(), 3) << "only the stateful turn was stored";
  EXPECT_EQ(msgs[0].content(), "remembered");
  EXPECT_EQ(msgs[2].content(), "next");
}

TEST_F(RouterServiceTest, BrokerFailureBecomesProviderErrorWithCauses) {
  for (bool stream : {false, true}) {
    auto events = Dispatch(Chat("fail please", stream));
    ASSERT_EQ(events.size(), 1u);
    ASSERT_TRUE(events[0].has_error());
    EXPECT_EQ(events[0].error().code(), "provider_error");
    ASSERT_EQ(events[0].error().causes_size(), 1);
    EXPECT_EQ(events[0].error().causes(0).provider(), "openai");
  }
}

TEST_F(RouterServiceTest, UnknownTypeAndSelfCodingAreAnsweredNeverDropped) {
  anima::v1::Envelope env;
  env.set_type("dance");
  env.set_raw_json("{\"type\":\"dance\"}");
  auto events = Dispatch(env);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error().code(), "unknown_type");

  anima::v1::Envelope sc;
  sc.set_type("self_coding_request");
  sc.mutable_self_coding()->set_task("write fizzbuzz");
  events = Dispatch(sc);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error().code(), "unavailable");
}

TEST_F(RouterServiceTest, StateReportsTheBrokerAndTheRouter) {
  anima::v1::Envelope env;
  env.set_type("consciousness_query");
  env.mutable_consciousness_query();
  auto events = Dispatch(env);
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_consciousness_state());
  const auto& state = events[0].consciousness_state();
  // The router, its three queues, and the fake broker, which does not implement Describe: its
  // health check answers for it.
  ASSERT_EQ(state.modules_size(), 5);
  EXPECT_EQ(state.modules(0).name(), "router");
  EXPECT_EQ(state.modules(1).name(), "router/queue-high");
  EXPECT_EQ(state.modules(1).kind(), "queue");
  EXPECT_EQ(state.modules(4).name(), "llm-broker");
  EXPECT_EQ(state.modules(4).health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(state.load().queue_depth().at("low"), 0);
  EXPECT_DOUBLE_EQ(state.harmony(), 1.0);
  EXPECT_EQ(state.status(), "healthy");
}

TEST_F(RouterServiceTest, BrokerDownGivesUnavailableAndADownModule) {
  broker_server_->Shutdown(std::chrono::milliseconds(0));
  broker_server_.reset();
  auto events = Dispatch(Chat("hello", false));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].error().code(), "unavailable");

  poller_->PollOnce();
  auto state = poller_->Snapshot(3);
  ASSERT_EQ(state.modules_size(), 5);
  EXPECT_EQ(state.modules(4).health(), anima::v1::MODULE_HEALTH_DOWN);
  EXPECT_DOUBLE_EQ(state.harmony(), 0.8);  // 4 of 5 healthy
  EXPECT_EQ(state.status(), "degraded");
  EXPECT_EQ(state.load().connections(), 3);
}

TEST_F(RouterServiceTest, ListModelsIsForwardedToTheBroker) {
  grpc::ClientContext ctx;
  anima::v1::ListModelsResponse res;
  ASSERT_TRUE(stub_->ListModels(&ctx, anima::v1::ListModelsRequest(), &res).ok());
  ASSERT_EQ(res.models_size(), 1);
  EXPECT_EQ(res.models(0).id(), "fake/fake-1");
  EXPECT_EQ(res.models(0).provider(), "fake");

  broker_server_->Shutdown(std::chrono::milliseconds(0));
  broker_server_.reset();
  grpc::ClientContext down;
  anima::v1::ListModelsResponse none;
  auto status = stub_->ListModels(&down, anima::v1::ListModelsRequest(), &none);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(none.models_size(), 0);
}

TEST_F(RouterServiceTest, ListRoutesGivesEveryTypeItsClassAndModule) {
  // Read at call time: a module added to the table shows up.
  config_.modules.push_back(ModuleRoute{"word-count", "127.0.0.1:1", {"word_count"}});
  config_.priorities["word_count"] = Priority::kLow;
  grpc::ClientContext ctx;
  anima::v1::ListRoutesResponse res;
  ASSERT_TRUE(stub_->ListRoutes(&ctx, anima::v1::ListRoutesRequest(), &res).ok());
  std::map<std::string, std::pair<std::string, std::string>> routes;
  for (const auto& r : res.routes()) routes[r.type()] = {r.priority(), r.module()};
  using Route = std::pair<std::string, std::string>;
  EXPECT_EQ(routes["chat"], Route("high", "llm-broker"));
  EXPECT_EQ(routes["consciousness_query"], Route("high", "router"));
  EXPECT_EQ(routes["self_coding_request"], Route("high", "self-coding"));
  EXPECT_EQ(routes["self_coding_watch"], Route("normal", "self-coding"));
  EXPECT_EQ(routes["word_count"], Route("low", "word-count"));
  EXPECT_EQ(routes.size(), 6u);
  EXPECT_EQ(res.default_priority(), "normal");
}

TEST_F(RouterServiceTest, ClientDeadlineShorterThanTheWorkEndsTheCall) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
  auto reader = stub_->Dispatch(&ctx, Chat("late", false));
  Event e;
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(RouterServiceTest, WatchStateStreamsSnapshots) {
  grpc::ClientContext ctx;
  anima::v1::WatchStateRequest req;
  req.set_interval_ms(100);
  auto reader = stub_->WatchState(&ctx, req);
  anima::v1::ConsciousnessState state;
  ASSERT_TRUE(reader->Read(&state));  // the current state at once
  EXPECT_FALSE(state.ts().empty());
  std::thread poll([this] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    poller_->PollOnce();
  });
  ASSERT_TRUE(reader->Read(&state));  // pushed after the next poll
  poll.join();
  ctx.TryCancel();
  while (reader->Read(&state)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

}  // namespace
}  // namespace anima::router
