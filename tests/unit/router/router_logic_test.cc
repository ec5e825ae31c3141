#include "anima/v1/llm_broker.pb.h"
#include "gtest/gtest.h"
#include "services/router/chat_translation.h"
#include "services/router/conversation_memory.h"
#include "services/router/error_mapping.h"
#include "services/router/harmony.h"

namespace anima::router {
namespace {

anima::v1::ModuleStatus Module(anima::v1::ModuleHealth health) {
  anima::v1::ModuleStatus m;
  m.set_health(health);
  return m;
}

TEST(HarmonyTest, MeanOfModuleHealthWithProtocolThresholds) {
  using anima::v1::MODULE_HEALTH_DEGRADED;
  using anima::v1::MODULE_HEALTH_DOWN;
  using anima::v1::MODULE_HEALTH_HEALTHY;
  std::vector<anima::v1::ModuleStatus> all_ok(10, Module(MODULE_HEALTH_HEALTHY));
  EXPECT_DOUBLE_EQ(Harmony(all_ok), 1.0);
  EXPECT_STREQ(HarmonyStatus(1.0, true), "healthy");

  std::vector<anima::v1::ModuleStatus> one_degraded = all_ok;
  one_degraded[0] = Module(MODULE_HEALTH_DEGRADED);
  EXPECT_DOUBLE_EQ(Harmony(one_degraded), 0.95);
  EXPECT_STREQ(HarmonyStatus(0.95, true), "healthy");

  std::vector<anima::v1::ModuleStatus> half_down = {Module(MODULE_HEALTH_HEALTHY),
                                                    Module(MODULE_HEALTH_DOWN)};
  EXPECT_DOUBLE_EQ(Harmony(half_down), 0.5);
  EXPECT_STREQ(HarmonyStatus(0.5, true), "degraded");
  EXPECT_STREQ(HarmonyStatus(0.89, true), "degraded");
  EXPECT_STREQ(HarmonyStatus(0.49, true), "critical");
  EXPECT_DOUBLE_EQ(Harmony({}), 0.0);
  EXPECT_STREQ(HarmonyStatus(0.0, false), "critical");
}

TEST(ErrorMappingTest, BrokerFailureDetailsWin) {
  anima::v1::BrokerFailure failure;
  failure.set_code("provider_error");
  failure.set_message("every provider failed");
  auto* cause = failure.add_causes();
  cause->set_provider("openai");
  cause->set_code("http_503");
  grpc::Status status(grpc::StatusCode::UNAVAILABLE, "x", failure.SerializeAsString());
  auto error = ErrorFromStatus(status, "llm-broker");
  EXPECT_EQ(error.code(), "provider_error");
  EXPECT_EQ(error.message(), "every provider failed");
  ASSERT_EQ(error.causes_size(), 1);
  EXPECT_EQ(error.causes(0).provider(), "openai");
}

TEST(ErrorMappingTest, GrpcCodesMapToProtocolCodes) {
  EXPECT_EQ(
      ErrorFromStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"), "llm-broker").code(),
      "unavailable");
  EXPECT_NE(ErrorFromStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"), "llm-broker")
                .message()
                .find("llm-broker"),
            std::string::npos);
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, ""), "b").code(),
            "deadline_exceeded");
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::CANCELLED, ""), "b").code(),
            "cancelled");
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, ""), "b").code(),
            "invalid_message");
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::INTERNAL, ""), "b").code(), "internal");
  // Details that are not a BrokerFailure are ignored, not trusted.
  EXPECT_EQ(ErrorFromStatus(grpc::Status(grpc::StatusCode::INTERNAL, "", "\xff\xff"), "b").code(),
            "internal");
}

TEST(ConversationMemoryTest, KeepsTheLastTurnsInOrder) {
  ConversationMemory memory(
      {.max_turns = 2, .max_conversations = 10, .max_age = std::chrono::seconds(60)});
  memory.Append("c", "q1", "a1");
  memory.Append("c", "q2", "a2");
  memory.Append("c", "q3", "a3");
  auto history = memory.History("c");
  ASSERT_EQ(history.size(), 4);
  EXPECT_EQ(history[0].role(), "user");
  EXPECT_EQ(history[0].content(), "q2");
  EXPECT_EQ(history[1].role(), "assistant");
  EXPECT_EQ(history[1].content(), "a2");
  EXPECT_EQ(history[3].content(), "a3");
  EXPECT_TRUE(memory.History("other").empty());
  EXPECT_TRUE(memory.History("").empty());
}

TEST(ConversationMemoryTest, ForgetsTheLeastRecentlyUsedAndTheOld) {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  ConversationMemory memory(
      {.max_turns = 5, .max_conversations = 2, .max_age = std::chrono::seconds(60)},
      [&now] { return now; });
  memory.Append("a", "q", "r");
  memory.Append("b", "q", "r");
  memory.History("a");  // reading does not refresh: only a new turn does
  memory.Append("a", "q2", "r2");
  memory.Append("c", "q", "r");  // evicts b, the least recently used
  EXPECT_EQ(memory.size(), 2u);
  EXPECT_TRUE(memory.History("b").empty());
  EXPECT_EQ(memory.History("a").size(), 4);

  now += std::chrono::seconds(61);
  EXPECT_TRUE(memory.History("a").empty());
  EXPECT_EQ(memory.size(), 0u);
}

TEST(ChatTranslationTest, RequestCarriesHistoryThenTheNewMessage) {
  anima::v1::Envelope env;
  env.set_request_id("r-1");
  env.set_type("chat");
  auto* chat = env.mutable_chat();
  chat->set_message("and now?");
  chat->set_system("be brief");
  chat->set_provider("openai");
  chat->set_temperature(0.3);
  google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> history;
  auto* h = history.Add();
  h->set_role("user");
  h->set_content("before");
  auto req = ToCompletionRequest(env, history);
  EXPECT_EQ(req.system(), "be brief");
  EXPECT_EQ(req.provider(), "openai");
  EXPECT_TRUE(req.has_temperature());
  EXPECT_FALSE(req.has_max_tokens());
  ASSERT_EQ(req.messages_size(), 2);
  EXPECT_EQ(req.messages(0).content(), "before");
  EXPECT_EQ(req.messages(1).role(), "user");
  EXPECT_EQ(req.messages(1).content(), "and now?");
}

TEST(ChatTranslationTest, ClientHistoryReplacesMemory) {
  anima::v1::Envelope env;
  env.mutable_chat()->set_message("third");
  auto* h = env.mutable_chat()->add_history();
  h->set_role("user");
  h->set_content("first");
  h = env.mutable_chat()->add_history();
  h->set_role("assistant");
  h->set_content("second");
  google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> memory;
  memory.Add()->set_content("remembered");
  auto req = ToCompletionRequest(env, memory);
  ASSERT_EQ(req.messages_size(), 3);
  EXPECT_EQ(req.messages(0).role(), "user");
  EXPECT_EQ(req.messages(0).content(), "first");
  EXPECT_EQ(req.messages(1).role(), "assistant");
  EXPECT_EQ(req.messages(1).content(), "second");
  EXPECT_EQ(req.messages(2).content(), "third");
}

}  // namespace
}  // namespace anima::router
