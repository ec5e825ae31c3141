// The router in process, through a real gRPC client, against fake downstream services on real
// ports.
#include <map>
#include <mutex>
#include <thread>

#include "anima/v1/llm_broker.grpc.pb.h"
#include "anima/v1/module.grpc.pb.h"
#include "anima/v1/router.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "gtest/gtest.h"
#include "services/common/grpc_server.h"
#include "services/common/identity.h"
#include "services/router/conversation_memory.h"
#include "services/router/router_service.h"
#include "services/router/state_poller.h"

namespace anima::router {
namespace {

using anima::v1::Event;

// The identity each downstream RPC arrived with, by RPC name ("Complete", "Run", ...).
class IdentityLog {
 public:
  void Record(const std::string& rpc, const grpc::ServerContext& context) {
    std::lock_guard lock(mu_);
    seen_[rpc] = common::IdentityOf(context);
  }
  std::optional<common::Identity> Of(const std::string& rpc) {
    std::lock_guard lock(mu_);
    auto it = seen_.find(rpc);
    if (it == seen_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::mutex mu_;
  std::map<std::string, common::Identity> seen_;
};

// Replies with the last user message reversed, as deltas of 2 characters; messages starting
// with "fail" fail like the broker does when every provider failed.
class FakeBroker final : public anima::v1::LlmBroker::Service {
 public:
  grpc::Status Complete(grpc::ServerContext* ctx, const anima::v1::CompletionRequest* req,
                        anima::v1::CompletionResponse* res) override {
    identities.Record("Complete", *ctx);
    last_request = *req;
    if (req->messages().rbegin()->content().rfind("fail", 0) == 0) return Failure();
    *res = Reply(*req);
    return grpc::Status::OK;
  }
  grpc::Status StreamComplete(grpc::ServerContext* ctx, const anima::v1::CompletionRequest* req,
                              grpc::ServerWriter<anima::v1::CompletionChunk>* writer) override {
    identities.Record("StreamComplete", *ctx);
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

  grpc::Status ListModels(grpc::ServerContext* ctx, const anima::v1::ListModelsRequest*,
                          anima::v1::ListModelsResponse* res) override {
    identities.Record("ListModels", *ctx);
    auto* m = res->add_models();
    m->set_id("fake/fake-1");
    m->set_provider("fake");
    m->set_model("fake-1");
    return grpc::Status::OK;
  }

  anima::v1::CompletionRequest last_request;
  IdentityLog identities;

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
    // As if a losing candidate had answered too: billed for both.
    res.set_cost_usd(0.25);
    res.mutable_billed_usage()->set_prompt_tokens(6);
    res.mutable_billed_usage()->set_completion_tokens(4);
    res.mutable_billed_usage()->set_total_tokens(10);
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

// A conversation store that answers later on threads of its own, as the Redis store does, and
// that can be told to fail (as Redis unreachable) or to hold History answers until released.
class FakeStore final : public ConversationStore {
 public:
  ~FakeStore() override {
    ReleaseHeld();
    std::lock_guard lock(mu_);
    for (auto& t : threads_) t.join();
  }
  void History(const ConversationKey& key, HistoryCallback done) override {
    std::lock_guard lock(mu_);
    if (hold) {
      held_.push_back([this, key = Copy(key), done = std::move(done)] {
        done(memory_.History({key.first, key.second}));
      });
      return;
    }
    if (fail) {
      Later([done = std::move(done)] { done(absl::UnavailableError("store away")); });
      return;
    }
    Later([this, key = Copy(key), done = std::move(done)] {
      done(memory_.History({key.first, key.second}));
    });
  }
  void Append(const ConversationKey& key, std::string_view user, std::string_view assistant,
              AppendCallback done) override {
    std::lock_guard lock(mu_);
    if (fail) {
      Later([done = std::move(done)] { done(absl::DeadlineExceededError("store slow")); });
      return;
    }
    Later([this, key = Copy(key), user = std::string(user), assistant = std::string(assistant),
           done = std::move(done)] {
      memory_.Append({key.first, key.second}, user, assistant);
      done(absl::OkStatus());
    });
  }
  store::BackendStatus status() const override {
    return fail ? store::BackendStatus{store::BackendHealth::kDown, "fake: away"}
                : store::BackendStatus{store::BackendHealth::kHealthy, "fake"};
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  void ReleaseHeld() {
    std::lock_guard lock(mu_);
    hold = false;
    for (auto& f : held_) threads_.emplace_back(std::move(f));
    held_.clear();
  }

  std::atomic<bool> fail{false};
  std::atomic<bool> hold{false};

 private:
  static std::pair<std::string, std::string> Copy(const ConversationKey& key) {
    return {std::string(key.principal), std::string(key.id)};
  }
  void Later(std::function<void()> f) { threads_.emplace_back(std::move(f)); }

  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::vector<std::function<void()>> held_;
  ConversationMemory memory_{MemoryLimits{}};
};

class RouterServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    broker_server_ = *common::GrpcServer::Start("127.0.0.1:0", {&broker_}, registry_);
    broker_address_ = "127.0.0.1:" + std::to_string(broker_server_->port());
    StartRouter(broker_address_);
  }

  // `others`: the self-coding and module channels, if any.
  void StartRouter(const std::string& broker_address, Downstreams others = {}) {
    auto channel = common::MakeChannel(broker_address, nullptr);
    poller_ =
        std::make_unique<StatePoller>(std::vector<Backend>{{"llm-broker", broker_address, channel}},
                                      std::chrono::milliseconds(100000), &counters_, store_);
    Downstreams downstreams = std::move(others);
    downstreams.broker = channel;
    service_ = std::make_unique<RouterService>(downstreams, &config_, poller_.get(), &counters_,
                                               registry_, RouterOptions{}, store_);
    poller_->SetScheduler(&service_->scheduler(), config_.scheduler);
    poller_->PollOnce();
    router_server_ = *common::GrpcServer::Start("127.0.0.1:0", {service_.get()}, registry_);
    stub_ = anima::v1::Router::NewStub(
        common::MakeChannel("127.0.0.1:" + std::to_string(router_server_->port()), nullptr));
  }

  // `identity`: sent as the gateway sends it; none: the router sees the local principal.
  std::vector<Event> Dispatch(const anima::v1::Envelope& env,
                              const std::optional<common::Identity>& identity = std::nullopt) {
    grpc::ClientContext ctx;
    if (identity) common::AttachIdentity(*identity, &ctx);
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

  double Counter(const std::string& name, const std::string& label, const std::string& value) {
    double n = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != name) continue;
      for (const auto& metric : family.metric) {
        for (const auto& l : metric.label) {
          if (l.name == label && l.value == value) n += metric.counter.value;
        }
      }
    }
    return n;
  }

  ConversationStore* store_ = nullptr;  // null: the service's own in-process memory
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

TEST_F(RouterServiceTest, ChatResponsesCarryWhatTheBrokerBilled) {
  for (bool stream : {false, true}) {
    auto events = Dispatch(Chat("hello", stream, "conv-bill"));
    ASSERT_FALSE(events.empty());
    ASSERT_TRUE(events.back().has_chat_response()) << stream;
    const auto& response = events.back().chat_response();
    EXPECT_DOUBLE_EQ(response.cost_usd(), 0.25);
    EXPECT_EQ(response.billed_usage().total_tokens(), 10);
    EXPECT_EQ(response.usage().total_tokens(), 5) << "the answer's own usage is unchanged";
  }
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
  // No conversation id given: the router made one, so the client can continue it; 128 random
  // bits, so another client cannot guess it.
  const std::string& id = events[3].chat_response().conversation_id();
  ASSERT_EQ(id.size(), 5u + 32u) << id;
  EXPECT_EQ(id.rfind("conv-", 0), 0u);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 5), std::string::npos) << id;
  auto again = Dispatch(Chat("abcdef", true));
  ASSERT_FALSE(again.empty());
  EXPECT_NE(again.back().chat_response().conversation_id(), id);
}

TEST_F(RouterServiceTest, PrincipalsSharingAConversationIdNeverSeeEachOthersTurns) {
  common::Identity alice{.principal = "alice", .job_limits = {}};
  common::Identity bob{.principal = "bob", .job_limits = {}};
  Dispatch(Chat("alice secret", false, "conv-shared"), alice);
  Dispatch(Chat("bob asks", false, "conv-shared"), bob);
  ASSERT_EQ(broker_.last_request.messages_size(), 1) << "bob's conversation is new and empty";
  EXPECT_EQ(broker_.last_request.messages(0).content(), "bob asks");

  Dispatch(Chat("alice again", true, "conv-shared"), alice);
  const auto& msgs = broker_.last_request.messages();
  ASSERT_EQ(msgs.size(), 3) << "alice sees her own turn and not bob's";
  EXPECT_EQ(msgs[0].content(), "alice secret");
  EXPECT_EQ(msgs[2].content(), "alice again");

  // Without an identity the caller is the local principal: a third conversation.
  Dispatch(Chat("anonymous", false, "conv-shared"));
  EXPECT_EQ(broker_.last_request.messages_size(), 1);
}

TEST_F(RouterServiceTest, TheCallersIdentityGoesToTheBroker) {
  common::Identity carol{.principal = "carol", .admin = true, .job_limits = {2, 20}};
  Dispatch(Chat("hello", false, "c-1"), carol);
  Dispatch(Chat("hello", true, "c-1"), carol);
  for (const char* rpc : {"Complete", "StreamComplete"}) {
    auto seen = broker_.identities.Of(rpc);
    ASSERT_TRUE(seen.has_value()) << rpc;
    EXPECT_EQ(seen->principal, "carol") << rpc;
    EXPECT_TRUE(seen->admin) << rpc;
    EXPECT_EQ(seen->job_limits, (common::JobLimits{2, 20})) << rpc;
  }
  grpc::ClientContext ctx;
  common::AttachIdentity(common::Identity{.principal = "dave", .job_limits = {}}, &ctx);
  anima::v1::ListModelsResponse res;
  ASSERT_TRUE(stub_->ListModels(&ctx, anima::v1::ListModelsRequest(), &res).ok());
  ASSERT_TRUE(broker_.identities.Of("ListModels").has_value());
  EXPECT_EQ(broker_.identities.Of("ListModels")->principal, "dave");
  EXPECT_FALSE(broker_.identities.Of("ListModels")->admin);
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

  anima::v1::Envelope list;
  list.set_type("self_coding_list");
  list.mutable_self_coding_list()->set_limit(5);
  events = Dispatch(list);
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
  EXPECT_EQ(routes["self_coding_list"], Route("normal", "self-coding"));
  EXPECT_EQ(routes["word_count"], Route("low", "word-count"));
  EXPECT_EQ(routes.size(), 7u);
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

// Answers every job at once; the task "over quota" is refused as self-coding refuses a principal
// over its job quota.
class FakeSelfCoding final : public anima::v1::SelfCoding::Service {
 public:
  grpc::Status Run(grpc::ServerContext* ctx, const anima::v1::SubmitRequest* req,
                   grpc::ServerWriter<anima::v1::JobEvent>* writer) override {
    identities.Record("Run", *ctx);
    if (req->task() == "over quota") {
      anima::v1::BrokerFailure failure;
      failure.set_code("quota_exceeded");
      failure.set_message("2 jobs are already in flight");
      failure.set_limit("jobs_in_flight");
      failure.set_retry_after_ms(1500);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "quota",
                          failure.SerializeAsString());
    }
    anima::v1::JobEvent accepted;
    accepted.mutable_accepted()->set_job_id("job-1");
    writer->Write(accepted);
    writer->Write(Result("succeeded"));
    return grpc::Status::OK;
  }
  grpc::Status Watch(grpc::ServerContext* ctx, const anima::v1::WatchRequest*,
                     grpc::ServerWriter<anima::v1::JobEvent>* writer) override {
    identities.Record("Watch", *ctx);
    writer->Write(Result("succeeded"));
    return grpc::Status::OK;
  }
  grpc::Status Cancel(grpc::ServerContext* ctx, const anima::v1::CancelRequest*,
                      anima::v1::CancelResponse* res) override {
    identities.Record("Cancel", *ctx);
    *res->mutable_result() = Result("cancelled").result();
    return grpc::Status::OK;
  }

  IdentityLog identities;

 private:
  static anima::v1::JobEvent Result(const std::string& status) {
    anima::v1::JobEvent event;
    event.mutable_result()->set_job_id("job-1");
    event.mutable_result()->set_status(status);
    return event;
  }
};

// An external module that answers every request with one final event.
class FakeModule final : public anima::v1::Module::Service {
 public:
  grpc::Status Handle(grpc::ServerContext* ctx, const anima::v1::ModuleRequest* req,
                      grpc::ServerWriter<anima::v1::ModuleEvent>* writer) override {
    identities.Record("Handle", *ctx);
    anima::v1::ModuleEvent event;
    event.set_payload_json(R"({"type":"echoed"})");
    event.set_final(true);
    writer->Write(event);
    return grpc::Status::OK;
  }

  IdentityLog identities;
};

// The router with self-coding and an external module ("echo", serving the type "echo") deployed.
class RouterDownstreamsTest : public RouterServiceTest {
 protected:
  void SetUp() override {
    broker_server_ = *common::GrpcServer::Start("127.0.0.1:0", {&broker_}, registry_);
    broker_address_ = "127.0.0.1:" + std::to_string(broker_server_->port());
    self_coding_server_ = *common::GrpcServer::Start("127.0.0.1:0", {&self_coding_}, registry_);
    module_server_ = *common::GrpcServer::Start("127.0.0.1:0", {&module_}, registry_);
    std::string module_address = "127.0.0.1:" + std::to_string(module_server_->port());
    config_.modules.push_back(ModuleRoute{"echo", module_address, {"echo"}});
    Downstreams others;
    others.self_coding =
        common::MakeChannel("127.0.0.1:" + std::to_string(self_coding_server_->port()), nullptr);
    others.modules["echo"] = common::MakeChannel(module_address, nullptr);
    StartRouter(broker_address_, std::move(others));
  }

  static void ExpectIdentity(IdentityLog& log, const std::string& rpc,
                             const common::Identity& expected) {
    auto seen = log.Of(rpc);
    ASSERT_TRUE(seen.has_value()) << rpc << " was not called";
    EXPECT_EQ(seen->principal, expected.principal) << rpc;
    EXPECT_EQ(seen->admin, expected.admin) << rpc;
    EXPECT_EQ(seen->job_limits, expected.job_limits) << rpc;
  }

  FakeSelfCoding self_coding_;
  FakeModule module_;
  std::unique_ptr<common::GrpcServer> self_coding_server_;
  std::unique_ptr<common::GrpcServer> module_server_;
};

TEST_F(RouterDownstreamsTest, TheCallersIdentityGoesToSelfCodingAndModules) {
  common::Identity erin{.principal = "erin@example.com", .job_limits = {1, 5}};
  anima::v1::Envelope run;
  run.set_type("self_coding_request");
  run.mutable_self_coding()->set_task("write fizzbuzz");
  auto events = Dispatch(run, erin);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].self_coding_result().status(), "succeeded");

  anima::v1::Envelope watch;
  watch.set_type("self_coding_watch");
  watch.mutable_self_coding_watch()->set_job_id("job-1");
  events = Dispatch(watch, erin);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(events[0].has_self_coding_result());

  anima::v1::Envelope cancel;
  cancel.set_type("self_coding_cancel");
  cancel.mutable_self_coding_cancel()->set_job_id("job-1");
  events = Dispatch(cancel, erin);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].self_coding_result().status(), "cancelled");

  anima::v1::Envelope echo;
  echo.set_type("echo");
  echo.set_raw_json(R"({"type":"echo"})");
  events = Dispatch(echo, erin);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].raw_json(), R"({"type":"echoed"})");

  for (const char* rpc : {"Run", "Watch", "Cancel"})
    ExpectIdentity(self_coding_.identities, rpc, erin);
  ExpectIdentity(module_.identities, "Handle", erin);

  // A request without identity metadata acts for the local principal, not for the last caller.
  Dispatch(watch);
  ExpectIdentity(self_coding_.identities, "Watch", common::Identity{});
}

TEST_F(RouterDownstreamsTest, AJobQuotaRefusalReachesTheClientWithItsLimit) {
  anima::v1::Envelope run;
  run.set_type("self_coding_request");
  run.mutable_self_coding()->set_task("over quota");
  auto events = Dispatch(run, common::Identity{.principal = "frank", .job_limits = {}});
  ASSERT_EQ(events.size(), 1u);
  ASSERT_TRUE(events[0].has_error());
  EXPECT_EQ(events[0].error().code(), "quota_exceeded");
  EXPECT_EQ(events[0].error().limit(), "jobs_in_flight");
  EXPECT_EQ(events[0].error().retry_after_ms(), 1500);
}

TEST_F(RouterDownstreamsTest, ModuleTrafficIsCountedUnderTheModuleType) {
  anima::v1::Envelope echo;
  echo.set_type("echo");
  echo.set_raw_json(R"({"type":"echo"})");
  ASSERT_EQ(Dispatch(echo).size(), 1u);
  auto counted = [this] {
    double n = 0;
    for (const auto& family : registry_.Collect()) {
      if (family.name != "anima_router_requests_total") continue;
      for (const auto& metric : family.metric) {
        for (const auto& label : metric.label) {
          if (label.name == "type" && label.value == "module") n += metric.counter.value;
        }
      }
    }
    return n;
  };
  // The call is counted when the router's side of it is done, which may follow the client's.
  for (int i = 0; i < 5000 && counted() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(counted(), 1);
}

// The router on a store that answers on its own threads, later, as Redis does.
class RouterMemoryStoreTest : public RouterServiceTest {
 protected:
  void SetUp() override {
    store_ = &fake_;
    RouterServiceTest::SetUp();
  }
  void TearDown() override {
    router_server_->Shutdown(std::chrono::seconds(5));
    fake_.ReleaseHeld();
  }
  FakeStore fake_;
};

TEST_F(RouterMemoryStoreTest, AnAsynchronousStoreCarriesTheConversation) {
  for (bool stream : {false, true}) {
    std::string conversation = stream ? "conv-stream" : "conv-unary";
    auto first = Dispatch(Chat("one", stream, conversation));
    ASSERT_TRUE(first.back().has_chat_response());
    auto second = Dispatch(Chat("two", stream, conversation));
    ASSERT_TRUE(second.back().has_chat_response());
    const auto& msgs = broker_.last_request.messages();
    ASSERT_EQ(msgs.size(), 3) << stream;
    EXPECT_EQ(msgs[0].content(), "one");
    EXPECT_EQ(msgs[1].content(), "eno");
    EXPECT_EQ(msgs[2].content(), "two");
  }
  EXPECT_EQ(Counter("anima_router_memory_unavailable_total", "op", "history"), 0);
}

TEST_F(RouterMemoryStoreTest, AFailingStoreCostsTheMemoryNotTheChat) {
  fake_.fail = true;
  for (bool stream : {false, true}) {
    auto events = Dispatch(Chat("hello", stream, "conv-1"));
    ASSERT_FALSE(events.empty());
    ASSERT_TRUE(events.back().has_chat_response()) << "the client is told nothing false";
    EXPECT_EQ(events.back().chat_response().message(), "olleh");
    for (const auto& e : events) EXPECT_FALSE(e.has_error());
    EXPECT_EQ(broker_.last_request.messages_size(), 1);
  }
  EXPECT_EQ(Counter("anima_router_memory_unavailable_total", "op", "history"), 2);
  EXPECT_EQ(Counter("anima_router_memory_unavailable_total", "op", "append"), 2);

  poller_->PollOnce();
  auto state = poller_->Snapshot(0);
  const anima::v1::ModuleStatus* memory = nullptr;
  for (const auto& m : state.modules()) {
    if (m.name() == "router/memory") memory = &m;
  }
  ASSERT_NE(memory, nullptr);
  EXPECT_EQ(memory->kind(), "store");
  EXPECT_EQ(memory->health(), anima::v1::MODULE_HEALTH_DOWN);
  EXPECT_EQ(memory->detail(), "fake: away");

  // Back: remembered again from the next turn on.
  fake_.fail = false;
  Dispatch(Chat("again", false, "conv-1"));
  Dispatch(Chat("and again", false, "conv-1"));
  EXPECT_EQ(broker_.last_request.messages_size(), 3);
}

TEST_F(RouterMemoryStoreTest, AClientThatCancelsWhileTheStoreIsAskedEndsCleanly) {
  fake_.hold = true;
  grpc::ClientContext ctx;
  auto reader = stub_->Dispatch(&ctx, Chat("hello", false, "conv-cancel"));
  for (int i = 0; i < 5000 && fake_.held() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(fake_.held(), 1u);
  ctx.TryCancel();
  fake_.ReleaseHeld();
  Event e;
  while (reader->Read(&e)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The router is none the worse: the next chat is answered.
  auto events = Dispatch(Chat("after", false, "conv-cancel"));
  ASSERT_FALSE(events.empty());
  EXPECT_TRUE(events.back().has_chat_response());
}

TEST_F(RouterServiceTest, StateReportsTheInProcessMemory) {
  ConversationMemory memory(MemoryLimits{});
  StatePoller poller({}, std::chrono::milliseconds(100000), &counters_, &memory);
  poller.PollOnce();
  auto state = poller.Snapshot(0);
  ASSERT_EQ(state.modules_size(), 2);
  EXPECT_EQ(state.modules(1).name(), "router/memory");
  EXPECT_EQ(state.modules(1).kind(), "store");
  EXPECT_EQ(state.modules(1).health(), anima::v1::MODULE_HEALTH_HEALTHY);
  EXPECT_EQ(state.modules(1).detail(), "in-process");
}

}  // namespace
}  // namespace anima::router
