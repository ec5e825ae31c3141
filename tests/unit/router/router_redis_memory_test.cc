// Two real anima-router processes sharing conversation memory in a real redis-server, in front
// of the real broker and simulator: a conversation continues whichever router serves its next
// turn; with Redis stopped chats are still answered (without memory), the router says so in its
// state and metrics, and memory works again once Redis is back.
//
// The simulator counts every word it is sent as a prompt token, so a turn's prompt_tokens grow
// exactly when the earlier turns came with it.
#include <grpcpp/grpcpp.h>

#include "anima/v1/router.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"
#include "tests/support/redis_server.h"

namespace anima::testing {
namespace {

struct Answer {
  bool ok = false;  // a chat_response came
  std::string conversation_id;
  int prompt_tokens = 0;
  std::string error;  // the error event's code, if one came
};

class RouterRedisMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim());
    ASSERT_TRUE(system_->StartBroker());
    for (int i = 0; i < 2; ++i) {
      auto router =
          Process::Start("anima-router", {"--port=0", "--metrics-port=0", "--poll-interval-ms=100",
                                          "--broker=" + system_->broker()->address("grpc"),
                                          "--redis=" + redis_->url()});
      ASSERT_NE(router, nullptr);
      stubs_.push_back(anima::v1::Router::NewStub(
          grpc::CreateChannel(router->address("grpc"), grpc::InsecureChannelCredentials())));
      routers_.push_back(std::move(router));
    }
  }

  static void TearDownTestSuite() {
    stubs_.clear();
    routers_.clear();
    system_.reset();
    redis_.reset();
  }

  static Answer Chat(int router, const std::string& conversation, const std::string& message) {
    anima::v1::Envelope envelope;
    envelope.set_type("chat");
    envelope.set_request_id("req-" + std::to_string(++requests_));
    envelope.mutable_chat()->set_message(message);
    envelope.mutable_chat()->set_conversation_id(conversation);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 30s);
    auto reader = stubs_[router]->Dispatch(&context, envelope);
    Answer answer;
    anima::v1::Event event;
    while (reader->Read(&event)) {
      if (event.has_chat_response()) {
        answer.ok = true;
        answer.conversation_id = event.chat_response().conversation_id();
        answer.prompt_tokens = event.chat_response().usage().prompt_tokens();
      } else if (event.has_error()) {
        answer.error = event.error().code();
      }
    }
    reader->Finish();
    return answer;
  }

  static anima::v1::ModuleStatus MemoryModule(int router) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 5s);
    anima::v1::GetStateRequest request;
    anima::v1::ConsciousnessState state;
    if (stubs_[router]->GetState(&context, request, &state).ok()) {
      for (const auto& m : state.modules()) {
        if (m.name() == "router/memory") return m;
      }
    }
    return {};
  }

  static double Metric(int router, const std::string& name) {
    auto metrics = ScrapeMetrics(routers_[router]->port("metrics"));
    auto it = metrics.find(name);
    return it == metrics.end() ? 0 : it->second;
  }

  // Two turns of a new conversation on different routers: true when the second came with the
  // first (its prompt is the first turn plus its own words).
  static bool MemorySpansRouters() {
    Answer first = Chat(0, "", "remember the word plum");
    if (!first.ok) return false;
    Answer second = Chat(1, first.conversation_id, "and now?");
    return second.ok && second.prompt_tokens > first.prompt_tokens + 3;
  }

  static inline std::unique_ptr<RedisServer> redis_;
  static inline std::unique_ptr<System> system_;
  static inline std::vector<std::unique_ptr<Process>> routers_;
  static inline std::vector<std::unique_ptr<anima::v1::Router::Stub>> stubs_;
  static inline int requests_ = 0;
};

TEST_F(RouterRedisMemoryTest, AConversationContinuesAcrossRouters) {
  Answer turn = Chat(0, "", "remember the word plum");
  ASSERT_TRUE(turn.ok) << turn.error;
  ASSERT_FALSE(turn.conversation_id.empty());
  int previous = turn.prompt_tokens;
  for (int i = 1; i <= 4; ++i) {
    Answer next = Chat(i % 2, turn.conversation_id, "and now?");
    ASSERT_TRUE(next.ok) << next.error;
    EXPECT_EQ(next.conversation_id, turn.conversation_id);
    EXPECT_GT(next.prompt_tokens, previous) << "turn " << i << " came without the earlier ones";
    previous = next.prompt_tokens;
  }
  // A stateless-looking fresh conversation is not polluted by it.
  Answer fresh = Chat(1, "", "remember the word plum");
  EXPECT_EQ(fresh.prompt_tokens, turn.prompt_tokens);

  for (int r = 0; r < 2; ++r) {
    auto m = MemoryModule(r);
    EXPECT_EQ(m.kind(), "store");
    EXPECT_EQ(m.health(), anima::v1::MODULE_HEALTH_HEALTHY) << m.detail();
    EXPECT_EQ(m.detail(), "redis 127.0.0.1:" + std::to_string(redis_->port()));
  }
}

TEST_F(RouterRedisMemoryTest, WithRedisDownChatsAreAnsweredAndMemoryComesBackWithIt) {
  Answer before = Chat(0, "", "remember the word pear");
  ASSERT_TRUE(before.ok) << before.error;

  redis_->Stop();
  for (int i = 0; i < 4; ++i) {
    Answer during = Chat(i % 2, before.conversation_id, "is anyone there");
    EXPECT_TRUE(during.ok) << "a chat failed because of Redis: " << during.error;
    EXPECT_TRUE(during.error.empty()) << during.error;
    EXPECT_EQ(during.conversation_id, before.conversation_id);
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(Eventually([&] {
      return MemoryModule(r).health() == anima::v1::MODULE_HEALTH_DOWN;
    })) << MemoryModule(r).detail();
    EXPECT_GT(Metric(r, "anima_router_memory_unavailable_total{op=\"history\"}"), 0);
    EXPECT_GT(Metric(r, "anima_router_memory_unavailable_total{op=\"append\"}"), 0);
    EXPECT_EQ(Metric(r, "anima_store_up{backend=\"redis\"}"), 0);
  }

  ASSERT_TRUE(redis_->Restart());
  EXPECT_TRUE(Eventually(MemorySpansRouters, 30s)) << "memory did not come back with Redis";
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(Eventually([&] {
      return MemoryModule(r).health() == anima::v1::MODULE_HEALTH_HEALTHY;
    })) << MemoryModule(r).detail();
    EXPECT_EQ(Metric(r, "anima_store_up{backend=\"redis\"}"), 1);
  }
  // The conversation from before the outage is still there (Stop saved it).
  Answer after = Chat(1, before.conversation_id, "and now?");
  ASSERT_TRUE(after.ok);
  EXPECT_GT(after.prompt_tokens, before.prompt_tokens + 3);
}

}  // namespace
}  // namespace anima::testing
