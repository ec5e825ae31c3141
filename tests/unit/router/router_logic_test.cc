#include "anima/v1/llm_broker.pb.h"
#include "gtest/gtest.h"
#include "services/common/harmony.h"
#include "services/router/chat_translation.h"
#include "services/router/conversation_memory.h"
#include "services/router/error_mapping.h"

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
  failure.set_provider_time_us(1234567);
  grpc::Status status(grpc::StatusCode::UNAVAILABLE, "x", failure.SerializeAsString());
  auto error = ErrorFromStatus(status, "llm-broker");
  EXPECT_EQ(error.code(), "provider_error");
  EXPECT_EQ(error.provider_time_us(), 1234567);  // for the gateway's admission
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

TEST(ErrorMappingTest, QuotaRefusalsCarryTheirLimitAndRetryHint) {
  anima::v1::BrokerFailure failure;
  failure.set_code("quota_exceeded");
  failure.set_message("5 jobs submitted today");
  failure.set_limit("jobs_per_day");
  failure.set_retry_after_ms(3600000);
  auto error = ErrorFromStatus(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "quota", failure.SerializeAsString()),
      "self-coding");
  EXPECT_EQ(error.code(), "quota_exceeded");
  EXPECT_EQ(error.limit(), "jobs_per_day");
  EXPECT_EQ(error.retry_after_ms(), 3600000);
  EXPECT_EQ(error.message(), "5 jobs submitted today");
  // RESOURCE_EXHAUSTED without a BrokerFailure is a full queue, not a quota.
  auto bare = ErrorFromStatus(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full"), "b");
  EXPECT_EQ(bare.code(), "overloaded");
  EXPECT_TRUE(bare.limit().empty());
}

using Limits = ConversationMemory::Limits;

TEST(ConversationMemoryTest, KeepsTheLastTurnsInOrder) {
  ConversationMemory memory({.max_turns = 2, .max_conversations = 10});
  memory.Append({"p", "c"}, "q1", "a1");
  memory.Append({"p", "c"}, "q2", "a2");
  memory.Append({"p", "c"}, "q3", "a3");
  auto history = memory.History({"p", "c"});
  ASSERT_EQ(history.size(), 4);
  EXPECT_EQ(history[0].role(), "user");
  EXPECT_EQ(history[0].content(), "q2");
  EXPECT_EQ(history[1].role(), "assistant");
  EXPECT_EQ(history[1].content(), "a2");
  EXPECT_EQ(history[3].content(), "a3");
  EXPECT_TRUE(memory.History({"p", "other"}).empty());
  EXPECT_TRUE(memory.History({"p", ""}).empty());
}

TEST(ConversationMemoryTest, TheSameIdOfTwoPrincipalsIsTwoConversations) {
  ConversationMemory memory(Limits{});
  memory.Append({"alice", "conv-1"}, "alice asks", "to alice");
  EXPECT_TRUE(memory.History({"bob", "conv-1"}).empty());
  memory.Append({"bob", "conv-1"}, "bob asks", "to bob");
  auto alice = memory.History({"alice", "conv-1"});
  auto bob = memory.History({"bob", "conv-1"});
  ASSERT_EQ(alice.size(), 2);
  ASSERT_EQ(bob.size(), 2);
  EXPECT_EQ(alice[0].content(), "alice asks");
  EXPECT_EQ(bob[0].content(), "bob asks");
  EXPECT_EQ(memory.size(), 2u);
  // No principal/id pair can be spelled as another one.
  memory.Append({"ab", "c"}, "x", "y");
  EXPECT_TRUE(memory.History({"a", "bc"}).empty());
}

TEST(ConversationMemoryTest, ForgetsTheLeastRecentlyUsedAndTheOld) {
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  ConversationMemory memory(
      {.max_turns = 5, .max_conversations = 2, .max_age = std::chrono::seconds(60)},
      [&now] { return now; });
  memory.Append({"p", "a"}, "q", "r");
  memory.Append({"p", "b"}, "q", "r");
  memory.History({"p", "a"});  // reading does not refresh: only a new turn does
  memory.Append({"p", "a"}, "q2", "r2");
  memory.Append({"p", "c"}, "q", "r");  // evicts b, the least recently used
  EXPECT_EQ(memory.size(), 2u);
  EXPECT_TRUE(memory.History({"p", "b"}).empty());
  EXPECT_EQ(memory.History({"p", "a"}).size(), 4);

  now += std::chrono::seconds(61);
  EXPECT_TRUE(memory.History({"p", "a"}).empty());
  EXPECT_EQ(memory.size(), 0u);
  EXPECT_EQ(memory.bytes(), 0u);

  // Emptied (its pool handed back to the system allocator), the memory works as before.
  memory.Append({"p", "d"}, "q", "r");
  memory.Append({"p", "d"}, "q2", "r2");
  auto history = memory.History({"p", "d"});
  ASSERT_EQ(history.size(), 4);
  EXPECT_EQ(history[2].content(), "q2");
  EXPECT_EQ(history[3].content(), "r2");
}

TEST(ConversationMemoryTest, LongMessagesAreCutWithAMarker) {
  ConversationMemory memory({.max_message_bytes = 100});
  std::string huge(1 << 20, 'x');
  memory.Append({"p", "c"}, huge, huge);
  auto history = memory.History({"p", "c"});
  ASSERT_EQ(history.size(), 2);
  for (const auto& message : history) {
    EXPECT_EQ(message.content().size(), 100u);
    EXPECT_TRUE(message.content().ends_with(ConversationMemory::kTruncatedMarker));
    EXPECT_EQ(message.content().rfind(std::string(10, 'x'), 0), 0u);
  }
  EXPECT_LT(memory.bytes(), 1000u);

  // The cut never splits a character: "é" is two bytes, and 100 - 12 bytes of marker leave an
  // even number of bytes only after whole characters.
  std::string accents;
  while (accents.size() < 200) accents += "\xc3\xa9";
  memory.Append({"p", "utf8"}, "x" + accents, "short");
  auto cut = memory.History({"p", "utf8"})[0].content();
  std::string kept = cut.substr(0, cut.size() - ConversationMemory::kTruncatedMarker.size());
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept.size() % 2, 1u) << "x, then whole two-byte characters";
  EXPECT_EQ(memory.History({"p", "utf8"})[1].content(), "short") << "short messages stay whole";
}

TEST(ConversationMemoryTest, TheByteBudgetForgetsWholeConversationsLeastRecentlyUsedFirst) {
  // Small turns: a thousand one-turn conversations fit in well under 2 KB each.
  ConversationMemory roomy({.max_conversations = 100000, .max_bytes = 2000 * 1000});
  for (int i = 0; i < 1000; ++i) {
    roomy.Append({"principal", "conv-" + std::to_string(i)}, "what is two and two?", "four");
  }
  EXPECT_EQ(roomy.size(), 1000u);

  ConversationMemory memory({.max_turns = 10, .max_bytes = 4000, .max_message_bytes = 500});
  std::string text(400, 'y');
  memory.Append({"p", "old"}, text, text);
  memory.Append({"p", "old"}, text, text);
  memory.Append({"p", "newer"}, text, text);
  EXPECT_EQ(memory.size(), 2u);
  size_t before = memory.bytes();
  // Each further turn costs ~850 bytes: the budget is reached and "old" goes, both its turns.
  memory.Append({"p", "newer"}, text, text);
  memory.Append({"p", "newer"}, text, text);
  memory.Append({"p", "newest"}, text, text);
  EXPECT_LE(memory.bytes(), 4000u);
  EXPECT_GT(memory.bytes(), before);
  EXPECT_TRUE(memory.History({"p", "old"}).empty());
  EXPECT_EQ(memory.History({"p", "newer"}).size(), 6);
  EXPECT_EQ(memory.History({"p", "newest"}).size(), 2);

  // A budget of nothing remembers nothing, and stays within it.
  ConversationMemory none({.max_bytes = 0});
  none.Append({"p", "c"}, "q", "a");
  EXPECT_TRUE(none.History({"p", "c"}).empty());
  EXPECT_EQ(none.bytes(), 0u);
}

TEST(ChatTranslationTest, ResponseCarriesWhatTheBrokerBilled) {
  anima::v1::CompletionResponse completion;
  completion.set_message("hi");
  completion.mutable_usage()->set_total_tokens(7);
  completion.set_cost_usd(0.0042);
  completion.mutable_billed_usage()->set_prompt_tokens(10);
  completion.mutable_billed_usage()->set_completion_tokens(11);
  completion.mutable_billed_usage()->set_total_tokens(21);
  auto response = ToChatResponse(completion, "conv-9");
  EXPECT_EQ(response.conversation_id(), "conv-9");
  EXPECT_EQ(response.usage().total_tokens(), 7);
  EXPECT_DOUBLE_EQ(response.cost_usd(), 0.0042);
  EXPECT_EQ(response.billed_usage().prompt_tokens(), 10);
  EXPECT_EQ(response.billed_usage().completion_tokens(), 11);
  EXPECT_EQ(response.billed_usage().total_tokens(), 21);
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
