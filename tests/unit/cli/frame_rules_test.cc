#include "tools/cli/frame_rules.h"

#include <gtest/gtest.h>

namespace anima::cli {
namespace {

using nlohmann::json;

TEST(FrameRulesTest, DescribesSentFrames) {
  SentFrame s = DescribeSent(R"({"type":"chat","id":"c1","message":"hi"})");
  EXPECT_TRUE(s.parsed);
  EXPECT_EQ(s.type, "chat");
  EXPECT_EQ(s.id, "c1");
  EXPECT_FALSE(DescribeSent("not json").parsed);
  EXPECT_FALSE(DescribeSent("[1,2]").parsed);
  EXPECT_EQ(DescribeSent(R"({"type":"ping","id":7})").id, "");
  EXPECT_EQ(DescribeSent(R"({"type":"ping","id":")" + std::string(65, 'x') + R"("})").id, "");
  EXPECT_EQ(DescribeSent(R"({"type":"cancel","id":"x","target_id":"c1"})").target_id, "c1");
}

TEST(FrameRulesTest, ChatEndsWithItsResponseOrError) {
  const SentFrame chat = DescribeSent(R"({"type":"chat","id":"c1","message":"hi"})");
  EXPECT_FALSE(IsTerminalFor(chat, json::parse(R"({"type":"chat_delta","id":"c1","delta":"H"})")));
  EXPECT_TRUE(IsTerminalFor(chat, json::parse(R"({"type":"chat_response","id":"c1"})")));
  EXPECT_TRUE(IsTerminalFor(chat, json::parse(R"({"type":"error","id":"c1","code":"x"})")));
  EXPECT_FALSE(IsTerminalFor(chat, json::parse(R"({"type":"chat_response","id":"c2"})")));
  EXPECT_FALSE(IsTerminalFor(chat, json::parse(R"({"type":"consciousness_state"})")));
  EXPECT_FALSE(IsTerminalFor(chat, json::parse(R"({"type":"welcome"})")));
}

TEST(FrameRulesTest, EveryTerminalTypeEndsItsId) {
  const SentFrame sent = DescribeSent(R"({"type":"whatever","id":"q"})");
  for (const char* type : {"chat_response", "error", "pong", "consciousness_state",
                           "self_coding_result", "subscribed", "unsubscribed"}) {
    EXPECT_TRUE(IsTerminalFor(sent, json{{"type", type}, {"id", "q"}})) << type;
  }
  for (const char* type : {"chat_delta", "self_coding_accepted", "self_coding_progress"}) {
    EXPECT_FALSE(IsTerminalFor(sent, json{{"type", type}, {"id", "q"}})) << type;
  }
}

TEST(FrameRulesTest, SelfCodingEndsWithTheResultNotTheProgress) {
  const SentFrame job = DescribeSent(R"({"type":"self_coding_request","id":"j1","task":"t"})");
  EXPECT_FALSE(IsTerminalFor(job, json::parse(R"({"type":"self_coding_accepted","id":"j1"})")));
  EXPECT_FALSE(IsTerminalFor(job, json::parse(R"({"type":"self_coding_progress","id":"j1"})")));
  EXPECT_TRUE(IsTerminalFor(job, json::parse(R"({"type":"self_coding_result","id":"j1"})")));
}

TEST(FrameRulesTest, WithoutAnIdTheExpectedTypeOrAnErrorEndsIt) {
  const SentFrame ping = DescribeSent(R"({"type":"ping"})");
  EXPECT_TRUE(IsTerminalFor(ping, json::parse(R"({"type":"pong","id":"g-1"})")));
  EXPECT_TRUE(IsTerminalFor(ping, json::parse(R"({"type":"error","code":"rate_limited"})")));
  EXPECT_FALSE(IsTerminalFor(ping, json::parse(R"({"type":"chat_response","id":"g-1"})")));
  const SentFrame query = DescribeSent(R"({"type":"consciousness_query"})");
  EXPECT_FALSE(IsTerminalFor(query, json::parse(R"({"type":"consciousness_state"})")))
      << "a broadcast is not the answer";
  EXPECT_TRUE(IsTerminalFor(query, json::parse(R"({"type":"consciousness_state","id":"g-2"})")));
  const SentFrame unknown = DescribeSent(R"({"type":"dance"})");
  EXPECT_TRUE(IsTerminalFor(unknown, json::parse(R"({"type":"error","code":"unknown_type"})")));
}

TEST(FrameRulesTest, AModulesResultFrameEndsItsRequest) {
  const SentFrame with_id = DescribeSent(R"({"type":"word_count","id":"w","text":"a b"})");
  EXPECT_TRUE(IsTerminalFor(with_id, json::parse(R"({"type":"word_count_result","id":"w"})")));
  EXPECT_FALSE(IsTerminalFor(with_id, json::parse(R"({"type":"word_count_result","id":"x"})")));
  const SentFrame without_id = DescribeSent(R"({"type":"word_count","text":"a b"})");
  EXPECT_TRUE(IsTerminalFor(without_id, json::parse(R"({"type":"word_count_result","id":"g-3"})")));
  EXPECT_FALSE(IsTerminalFor(without_id, json::parse(R"({"type":"consciousness_state"})")));
}

TEST(FrameRulesTest, InvalidJsonEndsWithAnyError) {
  const SentFrame garbage = DescribeSent("{oops");
  EXPECT_TRUE(IsTerminalFor(garbage, json::parse(R"({"type":"error","code":"invalid_json"})")));
  EXPECT_FALSE(IsTerminalFor(garbage, json::parse(R"({"type":"pong","id":"x"})")));
}

TEST(FrameRulesTest, CancelAlsoEndsWithItsTargetsError) {
  const SentFrame cancel = DescribeSent(R"({"type":"cancel","id":"k1","target_id":"c1"})");
  EXPECT_TRUE(
      IsTerminalFor(cancel, json::parse(R"({"type":"error","id":"c1","code":"cancelled"})")));
  EXPECT_TRUE(
      IsTerminalFor(cancel, json::parse(R"({"type":"error","id":"k1","code":"not_found"})")));
  EXPECT_FALSE(IsTerminalFor(cancel, json::parse(R"({"type":"chat_response","id":"c1"})")));
}

TEST(FrameRulesTest, ReplyTypes) {
  EXPECT_EQ(TerminalReplyType("chat"), "chat_response");
  EXPECT_EQ(TerminalReplyType("ping"), "pong");
  EXPECT_EQ(TerminalReplyType("consciousness_query"), "consciousness_state");
  EXPECT_EQ(TerminalReplyType("subscribe"), "subscribed");
  EXPECT_EQ(TerminalReplyType("self_coding_watch"), "self_coding_result");
  EXPECT_EQ(TerminalReplyType("nope"), "");
}

TEST(FrameRulesTest, UnsolicitedFrames) {
  EXPECT_TRUE(IsUnsolicited(json::parse(R"({"type":"welcome","session_id":"s"})")));
  EXPECT_TRUE(IsUnsolicited(json::parse(R"({"type":"consciousness_state","harmony":1})")));
  EXPECT_FALSE(IsUnsolicited(json::parse(R"({"type":"consciousness_state","id":"q"})")));
  EXPECT_FALSE(IsUnsolicited(json::parse(R"({"type":"error","code":"invalid_json"})")));
  EXPECT_FALSE(IsUnsolicited(json::parse(R"({"type":"pong","id":"p"})")));
}

TEST(FrameRulesTest, StringFieldIsSafeOnAnyJson) {
  EXPECT_EQ(StringField(json::parse(R"({"type":5})"), "type"), "");
  EXPECT_EQ(StringField(json::parse("[1]"), "type"), "");
  EXPECT_EQ(StringField(json(), "type"), "");
  EXPECT_EQ(StringField(json::parse(R"({"type":"x"})"), "type"), "x");
}

}  // namespace
}  // namespace anima::cli
