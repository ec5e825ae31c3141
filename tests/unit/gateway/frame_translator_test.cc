#include "gateway/frame_translator.h"

#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {
namespace {

using Json = nlohmann::json;

class ParseTest : public ::testing::Test {
 protected:
  ParsedFrame Ok(const std::string& text) {
    ParseResult r = translator_.Parse(text);
    if (auto* e = std::get_if<ProtocolError>(&r)) {
      ADD_FAILURE() << "unexpected error for " << text << ": " << e->code << " " << e->message;
      return {};
    }
    return std::get<ParsedFrame>(r);
  }
  ProtocolError Err(const std::string& text) {
    ParseResult r = translator_.Parse(text);
    if (auto* f = std::get_if<ParsedFrame>(&r)) {
      ADD_FAILURE() << "expected an error for " << text << ", got type " << f->type;
      return {};
    }
    return std::get<ProtocolError>(r);
  }
  // The error must be invalid_message and its message must start with `field`.
  void ExpectFieldError(const std::string& text, const std::string& field) {
    ProtocolError e = Err(text);
    EXPECT_EQ(e.code, kInvalidMessage) << text;
    EXPECT_EQ(e.message.rfind(field + ":", 0), 0u) << text << " -> " << e.message;
  }

  FrameTranslator translator_;
};

TEST_F(ParseTest, NotJsonIsInvalidJson) {
  for (const char* text : {"", "{", "hello", "{\"type\":\"chat\",}", "{'type':'ping'}", "\xff"}) {
    ProtocolError e = Err(text);
    EXPECT_EQ(e.code, kInvalidJson) << text;
    EXPECT_EQ(e.id.rfind("g-", 0), 0u) << "errors carry an assigned id";
  }
}

TEST_F(ParseTest, NonObjectIsInvalidJson) {
  for (const char* text : {"[]", "[1,2]", "5", "\"chat\"", "null", "true"}) {
    EXPECT_EQ(Err(text).code, kInvalidJson) << text;
  }
}

TEST_F(ParseTest, DeepNestingIsRefused) {
  std::string deep =
      "{\"type\":\"ping\",\"x\":" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_EQ(Err(deep).code, kInvalidJson);
}

TEST_F(ParseTest, TypeMustBeANonEmptyString) {
  ExpectFieldError(R"({"message":"hi"})", "type");
  ExpectFieldError(R"({"type":5})", "type");
  ExpectFieldError(R"({"type":""})", "type");
  ExpectFieldError(R"({"type":null})", "type");
}

TEST_F(ParseTest, ErrorsEchoAValidId) {
  ProtocolError e = Err(R"({"id":"c1","type":"chat"})");
  EXPECT_EQ(e.id, "c1");
  EXPECT_EQ(e.type, "chat");
  EXPECT_EQ(Err(R"({"id":"c2"})").id, "c2");
}

TEST_F(ParseTest, IdMustBeAStringOf1To64Characters) {
  ExpectFieldError(R"({"type":"ping","id":5})", "id");
  ExpectFieldError(R"({"type":"ping","id":""})", "id");
  ExpectFieldError(R"({"type":"ping","id":["a"]})", "id");
  ExpectFieldError("{\"type\":\"ping\",\"id\":\"" + std::string(65, 'a') + "\"}", "id");
  EXPECT_EQ(Ok("{\"type\":\"ping\",\"id\":\"" + std::string(64, 'a') + "\"}").id,
            std::string(64, 'a'));
  EXPECT_EQ(Ok(R"({"type":"ping","id":"x"})").id, "x");
  // Characters, not bytes: 64 two-byte characters are a valid id.
  std::string wide;
  for (int i = 0; i < 64; ++i) wide += "\xc3\xa9";
  EXPECT_EQ(Ok("{\"type\":\"ping\",\"id\":\"" + wide + "\"}").id, wide);
  ExpectFieldError("{\"type\":\"ping\",\"id\":\"" + wide + "x\"}", "id");
}

TEST_F(ParseTest, MissingIdIsAssignedUniquely) {
  ParsedFrame a = Ok(R"({"type":"ping"})");
  ParsedFrame b = Ok(R"({"type":"ping","id":null})");
  EXPECT_TRUE(a.id_assigned);
  EXPECT_EQ(a.id.rfind("g-", 0), 0u);
  EXPECT_NE(a.id, b.id);
  EXPECT_FALSE(Ok(R"({"type":"ping","id":"p"})").id_assigned);
}

TEST_F(ParseTest, IllFormedTypeIsUnknownHere) {
  // Names no module can have are answered by the gateway; well-formed ones go to the router.
  for (const std::string& type : std::vector<std::string>{
           "Dance", "da nce", "dance!", std::string(65, 'a'), "t\u00e9", "a/b", "UPPER"}) {
    ProtocolError e = Err(R"({"type":")" + type + R"(","id":"d1"})");
    EXPECT_EQ(e.code, kUnknownType) << type;
    EXPECT_EQ(e.id, "d1");
  }
  ProtocolError e = Err(R"({"type":"Dance"})");
  EXPECT_NE(e.message.find("Dance"), std::string::npos);
  EXPECT_TRUE(FrameTranslator::IsWellFormedType(std::string(64, 'a')));
  EXPECT_TRUE(FrameTranslator::IsWellFormedType("a.b-c_9"));
  EXPECT_FALSE(FrameTranslator::IsWellFormedType(""));
}

TEST_F(ParseTest, PingAndConsciousnessQuery) {
  EXPECT_EQ(Ok(R"({"type":"ping"})").kind, ParsedFrame::Kind::kPing);
  ParsedFrame q = Ok(R"({"type":"consciousness_query","id":"q"})");
  EXPECT_EQ(q.kind, ParsedFrame::Kind::kRouted);
  EXPECT_TRUE(q.envelope.has_consciousness_query());
  EXPECT_EQ(q.envelope.type(), "consciousness_query");
  EXPECT_EQ(q.envelope.client_id(), "q");
}

TEST_F(ParseTest, OriginalSystemFramesStillWork) {
  ParsedFrame chat = Ok(R"({"type":"chat","message":"Hello"})");
  EXPECT_EQ(chat.envelope.chat().message(), "Hello");
  EXPECT_FALSE(chat.envelope.chat().stream());
  EXPECT_TRUE(Ok(R"({"type":"consciousness_query"})").envelope.has_consciousness_query());
  // The original dropped this one silently; now it names the missing field.
  ExpectFieldError(R"({"type":"self_coding_request"})", "self_coding_request.task");
}

TEST_F(ParseTest, ChatAllFields) {
  ParsedFrame f = Ok(R"({"type":"chat","id":"c1","message":"hi","conversation_id":"conv",
      "system":"be brief","model":"gpt-4o-mini","provider":"openai","strategy":"hedge",
      "stream":true,"temperature":0.7,"max_tokens":100,"timeout_ms":5000,"unknown":"ignored"})");
  const auto& c = f.envelope.chat();
  EXPECT_EQ(f.envelope.type(), "chat");
  EXPECT_EQ(f.envelope.client_id(), "c1");
  EXPECT_EQ(f.envelope.timeout_ms(), 5000);
  EXPECT_EQ(c.message(), "hi");
  EXPECT_EQ(c.conversation_id(), "conv");
  EXPECT_EQ(c.system(), "be brief");
  EXPECT_EQ(c.model(), "gpt-4o-mini");
  EXPECT_EQ(c.provider(), "openai");
  EXPECT_EQ(c.strategy(), "hedge");
  EXPECT_TRUE(c.stream());
  ASSERT_TRUE(c.has_temperature());
  EXPECT_DOUBLE_EQ(c.temperature(), 0.7);
  ASSERT_TRUE(c.has_max_tokens());
  EXPECT_EQ(c.max_tokens(), 100);
}

TEST_F(ParseTest, ChatOptionalFieldsMayBeAbsentOrNull) {
  ParsedFrame f = Ok(R"({"type":"chat","message":"hi","model":null,"temperature":null})");
  EXPECT_FALSE(f.envelope.chat().has_temperature());
  EXPECT_FALSE(f.envelope.chat().has_max_tokens());
  EXPECT_EQ(f.envelope.timeout_ms(), 0);
}

TEST_F(ParseTest, ChatMessageRules) {
  ExpectFieldError(R"({"type":"chat"})", "chat.message");
  ExpectFieldError(R"({"type":"chat","message":""})", "chat.message");
  ExpectFieldError(R"({"type":"chat","message":5})", "chat.message");
  ExpectFieldError(R"({"type":"chat","message":["hi"]})", "chat.message");
  EXPECT_EQ(Err(R"({"type":"chat","message":5})").message,
            "chat.message: required non-empty string");
}

TEST_F(ParseTest, ChatStringFieldsMustBeStrings) {
  for (const char* field : {"conversation_id", "system", "model", "provider"}) {
    ExpectFieldError(std::string(R"({"type":"chat","message":"hi",")") + field + R"(":1})",
                     std::string("chat.") + field);
  }
  // A configured provider name is not checked here: the broker knows its providers.
  EXPECT_EQ(Ok(R"({"type":"chat","message":"hi","provider":"ollama"})").envelope.chat().provider(),
            "ollama");
}

TEST_F(ParseTest, ChatStrategy) {
  for (const char* s : {"failover", "hedge", "race", "fanout"}) {
    EXPECT_EQ(Ok(std::string(R"({"type":"chat","message":"hi","strategy":")") + s + "\"}")
                  .envelope.chat()
                  .strategy(),
              s);
  }
  ExpectFieldError(R"({"type":"chat","message":"hi","strategy":"random"})", "chat.strategy");
  ExpectFieldError(R"({"type":"chat","message":"hi","strategy":1})", "chat.strategy");
}

TEST_F(ParseTest, ChatStream) {
  EXPECT_TRUE(Ok(R"({"type":"chat","message":"hi","stream":true})").envelope.chat().stream());
  ExpectFieldError(R"({"type":"chat","message":"hi","stream":"yes"})", "chat.stream");
  ExpectFieldError(R"({"type":"chat","message":"hi","stream":1})", "chat.stream");
}

TEST_F(ParseTest, ChatTemperature) {
  EXPECT_DOUBLE_EQ(
      Ok(R"({"type":"chat","message":"hi","temperature":0})").envelope.chat().temperature(), 0);
  EXPECT_DOUBLE_EQ(
      Ok(R"({"type":"chat","message":"hi","temperature":2})").envelope.chat().temperature(), 2);
  ExpectFieldError(R"({"type":"chat","message":"hi","temperature":2.01})", "chat.temperature");
  ExpectFieldError(R"({"type":"chat","message":"hi","temperature":-0.1})", "chat.temperature");
  ExpectFieldError(R"({"type":"chat","message":"hi","temperature":"1"})", "chat.temperature");
}

TEST_F(ParseTest, ChatMaxTokens) {
  EXPECT_EQ(Ok(R"({"type":"chat","message":"hi","max_tokens":1})").envelope.chat().max_tokens(), 1);
  EXPECT_EQ(
      Ok(R"({"type":"chat","message":"hi","max_tokens":1000000})").envelope.chat().max_tokens(),
      1000000);
  EXPECT_EQ(Ok(R"({"type":"chat","message":"hi","max_tokens":1e3})").envelope.chat().max_tokens(),
            1000);
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":0})", "chat.max_tokens");
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":1000001})", "chat.max_tokens");
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":1.5})", "chat.max_tokens");
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":-3})", "chat.max_tokens");
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":"10"})", "chat.max_tokens");
  ExpectFieldError(R"({"type":"chat","message":"hi","max_tokens":18446744073709551615})",
                   "chat.max_tokens");
}

TEST_F(ParseTest, TimeoutMs) {
  EXPECT_EQ(Ok(R"({"type":"chat","message":"hi","timeout_ms":600000})").envelope.timeout_ms(),
            600000);
  ExpectFieldError(R"({"type":"chat","message":"hi","timeout_ms":0})", "chat.timeout_ms");
  ExpectFieldError(R"({"type":"chat","message":"hi","timeout_ms":600001})", "chat.timeout_ms");
  ExpectFieldError(R"({"type":"chat","message":"hi","timeout_ms":"5"})", "chat.timeout_ms");
}

TEST_F(ParseTest, SelfCodingRequest) {
  ParsedFrame f = Ok(R"({"type":"self_coding_request","id":"j1","task":"add two numbers",
      "language":"cpp","tests":"assert add(1,2)==3","max_attempts":5,
      "files":{"a.py":"x=1","dir/b.py":""}})");
  const auto& b = f.envelope.self_coding();
  EXPECT_EQ(b.task(), "add two numbers");
  EXPECT_EQ(b.language(), "cpp");
  EXPECT_EQ(b.tests(), "assert add(1,2)==3");
  EXPECT_EQ(b.max_attempts(), 5);
  ASSERT_EQ(b.files_size(), 2);
  EXPECT_EQ(b.files().at("a.py"), "x=1");
  EXPECT_EQ(b.files().at("dir/b.py"), "");
}

TEST_F(ParseTest, SelfCodingRequestDefaults) {
  ParsedFrame f = Ok(R"({"type":"self_coding_request","task":"t"})");
  const auto& b = f.envelope.self_coding();
  EXPECT_EQ(b.language(), "python");
  EXPECT_EQ(b.max_attempts(), 3);
  EXPECT_EQ(b.files_size(), 0);
}

TEST_F(ParseTest, SelfCodingRequestRules) {
  ExpectFieldError(R"({"type":"self_coding_request"})", "self_coding_request.task");
  ExpectFieldError(R"({"type":"self_coding_request","task":""})", "self_coding_request.task");
  ExpectFieldError(R"({"type":"self_coding_request","task":1})", "self_coding_request.task");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","language":"rust"})",
                   "self_coding_request.language");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","max_attempts":0})",
                   "self_coding_request.max_attempts");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","max_attempts":6})",
                   "self_coding_request.max_attempts");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","files":["a"]})",
                   "self_coding_request.files");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","files":{"a.py":1}})",
                   "self_coding_request.files");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","files":{"":"x"}})",
                   "self_coding_request.files");
  ExpectFieldError(R"({"type":"self_coding_request","task":"t","tests":false})",
                   "self_coding_request.tests");
}

TEST_F(ParseTest, SelfCodingWatch) {
  ParsedFrame f = Ok(R"({"type":"self_coding_watch","job_id":"job-1","after_seq":4})");
  EXPECT_EQ(f.envelope.self_coding_watch().job_id(), "job-1");
  EXPECT_EQ(f.envelope.self_coding_watch().after_seq(), 4);
  EXPECT_EQ(
      Ok(R"({"type":"self_coding_watch","job_id":"j"})").envelope.self_coding_watch().after_seq(),
      0);
  ExpectFieldError(R"({"type":"self_coding_watch"})", "self_coding_watch.job_id");
  ExpectFieldError(R"({"type":"self_coding_watch","job_id":"j","after_seq":-1})",
                   "self_coding_watch.after_seq");
  ExpectFieldError(R"({"type":"self_coding_watch","job_id":"j","after_seq":1.5})",
                   "self_coding_watch.after_seq");
}

TEST_F(ParseTest, SelfCodingCancel) {
  EXPECT_EQ(Ok(R"({"type":"self_coding_cancel","job_id":"job-1"})")
                .envelope.self_coding_cancel()
                .job_id(),
            "job-1");
  ExpectFieldError(R"({"type":"self_coding_cancel"})", "self_coding_cancel.job_id");
  ExpectFieldError(R"({"type":"self_coding_cancel","job_id":7})", "self_coding_cancel.job_id");
}

TEST_F(ParseTest, SelfCodingList) {
  ParsedFrame f = Ok(R"({"type":"self_coding_list","limit":5,"status":"running","all":true})");
  EXPECT_EQ(f.kind, ParsedFrame::Kind::kRouted);
  EXPECT_EQ(f.envelope.self_coding_list().limit(), 5);
  EXPECT_EQ(f.envelope.self_coding_list().status(), "running");
  EXPECT_TRUE(f.envelope.self_coding_list().all_principals());
  ParsedFrame d = Ok(R"({"type":"self_coding_list"})");
  EXPECT_TRUE(d.envelope.has_self_coding_list());
  EXPECT_EQ(d.envelope.self_coding_list().limit(), 20);
  EXPECT_EQ(d.envelope.self_coding_list().status(), "");
  EXPECT_FALSE(d.envelope.self_coding_list().all_principals());
  ExpectFieldError(R"({"type":"self_coding_list","limit":0})", "self_coding_list.limit");
  ExpectFieldError(R"({"type":"self_coding_list","limit":101})", "self_coding_list.limit");
  ExpectFieldError(R"({"type":"self_coding_list","limit":"5"})", "self_coding_list.limit");
  ExpectFieldError(R"({"type":"self_coding_list","status":"done"})", "self_coding_list.status");
  ExpectFieldError(R"({"type":"self_coding_list","all":"yes"})", "self_coding_list.all");
}

TEST_F(ParseTest, SubscribeAndUnsubscribe) {
  ParsedFrame s = Ok(R"({"type":"subscribe","topics":["consciousness_state"]})");
  EXPECT_EQ(s.kind, ParsedFrame::Kind::kSubscribe);
  EXPECT_EQ(s.topics, std::vector<std::string>{"consciousness_state"});
  ParsedFrame u =
      Ok(R"({"type":"unsubscribe","topics":["consciousness_state","consciousness_state"]})");
  EXPECT_EQ(u.kind, ParsedFrame::Kind::kUnsubscribe);
  EXPECT_EQ(u.topics.size(), 1u);
  ExpectFieldError(R"({"type":"subscribe"})", "subscribe.topics");
  ExpectFieldError(R"({"type":"subscribe","topics":[]})", "subscribe.topics");
  ExpectFieldError(R"({"type":"subscribe","topics":"consciousness_state"})", "subscribe.topics");
  ExpectFieldError(R"({"type":"subscribe","topics":[1]})", "subscribe.topics");
  ExpectFieldError(R"({"type":"unsubscribe","topics":["weather"]})", "unsubscribe.topics");
}

TEST_F(ParseTest, Cancel) {
  ParsedFrame c = Ok(R"({"type":"cancel","id":"x","target_id":"c1"})");
  EXPECT_EQ(c.kind, ParsedFrame::Kind::kCancel);
  EXPECT_EQ(c.target_id, "c1");
  ExpectFieldError(R"({"type":"cancel"})", "cancel.target_id");
  ExpectFieldError(R"({"type":"cancel","target_id":""})", "cancel.target_id");
  ExpectFieldError("{\"type\":\"cancel\",\"target_id\":\"" + std::string(65, 'a') + "\"}",
                   "cancel.target_id");
}

TEST_F(ParseTest, OtherWellFormedTypesAreRoutedAsRawJson) {
  ParsedFrame f = Ok(R"({"type":"weather","city":"Oslo","timeout_ms":100})");
  EXPECT_EQ(f.kind, ParsedFrame::Kind::kRouted);
  EXPECT_EQ(f.envelope.type(), "weather");
  EXPECT_EQ(f.envelope.timeout_ms(), 100);
  ASSERT_EQ(f.envelope.body_case(), anima::v1::Envelope::kRawJson);
  Json raw = Json::parse(f.envelope.raw_json());
  EXPECT_EQ(raw["city"], "Oslo");
  EXPECT_EQ(raw["id"], f.id) << "the module sees the id replies will carry";
  EXPECT_TRUE(Ok(R"({"type":"chat","message":"m"})").envelope.has_chat());
  // Any well-formed name: the router decides whether a module handles it.
  ParsedFrame t = Ok(R"({"type":"teleport"})");
  EXPECT_EQ(t.envelope.type(), "teleport");
  EXPECT_EQ(Json::parse(t.envelope.raw_json())["type"], "teleport");
  EXPECT_EQ(Ok("{\"type\":\"" + std::string(64, 'x') + "\"}").envelope.body_case(),
            anima::v1::Envelope::kRawJson);
  // A routed external type still has its fields checked where the gateway owns them.
  EXPECT_EQ(Err(R"({"type":"weather","timeout_ms":-1})").code, kInvalidMessage);
}

// --- Render -------------------------------------------------------------------------------------

Json RenderJson(const anima::v1::Event& e, const std::string& id) {
  return Json::parse(FrameTranslator::Render(e, id).text);
}

TEST(RenderTest, ChatDelta) {
  anima::v1::Event e;
  e.mutable_chat_delta()->set_delta("Hel");
  RenderedFrame f = FrameTranslator::Render(e, "c1");
  EXPECT_EQ(f.text, R"({"type":"chat_delta","id":"c1","delta":"Hel","index":0})");
  EXPECT_EQ(f.type, "chat_delta");
  EXPECT_FALSE(f.terminal);
}

TEST(RenderTest, ChatResponseMinimal) {
  anima::v1::Event e;
  auto* r = e.mutable_chat_response();
  r->set_message("Hello!");
  r->set_provider("openai");
  r->set_model("gpt-4o-mini");
  r->set_finish_reason("stop");
  RenderedFrame f = FrameTranslator::Render(e, "c1");
  EXPECT_TRUE(f.terminal);
  EXPECT_EQ(f.text, R"({"type":"chat_response","id":"c1","message":"Hello!","provider":"openai",)"
                    R"("model":"gpt-4o-mini","finish_reason":"stop","latency_ms":0})");
}

TEST(RenderTest, ChatResponseFull) {
  anima::v1::Event e;
  auto* r = e.mutable_chat_response();
  r->set_conversation_id("conv-1");
  r->set_message("Hello!");
  r->set_provider("openai");
  r->set_model("gpt-4o-mini");
  r->set_finish_reason("stop");
  r->mutable_usage()->set_prompt_tokens(12);
  r->mutable_usage()->set_completion_tokens(3);
  r->mutable_usage()->set_total_tokens(15);
  r->set_latency_ms(412);
  EXPECT_EQ(FrameTranslator::Render(e, "c1").text,
            R"({"type":"chat_response","id":"c1","conversation_id":"conv-1","message":"Hello!",)"
            R"("provider":"openai","model":"gpt-4o-mini","finish_reason":"stop",)"
            R"("usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15},)"
            R"("latency_ms":412})");
}

TEST(RenderTest, ChatResponseCandidates) {
  anima::v1::Event e;
  auto* r = e.mutable_chat_response();
  r->set_message("a");
  auto* ok = r->add_candidates();
  ok->set_provider("openai");
  ok->set_model("m");
  ok->set_message("a");
  ok->set_finish_reason("stop");
  ok->mutable_usage()->set_total_tokens(2);
  ok->set_latency_ms(10);
  auto* bad = r->add_candidates();
  bad->set_provider("gemini");
  bad->mutable_error()->set_code("http_429");
  bad->mutable_error()->set_message("quota");
  Json j = RenderJson(e, "c1");
  ASSERT_EQ(j["candidates"].size(), 2u);
  EXPECT_EQ(j["candidates"][0],
            Json::parse(R"({"provider":"openai","model":"m","message":"a","finish_reason":"stop",
                "usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":2},
                "latency_ms":10})"));
  EXPECT_EQ(j["candidates"][1],
            Json::parse(R"({"provider":"gemini","error":{"code":"http_429","message":"quota"}})"));
}

TEST(RenderTest, SelfCodingJobs) {
  anima::v1::Event e;
  auto* job = e.mutable_self_coding_jobs()->add_jobs();
  job->set_job_id("job-1");
  job->set_status("failed");
  // 199 ASCII characters, then two-byte characters: the cut keeps whole characters.
  job->set_task(std::string(199, 'a') + "ééé");
  job->set_language("python");
  job->set_attempts(3);
  job->set_last_seq(17);
  job->set_created_at("2026-12-03T10:00:00.000Z");
  job->set_updated_at("2026-12-03T10:01:00.000Z");
  job->set_principal("alice");
  job->mutable_result()->set_reason("tests failed after 3 attempts");
  job->mutable_result()->mutable_files()->insert({"solution.py", "print(1)"});
  e.mutable_self_coding_jobs()->add_jobs()->set_job_id("job-0");
  RenderedFrame f = FrameTranslator::Render(e, "l1");
  EXPECT_TRUE(f.terminal);
  EXPECT_EQ(f.type, "self_coding_jobs");
  Json j = Json::parse(f.text);
  ASSERT_EQ(j["jobs"].size(), 2u);
  const Json& first = j["jobs"][0];
  EXPECT_EQ(first["job_id"], "job-1");
  EXPECT_EQ(first["task"], std::string(199, 'a') + "é…");
  EXPECT_EQ(first["reason"], "tests failed after 3 attempts");
  EXPECT_EQ(first["last_seq"], 17);
  EXPECT_EQ(first["principal"], "alice");
  EXPECT_FALSE(first.contains("files"));
  EXPECT_FALSE(j["jobs"][1].contains("reason"));
  anima::v1::Event empty;
  empty.mutable_self_coding_jobs();
  EXPECT_EQ(FrameTranslator::Render(empty, "l2").text,
            R"({"type":"self_coding_jobs","id":"l2","jobs":[]})");
}

TEST(RenderTest, Error) {
  anima::v1::Event e;
  e.mutable_error()->set_code("rate_limited");
  e.mutable_error()->set_message("slow down");
  EXPECT_EQ(FrameTranslator::Render(e, "c1").text,
            R"({"type":"error","id":"c1","code":"rate_limited","message":"slow down"})");
  e.mutable_error()->set_retry_after_ms(200);
  EXPECT_EQ(RenderJson(e, "c1")["retry_after_ms"], 200);
  auto* cause = e.mutable_error()->add_causes();
  cause->set_provider("openai");
  cause->set_code("http_500");
  cause->set_message("boom");
  cause->set_http_status(500);
  Json j = RenderJson(e, "c1");
  EXPECT_EQ(j["causes"], Json::parse(R"([{"provider":"openai","code":"http_500",
      "message":"boom","http_status":500}])"));
  EXPECT_TRUE(FrameTranslator::Render(e, "c1").terminal);
}

TEST(RenderTest, ErrorWithoutCodeIsInternal) {
  anima::v1::Event e;
  e.mutable_error()->set_message("?");
  EXPECT_EQ(RenderJson(e, "c1")["code"], "internal");
}

TEST(RenderTest, ConsciousnessState) {
  anima::v1::Event e;
  auto* s = e.mutable_consciousness_state();
  s->set_ts("2026-11-25T10:00:00.000Z");
  s->set_harmony(0.75);
  s->set_status("degraded");
  auto* m = s->add_modules();
  m->set_name("llm-broker/openai");
  m->set_service("llm-broker");
  m->set_kind("provider");
  m->set_health(anima::v1::MODULE_HEALTH_HEALTHY);
  m->set_in_flight(2);
  m->set_requests_per_second(1.5);
  m->set_error_rate(0);
  m->set_p95_ms(840);
  m->set_last_active("2026-11-25T09:59:59.000Z");
  auto* d = s->add_modules();
  d->set_name("self-coding");
  d->set_health(anima::v1::MODULE_HEALTH_DEGRADED);
  d->set_detail("slow");
  s->add_modules()->set_health(anima::v1::MODULE_HEALTH_DOWN);
  s->add_modules()->set_health(anima::v1::MODULE_HEALTH_UNSPECIFIED);
  s->mutable_load()->set_connections(12);
  (*s->mutable_load()->mutable_queue_depth())["normal"] = 3;
  s->mutable_load()->set_cpu_percent(7.5);
  s->mutable_load()->set_rss_bytes(41943040);
  RenderedFrame f = FrameTranslator::Render(e, "q1");
  EXPECT_TRUE(f.terminal);
  Json j = Json::parse(f.text);
  EXPECT_EQ(j["type"], "consciousness_state");
  EXPECT_EQ(j["id"], "q1");
  EXPECT_EQ(j["harmony"], 0.75);
  EXPECT_EQ(j["status"], "degraded");
  EXPECT_EQ(j["modules"][0], Json::parse(R"({"name":"llm-broker/openai","service":"llm-broker",
      "kind":"provider","status":"healthy","in_flight":2,"requests_per_second":1.5,
      "error_rate":0.0,"p95_ms":840.0,"last_active":"2026-11-25T09:59:59.000Z"})"));
  EXPECT_EQ(j["modules"][1]["status"], "degraded");
  EXPECT_EQ(j["modules"][1]["detail"], "slow");
  EXPECT_EQ(j["modules"][2]["status"], "down");
  EXPECT_EQ(j["modules"][3]["status"], "down");
  EXPECT_EQ(j["load"], Json::parse(R"({"connections":12,"queue_depth":{"high":0,"normal":3,
      "low":0},"cpu_percent":7.5,"rss_bytes":41943040})"));
}

TEST(RenderTest, BroadcastStateHasNoId) {
  anima::v1::Event e;
  e.mutable_consciousness_state()->set_status("healthy");
  EXPECT_FALSE(RenderJson(e, "").contains("id"));
}

TEST(RenderTest, SelfCodingEvents) {
  anima::v1::Event accepted;
  accepted.mutable_self_coding_accepted()->set_job_id("job-1");
  EXPECT_EQ(FrameTranslator::Render(accepted, "j1").text,
            R"({"type":"self_coding_accepted","id":"j1","job_id":"job-1"})");
  EXPECT_FALSE(FrameTranslator::Render(accepted, "j1").terminal);

  anima::v1::Event progress;
  auto* p = progress.mutable_self_coding_progress();
  p->set_job_id("job-1");
  p->set_seq(4);
  p->set_stage("testing");
  p->set_attempt(1);
  p->set_percent(70);
  p->set_message("running 5 tests");
  p->set_ts("2026-11-25T10:00:03.120Z");
  EXPECT_EQ(FrameTranslator::Render(progress, "j1").text,
            R"({"type":"self_coding_progress","id":"j1","job_id":"job-1","seq":4,)"
            R"("stage":"testing","attempt":1,"percent":70,"message":"running 5 tests",)"
            R"("ts":"2026-11-25T10:00:03.120Z"})");

  anima::v1::Event result;
  auto* r = result.mutable_self_coding_result();
  r->set_job_id("job-1");
  r->set_status("succeeded");
  r->set_attempts(2);
  (*r->mutable_files())["solution.py"] = "print(1)";
  r->mutable_tests()->set_passed(5);
  r->mutable_tests()->set_output_tail("ok");
  r->mutable_usage()->set_prompt_tokens(900);
  r->mutable_usage()->set_completion_tokens(420);
  r->mutable_usage()->set_total_tokens(1320);
  RenderedFrame f = FrameTranslator::Render(result, "j1");
  EXPECT_TRUE(f.terminal);
  EXPECT_EQ(f.text,
            R"({"type":"self_coding_result","id":"j1","job_id":"job-1","status":"succeeded",)"
            R"js("attempts":2,"files":{"solution.py":"print(1)"},)js"
            R"("tests":{"passed":5,"failed":0,"output_tail":"ok"},)"
            R"("usage":{"prompt_tokens":900,"completion_tokens":420,"total_tokens":1320}})");

  r->set_status("failed");
  r->set_reason("interrupted");
  EXPECT_EQ(RenderJson(result, "j1")["reason"], "interrupted");
}

TEST(RenderTest, ModuleFrames) {
  anima::v1::Event e;
  e.set_raw_json(R"({"type":"weather_report","temp":3})");
  RenderedFrame f = FrameTranslator::Render(e, "w1");
  EXPECT_EQ(f.type, "module");
  EXPECT_FALSE(f.terminal);
  EXPECT_EQ(Json::parse(f.text), Json::parse(R"({"type":"weather_report","temp":3,"id":"w1"})"));

  e.set_raw_json("[1]");
  f = FrameTranslator::Render(e, "w1");
  EXPECT_TRUE(f.terminal);
  EXPECT_EQ(Json::parse(f.text)["code"], "internal");
}

TEST(RenderTest, EmptyEventIsInternal) {
  RenderedFrame f = FrameTranslator::Render(anima::v1::Event(), "x");
  EXPECT_TRUE(f.terminal);
  EXPECT_EQ(Json::parse(f.text)["code"], "internal");
}

// The admission judges the path by the round trip without the providers' time, which the
// answer carries but the client never sees.
TEST(RenderTest, TheProviderTimeIsTakenOffTheRoundTripAndNotRendered) {
  using std::chrono::milliseconds;
  const auto dispatched = std::chrono::steady_clock::time_point{} + milliseconds(1000);
  const auto now = dispatched + milliseconds(900);
  anima::v1::Event answer;
  answer.mutable_chat_response()->set_message("hi");
  answer.mutable_chat_response()->set_provider_time_us(850000);
  EXPECT_EQ(FrameTranslator::WithoutProviderTime(dispatched, now, answer),
            dispatched + milliseconds(850));
  EXPECT_EQ(FrameTranslator::Render(answer, "1").text.find("provider_time"), std::string::npos);
  anima::v1::Event failed;
  failed.mutable_error()->set_code("provider_error");
  failed.mutable_error()->set_provider_time_us(5000000);  // never past now (clocks differ)
  EXPECT_EQ(FrameTranslator::WithoutProviderTime(dispatched, now, failed), now);
  EXPECT_EQ(FrameTranslator::Render(failed, "1").text.find("provider_time"), std::string::npos);
  anima::v1::Event module;
  module.set_raw_json(R"({"type":"word_count_result"})");
  EXPECT_EQ(FrameTranslator::WithoutProviderTime(dispatched, now, module), dispatched);
}

TEST(RenderTest, InvalidUtf8FromAProviderIsReplaced) {
  anima::v1::Event e;
  e.mutable_chat_delta()->set_delta("a\xff");
  Json j = RenderJson(e, "c");
  EXPECT_EQ(j["delta"], "a\xEF\xBF\xBD");
}

TEST(RenderTest, GatewayFrames) {
  EXPECT_EQ(FrameTranslator::RenderPong("p1"), R"({"type":"pong","id":"p1"})");
  EXPECT_EQ(FrameTranslator::RenderError(ProtocolError{"invalid_json", "bad", "g-1", ""}),
            R"({"type":"error","id":"g-1","code":"invalid_json","message":"bad"})");
  EXPECT_EQ(FrameTranslator::RenderTopics("subscribed", "s1", {"consciousness_state"}),
            R"({"type":"subscribed","id":"s1","topics":["consciousness_state"]})");
  EXPECT_EQ(FrameTranslator::RenderWelcome("s-abc", "local", false, {}),
            R"({"type":"welcome","session_id":"s-abc","protocol":1,)"
            R"("server":"anima-gateway/0.1.0","principal":"local","role":"user","limits":{)"
            R"("max_message_bytes":65536,"max_in_flight":32,"messages_per_second":50}})");
  EXPECT_NE(FrameTranslator::RenderWelcome("s-abc", "ops", true, {}).find(R"("role":"admin")"),
            std::string::npos);
}

TEST(FrameTranslatorTest, UsageQueryAndQuotaFrames) {
  FrameTranslator t;
  auto own = std::get<ParsedFrame>(t.Parse(R"({"type":"usage_query","id":"u1"})"));
  EXPECT_EQ(own.kind, ParsedFrame::Kind::kUsageQuery);
  EXPECT_EQ(own.principal, "");
  auto other = std::get<ParsedFrame>(t.Parse(R"({"type":"usage_query","principal":"acme"})"));
  EXPECT_EQ(other.principal, "acme");
  auto bad = std::get<ProtocolError>(t.Parse(R"({"type":"usage_query","id":"u","principal":7})"));
  EXPECT_EQ(bad.code, "invalid_message");
  EXPECT_NE(bad.message.find("principal"), std::string::npos);
  auto huge = std::get<ProtocolError>(
      t.Parse(R"({"type":"usage_query","principal":")" + std::string(500, 'a') + R"("})"));
  EXPECT_EQ(huge.code, "invalid_message");

  QuotaRefusal refusal{"tokens_per_day", std::chrono::milliseconds(1234), true, "used up"};
  EXPECT_EQ(FrameTranslator::RenderQuotaExceeded(refusal, "c1"),
            R"({"type":"error","id":"c1","code":"quota_exceeded","message":"used up",)"
            R"("limit":"tokens_per_day","retry_after_ms":1234})");

  UsageReport report;
  report.principal = "acme";
  report.tier = "pro";
  report.limits.push_back(UsageEntry{"requests_per_minute", "minute", 60, 2, 58,
                                     std::chrono::system_clock::from_time_t(1796256000)});
  report.limits.push_back(UsageEntry{"cost_per_month", "month", 5, 0.25, 4.75, std::nullopt});
  report.day = {3, 120, 0.25};
  report.month = {3, 120, 0.25};
  report.day_resets_at = std::chrono::system_clock::from_time_t(1796256000);
  report.month_resets_at = std::chrono::system_clock::from_time_t(1798761600);
  auto usage = nlohmann::json::parse(FrameTranslator::RenderUsage(report, "u1"));
  EXPECT_EQ(usage["type"], "usage");
  EXPECT_EQ(usage["id"], "u1");
  EXPECT_EQ(usage["principal"], "acme");
  EXPECT_EQ(usage["limits"][0]["limit"], "requests_per_minute");
  EXPECT_EQ(usage["limits"][0]["used"], 2);
  EXPECT_EQ(usage["limits"][0]["remaining"], 58);
  EXPECT_EQ(usage["limits"][0]["resets_at"], "2026-12-03T00:00:00.000Z");
  EXPECT_DOUBLE_EQ(usage["limits"][1]["remaining"].get<double>(), 4.75);
  EXPECT_TRUE(usage["limits"][1]["resets_at"].is_null());
  EXPECT_EQ(usage["day"]["tokens"], 120);
  EXPECT_EQ(usage["month"]["resets_at"], "2027-01-01T00:00:00.000Z");
}

}  // namespace
}  // namespace anima::gateway
