// The real anima-gateway binary against an in-process fake Router, through a real WebSocket.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gateway/auth.h"
#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_router.h"
#include "tests/integration/gateway/gateway_over_fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using anima::testing::Eventually;
using anima::testing::HttpRequest;
using anima::testing::Process;
using anima::testing::WsClient;
using Json = nlohmann::json;

class GatewayTest : public testing::GatewayOverFakeRouterTest {
 protected:
  // A connected client that has read its welcome.
  std::unique_ptr<WsClient> Connect(const std::string& path = "/") {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(ws->Connect(gateway_->port("http"), path)) << ws->error();
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome.has_value());
    if (welcome) {
      EXPECT_EQ((*welcome)["type"], "welcome");
    }
    return ws;
  }

  // Sends `frame` and returns the next frame.
  Json Exchange(WsClient& ws, const std::string& frame) {
    EXPECT_TRUE(ws.SendText(frame)) << ws.error();
    auto reply = ws.Read();
    EXPECT_TRUE(reply.has_value()) << "no reply to " << frame;
    return reply.value_or(Json());
  }

  void ExpectError(WsClient& ws, const std::string& frame, const std::string& code,
                   const std::string& message_part = "") {
    Json reply = Exchange(ws, frame);
    EXPECT_EQ(reply["type"], "error") << frame << " -> " << reply.dump();
    EXPECT_EQ(reply["code"], code) << frame << " -> " << reply.dump();
    EXPECT_TRUE(reply["id"].is_string()) << reply.dump();
    if (!message_part.empty()) {
      EXPECT_NE(reply.value("message", "").find(message_part), std::string::npos)
          << frame << " -> " << reply.dump();
    }
  }
};

TEST_F(GatewayTest, WelcomeOnBothPaths) {
  StartGateway();
  for (const char* path : {"/", "/ws"}) {
    WsClient ws;
    ASSERT_TRUE(ws.Connect(gateway_->port("http"), path)) << ws.error();
    auto welcome = ws.Read();
    ASSERT_TRUE(welcome.has_value());
    EXPECT_EQ((*welcome)["type"], "welcome");
    EXPECT_EQ((*welcome)["session_id"].get<std::string>().rfind("s-", 0), 0u);
    EXPECT_EQ((*welcome)["protocol"], 1);
    EXPECT_EQ((*welcome)["server"], "anima-gateway/0.1.0");
    EXPECT_EQ((*welcome)["limits"], Json::parse(R"({"max_message_bytes":65536,"max_in_flight":32,
                              "messages_per_second":50})"));
  }
  WsClient other;
  EXPECT_FALSE(other.Connect(gateway_->port("http"), "/elsewhere"));
}

TEST_F(GatewayTest, PingPong) {
  StartGateway();
  auto ws = Connect();
  EXPECT_EQ(Exchange(*ws, R"({"type":"ping","id":"p1"})"),
            Json::parse(R"({"type":"pong","id":"p1"})"));
  Json assigned = Exchange(*ws, R"({"type":"ping"})");
  EXPECT_EQ(assigned["type"], "pong");
  EXPECT_EQ(assigned["id"].get<std::string>().rfind("g-", 0), 0u);
}

TEST_F(GatewayTest, ChatWithoutStream) {
  StartGateway();
  auto ws = Connect();
  Json reply =
      Exchange(*ws, R"({"type":"chat","id":"c1","message":"Hello","conversation_id":"k"})");
  EXPECT_EQ(reply["type"], "chat_response");
  EXPECT_EQ(reply["id"], "c1");
  EXPECT_EQ(reply["message"], "echo: Hello");
  EXPECT_EQ(reply["conversation_id"], "k");
  EXPECT_EQ(reply["usage"]["total_tokens"], 5);
  EXPECT_EQ(router_->last_envelope().chat().message(), "Hello");
  EXPECT_EQ(router_->last_envelope().client_id(), "c1");
  EXPECT_EQ(router_->last_envelope().session_id().rfind("s-", 0), 0u);
  EXPECT_EQ(router_->last_request_id(), router_->last_envelope().request_id());
  EXPECT_EQ(router_->last_request_id().rfind("r-", 0), 0u);
}

TEST_F(GatewayTest, ChatStreamAndOriginalFrame) {
  StartGateway();
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"s1","message":"Hi","stream":true})"));
  auto d1 = ws->Read();
  auto d2 = ws->Read();
  auto done = ws->Read();
  ASSERT_TRUE(d1 && d2 && done);
  EXPECT_EQ(*d1, Json::parse(R"({"type":"chat_delta","id":"s1","delta":"Hel","index":0})"));
  EXPECT_EQ(*d2, Json::parse(R"({"type":"chat_delta","id":"s1","delta":"lo!","index":0})"));
  EXPECT_EQ((*done)["type"], "chat_response");
  EXPECT_EQ((*done)["id"], "s1");

  // The original system's frame, without id: replies carry the assigned id.
  Json reply = Exchange(*ws, R"({"type":"chat","message":"legacy"})");
  EXPECT_EQ(reply["type"], "chat_response");
  EXPECT_EQ(reply["id"].get<std::string>().rfind("g-", 0), 0u);
}

TEST_F(GatewayTest, ManyRequestsInFlightOnOneConnection) {
  StartGateway();
  auto ws = Connect();
  constexpr int kRequests = 32;  // the default max_in_flight
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(ws->SendText(R"({"type":"chat","stream":true,"message":"m","id":"m)" +
                             std::to_string(i) + "\"}"));
  }
  std::map<std::string, std::vector<std::string>> types_by_id;
  for (int done = 0; done < kRequests;) {
    auto frame = ws->Read();
    ASSERT_TRUE(frame.has_value()) << "after " << done << " responses";
    types_by_id[(*frame)["id"]].push_back((*frame)["type"]);
    if ((*frame)["type"] == "chat_response") ++done;
  }
  ASSERT_EQ(types_by_id.size(), static_cast<size_t>(kRequests));
  for (const auto& [id, types] : types_by_id) {
    EXPECT_EQ(types, (std::vector<std::string>{"chat_delta", "chat_delta", "chat_response"})) << id;
  }
}

TEST_F(GatewayTest, ConsciousnessQueryAndSelfCoding) {
  StartGateway();
  auto ws = Connect();
  Json state = Exchange(*ws, R"({"type":"consciousness_query","id":"q1"})");
  EXPECT_EQ(state["type"], "consciousness_state");
  EXPECT_EQ(state["id"], "q1");
  EXPECT_EQ(state["modules"][0]["status"], "healthy");

  ASSERT_TRUE(ws->SendText(R"({"type":"self_coding_request","id":"j1","task":"add"})"));
  auto result = ws->ReadUntil("self_coding_result", "j1");
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ((*result)["status"], "succeeded");
  ASSERT_EQ(ws->skipped().size(), 2u);
  EXPECT_EQ(ws->skipped()[0]["type"], "self_coding_accepted");
  EXPECT_EQ(ws->skipped()[1]["type"], "self_coding_progress");
}

TEST_F(GatewayTest, BadInputKeepsTheConnectionOpen) {
  StartGateway();
  auto ws = Connect();
  ExpectError(*ws, "this is not json", "invalid_json");
  ExpectError(*ws, "[1,2]", "invalid_json");
  ExpectError(*ws, R"({"id":"x1","message":"no type"})", "invalid_message", "type");
  ExpectError(*ws, R"({"type":"ping","id":5})", "invalid_message", "id");
  ExpectError(*ws, R"({"type":"teleport","id":"t1"})", "unknown_type");
  ExpectError(*ws, R"({"type":"chat","id":"c1"})", "invalid_message", "chat.message");
  ExpectError(*ws, R"({"type":"chat","id":"c2","message":5})", "invalid_message", "chat.message");
  ExpectError(*ws, R"({"type":"self_coding_request"})", "invalid_message", "task");
  ExpectError(*ws, R"({"type":"chat","message":"x","temperature":3})", "invalid_message",
              "chat.temperature");
  ASSERT_TRUE(ws->SendBinary("\x01\x02\x03"));
  auto binary = ws->Read();
  ASSERT_TRUE(binary.has_value());
  EXPECT_EQ((*binary)["code"], "invalid_message");
  // Still open and serving.
  EXPECT_EQ(Exchange(*ws, R"({"type":"ping","id":"after"})")["type"], "pong");
  EXPECT_FALSE(ws->closed());
  // Nothing invalid reaches the router; a well-formed type it may route does (and it answers).
  EXPECT_EQ(router_->dispatched(), 1);
  EXPECT_EQ(router_->last_envelope().type(), "teleport");
  auto error_id = Exchange(*ws, R"({"type":"chat","id":"keep","message":""})")["id"];
  EXPECT_EQ(error_id, "keep");
}

TEST_F(GatewayTest, TooLargeIsAnsweredThenClosedWith1009) {
  StartGateway({"--max-message-bytes=1024"});
  auto ws = Connect();
  // Exactly at the limit is fine.
  std::string at_limit = R"({"type":"ping","id":"big","pad":")";
  at_limit += std::string(1024 - at_limit.size() - 2, 'x') + "\"}";
  ASSERT_EQ(at_limit.size(), 1024u);
  EXPECT_EQ(Exchange(*ws, at_limit)["type"], "pong");

  std::string over = R"({"type":"chat","message":")" + std::string(5000, 'x') + "\"}";
  ASSERT_TRUE(ws->SendText(over));
  auto error = ws->Read();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ((*error)["type"], "error");
  EXPECT_EQ((*error)["code"], "too_large");
  EXPECT_FALSE(ws->Read(5s).has_value());
  EXPECT_TRUE(ws->closed());
  EXPECT_EQ(ws->close_code(), 1009);
}

TEST_F(GatewayTest, SubscribeAndUnsubscribe) {
  StartGateway();
  auto ws = Connect();
  EXPECT_EQ(Exchange(*ws, R"({"type":"unsubscribe","id":"u","topics":["consciousness_state"]})"),
            Json::parse(R"({"type":"unsubscribed","id":"u","topics":["consciousness_state"]})"));
  EXPECT_EQ(Exchange(*ws, R"({"type":"subscribe","id":"s","topics":["consciousness_state"]})"),
            Json::parse(R"({"type":"subscribed","id":"s","topics":["consciousness_state"]})"));
  ExpectError(*ws, R"({"type":"subscribe","topics":["weather"]})", "invalid_message", "topics");
}

TEST_F(GatewayTest, CancelAndInFlightLimit) {
  StartGateway({"--max-in-flight=2"});
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"h1","message":"hang"})"));
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"h2","message":"hang"})"));
  ExpectError(*ws, R"({"type":"chat","id":"h3","message":"hang"})", "too_many_in_flight");
  ExpectError(*ws, R"({"type":"chat","id":"h2","message":"again"})", "invalid_message", "h2");
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 2; }));

  Json cancelled = Exchange(*ws, R"({"type":"cancel","id":"k1","target_id":"h1"})");
  EXPECT_EQ(cancelled["type"], "error");
  EXPECT_EQ(cancelled["code"], "cancelled");
  EXPECT_EQ(cancelled["id"], "h1");
  EXPECT_TRUE(Eventually([&] { return router_->cancelled() == 1; }))
      << "the cancel reaches the router";
  ExpectError(*ws, R"({"type":"cancel","id":"k2","target_id":"h1"})", "not_found");
  // A slot is free again.
  EXPECT_EQ(Exchange(*ws, R"({"type":"chat","id":"c","message":"x"})")["type"], "chat_response");

  // Closing the connection cancels what it still has in flight.
  ws->Close();
  EXPECT_TRUE(Eventually([&] { return router_->cancelled() == 2; }));
}

// Bounds on the wait for admission long enough that these tests decide when a wait ends.
const std::vector<std::string> kPatientAdmission = {"--admission-max-in-flight=1",
                                                    "--admission-queue-target-ms=60000",
                                                    "--admission-max-queue-wait-ms=600000"};

// Admission (docs/gateway.md): work over its type's limit waits in the gateway; a type's limit
// holds only that type, so high-priority chat is not held behind a low type's slots. One slot
// per type makes every wait deterministic.
TEST_F(GatewayTest, AdmissionHoldsLowWorkOverItsLimitButNeverHighWork) {
  StartGateway(kPatientAdmission);
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a1","hang":true})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a2","hang":true})"));
  // High priority goes straight through while a2 waits.
  Json chat = Exchange(*ws, R"({"type":"chat","id":"c1","message":"hi"})");
  EXPECT_EQ(chat["type"], "chat_response") << chat.dump();
  EXPECT_EQ(router_->dispatched_ids(), (std::vector<std::string>{"a1", "c1"}));
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_admission_limit{type=\"low_work\"}"], 1);
  EXPECT_EQ(m["anima_gateway_admission_waiting_sessions{type=\"low_work\"}"], 1);

  // A held request is cancelled in the gateway: it never reaches the router.
  Json cancelled = Exchange(*ws, R"({"type":"cancel","id":"k1","target_id":"a2"})");
  EXPECT_EQ(cancelled["code"], "cancelled");
  EXPECT_EQ(cancelled["id"], "a2");
  // A held request whose timeout_ms runs out is answered then, not when a slot frees.
  Json expired = Exchange(*ws, R"({"type":"low_work","id":"a3","timeout_ms":200})");
  EXPECT_EQ(expired["code"], "deadline_exceeded") << expired.dump();
  EXPECT_EQ(expired["id"], "a3");
  EXPECT_EQ(router_->dispatched_ids(), (std::vector<std::string>{"a1", "c1"}));

  // Freeing the slot lets the next low_work through.
  EXPECT_EQ(Exchange(*ws, R"({"type":"cancel","id":"k2","target_id":"a1"})")["code"], "cancelled");
  Json answered = Exchange(*ws, R"({"type":"low_work","id":"a4"})");
  EXPECT_EQ(answered["type"], "low_work_result") << answered.dump();
  EXPECT_EQ(router_->dispatched_ids(), (std::vector<std::string>{"a1", "c1", "a4"}));
  m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_admission_wait_seconds_count{priority=\"low\"}"], 2)
      << "a1 and a4 were admitted; a2 and a3 never were";
}

// Sessions waiting for one type take turns: a session with many requests held does not make
// another wait behind all of them.
TEST_F(GatewayTest, AdmissionTakesSessionsInTurn) {
  StartGateway(kPatientAdmission);
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  auto a = Connect();
  auto b = Connect();
  ASSERT_TRUE(a->SendText(R"({"type":"low_work","id":"a1","hang":true})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  for (const char* id : {"a2", "a3", "a4"}) {
    ASSERT_TRUE(a->SendText(absl::StrCat(R"({"type":"low_work","hang":true,"id":")", id, "\"}")));
  }
  // b's request arrives last, after a's three are held (pings answered in order prove it).
  EXPECT_EQ(Exchange(*a, R"({"type":"ping","id":"p"})")["type"], "pong");
  ASSERT_TRUE(b->SendText(R"({"type":"low_work","id":"b1","hang":true})"));
  EXPECT_EQ(Exchange(*b, R"({"type":"ping","id":"p"})")["type"], "pong");
  // Each cancel frees the slot for the next session in turn.
  for (const char* id : {"a1", "a2", "b1"}) {
    WsClient& owner = id[0] == 'a' ? *a : *b;
    ASSERT_TRUE(Eventually([&] {
      auto ids = router_->dispatched_ids();
      return std::find(ids.begin(), ids.end(), id) != ids.end();
    })) << id
        << " was never dispatched";
    EXPECT_EQ(Exchange(owner, absl::StrCat(R"({"type":"cancel","id":"k","target_id":")", id,
                                           "\"}"))["code"],
              "cancelled");
  }
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 4; }));
  EXPECT_EQ(router_->dispatched_ids(), (std::vector<std::string>{"a1", "a2", "b1", "a3"}))
      << "b1 went before a3 and a4";
}

// A client that makes up a new type for every frame gets unknown_type each time and creates no
// admission state or label values of its own: unlisted types all count as `other`.
TEST_F(GatewayTest, AdmissionStateStaysBoundedUnderMadeUpTypes) {
  StartGateway({"--messages-per-second=1000"});
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  auto ws = Connect();
  for (int i = 0; i < 200; ++i) {
    std::string id = "x" + std::to_string(i);
    Json reply = Exchange(*ws, absl::StrCat(R"({"type":"made-up-)", i, R"(","id":")", id, "\"}"));
    ASSERT_EQ(reply["code"], "unknown_type") << reply.dump();
    ASSERT_EQ(reply["id"], id);
  }
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  int limit_series = 0;
  for (const auto& [name, value] : m) {
    if (name.rfind("anima_gateway_admission_limit{", 0) == 0) ++limit_series;
  }
  EXPECT_EQ(limit_series, 1);
  EXPECT_EQ(m.count("anima_gateway_admission_limit{type=\"other\"}"), 1u);
  EXPECT_EQ(m["anima_gateway_admission_wait_seconds_count{priority=\"normal\"}"], 200);
}

// Past what the path serves, the gateway refuses rather than queues: once the oldest held request
// has waited past --admission-queue-target-ms a new one is refused at once, and one still held
// after --admission-max-queue-wait-ms is refused then. Both are `overloaded` with retry_after_ms
// and never reach the router; the connection stays open.
TEST_F(GatewayTest, AdmissionRefusesWhatWouldWaitTooLong) {
  StartGateway({"--admission-max-in-flight=1", "--admission-queue-target-ms=1",
                "--admission-max-queue-wait-ms=2000"});
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a1","hang":true})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a2"})"));  // held behind a1
  EXPECT_EQ(Exchange(*ws, R"({"type":"ping","id":"p1"})")["type"], "pong");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a2 has now waited past 1 ms
  Json refused = Exchange(*ws, R"({"type":"low_work","id":"a3"})");
  EXPECT_EQ(refused["code"], "overloaded") << refused.dump();
  EXPECT_EQ(refused["id"], "a3");
  EXPECT_GE(refused["retry_after_ms"].get<int64_t>(), 100) << refused.dump();
  // a2 waits until the maximum, then hears the same.
  Json waited = ws->Read().value_or(Json());
  EXPECT_EQ(waited["code"], "overloaded") << waited.dump();
  EXPECT_EQ(waited["id"], "a2");
  EXPECT_EQ(router_->dispatched_ids(), std::vector<std::string>{"a1"});
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(
      m["anima_gateway_admission_refused_total{reason=\"standing_queue\",type=\"low_work\"}"] +
          m["anima_gateway_admission_refused_total{reason=\"max_wait\",type=\"low_work\"}"],
      2);
  EXPECT_EQ(m["anima_gateway_errors_total{code=\"overloaded\"}"], 2);
  // The connection is still good, and the slot a1 holds is its own.
  EXPECT_EQ(Exchange(*ws, R"({"type":"cancel","id":"k","target_id":"a1"})")["code"], "cancelled");
  EXPECT_EQ(Exchange(*ws, R"({"type":"low_work","id":"a4"})")["type"], "low_work_result");
}

TEST_F(GatewayTest, AdmissionOffDispatchesEverythingAtOnce) {
  StartGateway({"--admission=false", "--admission-max-in-flight=1"});
  ASSERT_TRUE(Eventually([&] { return router_->routes_listed() > 0; }));
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a1","hang":true})"));
  ASSERT_TRUE(ws->SendText(R"({"type":"low_work","id":"a2","hang":true})"));
  EXPECT_TRUE(Eventually([&] { return router_->dispatched() == 2; }));
}

TEST_F(GatewayTest, OtherTypesGoToTheRouterAsRawJson) {
  StartGateway();
  auto ws = Connect();
  Json reply = Exchange(*ws, R"({"type":"weather","id":"w1","city":"Oslo"})");
  EXPECT_EQ(reply["type"], "weather_result");
  EXPECT_EQ(reply["id"], "w1");
  EXPECT_EQ(reply["echo"]["city"], "Oslo");
  EXPECT_EQ(router_->last_envelope().type(), "weather");
  EXPECT_EQ(Json::parse(router_->last_envelope().raw_json())["city"], "Oslo");
  // A name no module can have is answered by the gateway itself.
  ExpectError(*ws, R"({"type":"Weather!","id":"w2"})", "unknown_type", "Weather!");
  EXPECT_EQ(router_->dispatched(), 1);
  // The module's stream ended without an error frame: the request is over, the slot is free.
  EXPECT_EQ(Exchange(*ws, R"({"type":"ping","id":"p"})")["type"], "pong");
}

TEST_F(GatewayTest, RouterErrorsMapToProtocolCodes) {
  StartGateway();
  auto ws = Connect();
  ExpectError(*ws, R"({"type":"chat","id":"e1","message":"fail:INTERNAL"})", "internal");
  ExpectError(*ws, R"({"type":"chat","id":"e2","message":"fail:DEADLINE_EXCEEDED"})",
              "deadline_exceeded");
  ExpectError(*ws, R"({"type":"chat","id":"e3","message":"hang","timeout_ms":50})",
              "deadline_exceeded");
  ExpectError(*ws, R"({"type":"chat","id":"e4","message":"fail:OK"})", "internal");
}

TEST_F(GatewayTest, RouterDownThenBack) {
  StartGateway();
  int port = router_->port();
  auto ws = Connect();
  router_->Stop();
  router_.reset();

  ExpectError(*ws, R"({"type":"chat","id":"down","message":"hi"})", "unavailable",
              "router unavailable");
  EXPECT_TRUE(Eventually(
      [&] { return HttpRequest(gateway_->port("http"), "GET", "/readyz").status == 503; }));
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/healthz").status, 200);

  router_ = testing::FakeRouter::Start(port);
  ASSERT_NE(router_, nullptr) << "port " << port << " could not be bound again";
  int attempt = 0;
  bool answered = Eventually([&] {
    std::string id = "back" + std::to_string(attempt++);
    if (!ws->SendText(R"({"type":"chat","id":")" + id + R"(","message":"hi"})")) return false;
    auto reply = ws->Read();
    return reply && (*reply)["id"] == id && (*reply)["type"] == "chat_response";
  });
  EXPECT_TRUE(answered) << "the gateway uses the router again once it is back";
  EXPECT_TRUE(Eventually(
      [&] { return HttpRequest(gateway_->port("http"), "GET", "/readyz").status == 200; }));
}

TEST_F(GatewayTest, HttpEndpoints) {
  StartGateway();
  auto health = HttpRequest(gateway_->port("http"), "GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/nothing-here").status, 404);
}

TEST_F(GatewayTest, ServesTheConsoleWithStrictHeadersAndKeepsTheUpgradeOnSlash) {
  StartGateway();
  int port = gateway_->port("http");
  auto page = HttpRequest(port, "GET", "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.headers["content-type"], "text/html; charset=utf-8");
  EXPECT_EQ(page.headers["cache-control"], "no-cache");
  EXPECT_EQ(page.headers["x-content-type-options"], "nosniff");
  EXPECT_EQ(page.headers["x-frame-options"], "DENY");
  const std::string& csp = page.headers["content-security-policy"];
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("script-src 'self';"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe"), std::string::npos) << csp;
  EXPECT_NE(page.body.find("<script src=\"/console/console.js\""), std::string::npos);
  // No inline script: every <script> loads a file of the gateway's own.
  for (size_t at = page.body.find("<script"); at != std::string::npos;
       at = page.body.find("<script", at + 1)) {
    EXPECT_EQ(page.body.compare(at, 21, "<script src=\"/console"), 0) << page.body.substr(at, 60);
  }
  EXPECT_EQ(HttpRequest(port, "GET", "/index.html").body, page.body);

  struct Expected {
    const char* path;
    const char* type;
  };
  for (auto [path, type] : {Expected{"/console/console.js", "text/javascript; charset=utf-8"},
                            Expected{"/console/console.css", "text/css; charset=utf-8"},
                            Expected{"/console/highlight.js", "text/javascript; charset=utf-8"},
                            Expected{"/console/icon.svg", "image/svg+xml"},
                            Expected{"/console/third-party.txt", "text/plain; charset=utf-8"}}) {
    auto asset = HttpRequest(port, "GET", path);
    EXPECT_EQ(asset.status, 200) << path;
    EXPECT_EQ(asset.headers["content-type"], type) << path;
    EXPECT_FALSE(asset.body.empty()) << path;
    // Revalidation: the same ETag is answered 304 without a body.
    const std::string etag = asset.headers["etag"];
    ASSERT_EQ(etag.size(), 22u) << path << ": " << etag;
    auto again = HttpRequest(port, "GET", path, "", {{"If-None-Match", etag}});
    EXPECT_EQ(again.status, 304) << path;
    EXPECT_EQ(again.body, "") << path;
    auto head = HttpRequest(port, "HEAD", path);
    EXPECT_EQ(head.status, 200);
    EXPECT_EQ(head.body, "");
    EXPECT_EQ(head.headers["content-length"], std::to_string(asset.body.size()));
  }
  EXPECT_NE(HttpRequest(port, "GET", "/console/highlight.js").body.find("registerLanguage('cpp'"),
            std::string::npos);
  EXPECT_NE(HttpRequest(port, "GET", "/console/third-party.txt").body.find("BSD"),
            std::string::npos);
  auto config = HttpRequest(port, "GET", "/console/config.json");
  EXPECT_EQ(config.status, 200);
  EXPECT_EQ(nlohmann::json::parse(config.body)["auth_required"], false) << config.body;
  EXPECT_EQ(HttpRequest(port, "GET", "/console/nothing.js").status, 404);
  EXPECT_EQ(HttpRequest(port, "GET", "/console/../console/console.js").status, 404);
  EXPECT_EQ(HttpRequest(port, "POST", "/", "x").status, 404);

  // The WebSocket upgrade of / is unchanged.
  WsClient ws;
  ASSERT_TRUE(ws.Connect(port, "/"));
  EXPECT_TRUE(ws.ReadUntil("welcome", "", 5s));
}

TEST_F(GatewayTest, ConsoleCanBeTurnedOff) {
  StartGateway({"--console=false"});
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/").status, 404);
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/console/console.js").status, 404);
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/console/config.json").status, 404);
}

TEST_F(GatewayTest, MetricsCountConnectionsFramesAndErrors) {
  StartGateway();
  auto ws = Connect();
  Exchange(*ws, R"({"type":"ping","id":"p"})");
  Exchange(*ws, R"({"type":"chat","id":"c","message":"hi"})");
  Exchange(*ws, "not json");
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_connections"], 1);
  EXPECT_EQ(m["anima_gateway_connections_total"], 1);
  EXPECT_EQ(m["anima_gateway_frames_received_total{outcome=\"ok\",type=\"ping\"}"], 1);
  EXPECT_EQ(m["anima_gateway_frames_received_total{outcome=\"ok\",type=\"chat\"}"], 1);
  EXPECT_EQ(m["anima_gateway_frames_received_total{outcome=\"invalid_json\",type=\"other\"}"], 1);
  EXPECT_EQ(m["anima_gateway_frames_sent_total{type=\"welcome\"}"], 1);
  EXPECT_EQ(m["anima_gateway_frames_sent_total{type=\"chat_response\"}"], 1);
  EXPECT_EQ(m["anima_gateway_errors_total{code=\"invalid_json\"}"], 1);
  EXPECT_EQ(m["anima_gateway_request_seconds_count{type=\"chat\"}"], 1);
  EXPECT_GT(m.count("process_resident_memory_bytes"), 0u);
  ws->Close();
  EXPECT_TRUE(Eventually([&] {
    return anima::testing::ScrapeMetrics(gateway_->port("metrics"))["anima_gateway_connections"] ==
           0;
  }));
}

TEST_F(GatewayTest, SigtermClosesSessionsWith1001AndExitsZero) {
  StartGateway();
  auto ws = Connect();
  gateway_->Signal(SIGTERM);
  EXPECT_FALSE(ws->Read().has_value());
  EXPECT_TRUE(ws->closed());
  EXPECT_EQ(ws->close_code(), 1001);
  EXPECT_EQ(gateway_->Wait(), 0) << gateway_->Log();
}

TEST_F(GatewayTest, StateBroadcastsReachSubscribersOnly) {
  StartGateway({"--state-interval-ms=100"});
  auto quiet = Connect();
  auto listening = Connect();
  EXPECT_EQ(Exchange(*quiet,
                     R"({"type":"unsubscribe","id":"u","topics":["consciousness_state"]})")["type"],
            "unsubscribed");
  // New connections are subscribed; the count is the gateway's own, not the router's. The
  // gateway adds its own modules, the broadcaster counting its broadcasts.
  double broadcasts = -1;
  for (int i = 0; i < 3; ++i) {
    auto state = listening->Read();
    ASSERT_TRUE(state.has_value()) << gateway_->Log();
    EXPECT_EQ((*state)["type"], "consciousness_state");
    EXPECT_FALSE(state->contains("id"));
    EXPECT_EQ((*state)["load"]["connections"], 2);
    EXPECT_EQ((*state)["status"], "healthy");
    Json broadcaster;
    for (const auto& m : (*state)["modules"]) {
      if (m["name"] == "gateway/broadcaster") broadcaster = m;
    }
    ASSERT_TRUE(broadcaster.is_object()) << state->dump();
    EXPECT_EQ(broadcaster["status"], "healthy");
    EXPECT_GT(broadcaster["counters"]["broadcasts"].get<double>(), broadcasts);
    broadcasts = broadcaster["counters"]["broadcasts"].get<double>();
    EXPECT_EQ(broadcaster["counters"]["interval_ms"], 100);
  }
  EXPECT_EQ(router_->watches(), 1) << "one WatchState stream for all connections";
  // The unsubscribed connection's next frame is the answer to its own request.
  Json answer = Exchange(*quiet, R"({"type":"consciousness_query","id":"q"})");
  EXPECT_EQ(answer["type"], "consciousness_state");
  EXPECT_EQ(answer["id"], "q");
  EXPECT_EQ(answer["load"]["connections"], 2);
  // Subscribing again brings the broadcasts back.
  EXPECT_EQ(
      Exchange(*quiet, R"({"type":"subscribe","id":"s","topics":["consciousness_state"]})")["type"],
      "subscribed");
  auto state = quiet->ReadUntil("consciousness_state");
  ASSERT_TRUE(state.has_value());
  EXPECT_FALSE(state->contains("id"));
}

TEST_F(GatewayTest, StateBroadcastsResumeWhenTheRouterComesBack) {
  StartGateway({"--state-interval-ms=100"});
  auto ws = Connect();
  ASSERT_TRUE(ws->ReadUntil("consciousness_state").has_value());
  int port = router_->port();
  router_->Stop();
  router_ = testing::FakeRouter::Start(port);
  ASSERT_NE(router_, nullptr) << "port " << port << " could not be bound again";
  EXPECT_TRUE(Eventually([&] { return router_->watches() == 1; })) << gateway_->Log();
  EXPECT_TRUE(ws->ReadUntil("consciousness_state").has_value());
}

TEST_F(GatewayTest, SlowReaderIsClosedWith1008WithoutDelayingOthers) {
  StartGateway({"--max-send-queue-bytes=65536", "--max-in-flight=100", "--state-interval-ms=50"});
  auto slow = Connect();
  auto other = Connect();
  // About 64 MB of answers to a client that reads none of them: more than the socket buffers
  // hold, so the gateway's queue for it grows past the bound.
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(slow->SendText(R"({"type":"chat","id":"b)" + std::to_string(i) +
                               R"(","message":"big:1000000"})"));
  }
  ASSERT_TRUE(Eventually([&] {
    return anima::testing::ScrapeMetrics(gateway_->port(
               "metrics"))["anima_gateway_limit_hits_total{limit=\"send_queue\"}"] == 1;
  })) << gateway_->Log();
  // The other connection is served as usual meanwhile.
  other->Ignore("consciousness_state");
  EXPECT_EQ(Exchange(*other, R"({"type":"ping","id":"p"})")["type"], "pong");
  EXPECT_EQ(Exchange(*other, R"({"type":"chat","id":"c","message":"hi"})")["message"], "echo: hi");
  // What was already on its way still arrives, then the close.
  while (slow->Read(10s).has_value()) {
  }
  EXPECT_TRUE(slow->closed()) << slow->error();
  EXPECT_EQ(slow->close_code(), 1008);
}

TEST_F(GatewayTest, RateLimitAnswersWithRetryAfter) {
  StartGateway({"--messages-per-second=5"});
  auto ws = Connect();
  int limited = 0;
  Json first_limited;
  for (int i = 0; i < 20; ++i) {
    Json reply = Exchange(*ws, R"({"type":"ping","id":"r)" + std::to_string(i) + R"("})");
    if (reply["type"] == "error") {
      EXPECT_EQ(reply["code"], "rate_limited") << reply.dump();
      EXPECT_EQ(reply["id"], "r" + std::to_string(i));
      EXPECT_GT(reply["retry_after_ms"].get<int>(), 0);
      EXPECT_LE(reply["retry_after_ms"].get<int>(), 200);
      ++limited;
    }
  }
  EXPECT_GE(limited, 10) << "a burst of 20 against 5 per second";
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_limit_hits_total{limit=\"messages_per_second\"}"], limited);
  // The connection stays open, and a token comes back.
  EXPECT_TRUE(
      Eventually([&] { return Exchange(*ws, R"({"type":"ping","id":"x"})")["type"] == "pong"; }));
}

TEST_F(GatewayTest, SigtermLetsRequestsInFlightFinish) {
  StartGateway({"--drain-timeout-ms=10000"});
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"late","message":"slow:1500"})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  gateway_->Signal(SIGTERM);
  // Not ready at once, and no new connections.
  EXPECT_TRUE(Eventually(
      [&] { return HttpRequest(gateway_->port("http"), "GET", "/readyz").status != 200; }));
  WsClient late;
  EXPECT_FALSE(late.Connect(gateway_->port("http"), "/"));
  // The request in flight is answered, then the connection closes with 1001.
  auto answer = ws->Read();
  ASSERT_TRUE(answer.has_value()) << gateway_->Log();
  EXPECT_EQ((*answer)["type"], "chat_response");
  EXPECT_EQ((*answer)["id"], "late");
  EXPECT_FALSE(ws->Read().has_value());
  EXPECT_TRUE(ws->closed());
  EXPECT_EQ(ws->close_code(), 1001);
  EXPECT_EQ(gateway_->Wait(), 0) << gateway_->Log();
}

TEST_F(GatewayTest, SigtermDrainEndsAtItsDeadline) {
  StartGateway({"--drain-timeout-ms=200"});
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"h","message":"hang"})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  gateway_->Signal(SIGTERM);
  // The request the drain could not wait for is answered, not dropped: then 1001.
  auto answer = ws->Read();
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ((*answer)["type"], "error");
  EXPECT_EQ((*answer)["id"], "h");
  EXPECT_EQ((*answer)["code"], "unavailable");
  EXPECT_FALSE(ws->Read().has_value());
  EXPECT_EQ(ws->close_code(), 1001);
  EXPECT_EQ(gateway_->Wait(), 0) << gateway_->Log();
  EXPECT_TRUE(Eventually([&] { return router_->cancelled() == 1; }));
}

// A rolling update's drain with 1,000 clients connected: half with a chat in flight (answered
// within the drain), some watching a job (not waited for: told to watch again elsewhere), the
// rest idle. Every request ends with exactly one frame, every client is told 1001, and the
// gateway exits 0 once the chats are answered (the watches would hold it for its 10-minute
// drain timeout).
TEST_F(GatewayTest, DrainWithAThousandClientsAnswersEveryRequestAndClosesEveryone) {
  StartGateway({"--drain-timeout-ms=600000", "--admission=false",
                "--max-new-connections-per-second=100000", "--state-interval-ms=600000"});
  constexpr int kClients = 1000, kChatting = 500, kWatching = 20;
  std::vector<std::unique_ptr<WsClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(Connect());
    ASSERT_FALSE(::testing::Test::HasFailure()) << "client " << i << " could not connect";
  }
  for (int i = 0; i < kChatting; ++i) {
    ASSERT_TRUE(clients[i]->SendText(
        Json{{"type", "chat"}, {"id", "c" + std::to_string(i)}, {"message", "slow:1500"}}.dump()));
  }
  for (int i = kChatting; i < kChatting + kWatching; ++i) {
    ASSERT_TRUE(clients[i]->SendText(
        Json{{"type", "self_coding_watch"}, {"id", "w"}, {"job_id", "job-hang"}}.dump()));
  }
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == kChatting + kWatching; }, 20s))
      << router_->dispatched();
  gateway_->Signal(SIGTERM);
  int answered = 0, told_to_watch_again = 0, told_1001 = 0;
  for (int i = 0; i < kClients; ++i) {
    std::vector<Json> frames;
    while (auto f = clients[i]->Read(40s)) frames.push_back(*f);
    if (clients[i]->close_code() == 1001) ++told_1001;
    if (i < kChatting) {
      ASSERT_EQ(frames.size(), 1u) << "client " << i << ": one answer, nothing else";
      EXPECT_EQ(frames[0]["type"], "chat_response") << frames[0].dump();
      answered += frames[0]["type"] == "chat_response";
    } else if (i < kChatting + kWatching) {
      ASSERT_EQ(frames.size(), 1u) << "client " << i;
      EXPECT_EQ(frames[0]["code"], "unavailable") << frames[0].dump();
      EXPECT_NE(frames[0]["message"].get<std::string>().find("watch it again"), std::string::npos);
      told_to_watch_again += frames[0]["code"] == "unavailable";
    } else {
      EXPECT_TRUE(frames.empty()) << "client " << i << " got " << frames[0].dump();
    }
  }
  EXPECT_EQ(answered, kChatting);
  EXPECT_EQ(told_to_watch_again, kWatching);
  EXPECT_EQ(told_1001, kClients);
  EXPECT_EQ(gateway_->Wait(60s), 0) << "the drain waited for the job watches\n" << gateway_->Log();
}

double LimitHits(int metrics_port, const std::string& limit) {
  return anima::testing::ScrapeMetrics(
      metrics_port)["anima_gateway_limit_hits_total{limit=\"" + limit + "\"}"];
}

TEST_F(GatewayTest, ConnectionStormIsCappedAtMaxConnections) {
  StartGateway({"--max-connections=20", "--max-new-connections-per-second=100000"});
  std::vector<std::unique_ptr<WsClient>> clients;
  int accepted = 0, refused = 0;
  for (int i = 0; i < 40; ++i) {
    auto ws = std::make_unique<WsClient>();
    if (ws->Connect(gateway_->port("http"))) {
      ++accepted;
      clients.push_back(std::move(ws));
    } else {
      ++refused;
    }
  }
  EXPECT_EQ(accepted, 20);
  EXPECT_EQ(refused, 20);
  EXPECT_EQ(LimitHits(gateway_->port("metrics"), "connections"), 20);
  // The refused upgrade is a 503 an HTTP client can read.
  auto refusal = HttpRequest(gateway_->port("http"), "GET", "/", "",
                             {{"Connection", "Upgrade"},
                              {"Upgrade", "websocket"},
                              {"Sec-WebSocket-Version", "13"},
                              {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  EXPECT_EQ(refusal.status, 503);
  // The connections that got in are served; once one leaves, a new one gets in.
  auto reply = clients[0]->Read();
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["type"], "welcome");
  clients.back()->Close();
  clients.pop_back();
  EXPECT_TRUE(Eventually([&] {
    WsClient again;
    return again.Connect(gateway_->port("http"));
  }));
}

TEST_F(GatewayTest, NewConnectionsPerSecondAreLimited) {
  StartGateway({"--max-new-connections-per-second=5"});
  // The readiness polls of StartGateway were connections too (every connection counts, HTTP
  // and WebSocket): the bucket is full again after a second.
  std::this_thread::sleep_for(1200ms);
  int accepted = 0;
  for (int i = 0; i < 20; ++i) {
    WsClient ws;
    accepted += ws.Connect(gateway_->port("http"));
  }
  // A burst of one second's tokens, and at most one more refilled while the loop ran.
  EXPECT_GE(accepted, 5);
  EXPECT_LE(accepted, 6);
  EXPECT_EQ(LimitHits(gateway_->port("metrics"), "new_connections_per_second"), 20 - accepted);
  // Tokens come back.
  EXPECT_TRUE(Eventually([&] {
    WsClient ws;
    return ws.Connect(gateway_->port("http"));
  }));
}

TEST_F(GatewayTest, HandshakeTimeoutClosesSilentConnections) {
  StartGateway({"--handshake-timeout-ms=200"});
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(gateway_->port("http")));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  // Half a request line, then nothing.
  ASSERT_EQ(send(fd, "GET / HT", 8, 0), 8);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  char byte;
  EXPECT_EQ(recv(fd, &byte, 1, 0), 0) << "the gateway closes the connection";
  close(fd);
  // Counted as the session ends, which may be just after the client sees the close.
  EXPECT_TRUE(
      Eventually([&] { return LimitHits(gateway_->port("metrics"), "handshake_timeout") == 1; }));
  EXPECT_EQ(LimitHits(gateway_->port("metrics"), "handshake_timeout"), 1);
}

TEST_F(GatewayTest, IdleTimeoutPingsAndClosesSilentClients) {
  StartGateway({"--idle-timeout-ms=300"});
  auto silent = Connect();  // reads nothing from now on, so it answers no ping
  auto alive = Connect();
  // The client that reads answers the pings (its Beast stream does) and stays open.
  ASSERT_TRUE(Eventually([&] {
    EXPECT_FALSE(alive->Read(50ms).has_value());
    return LimitHits(gateway_->port("metrics"), "idle_timeout") == 1;
  })) << gateway_->Log();
  EXPECT_FALSE(silent->Read(2s).has_value());
  EXPECT_TRUE(silent->closed()) << "the gateway closed it, not a read timeout: " << silent->error();
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(alive->Read(100ms).has_value());
  EXPECT_EQ(Exchange(*alive, R"({"type":"ping","id":"p"})")["type"], "pong");
  EXPECT_EQ(LimitHits(gateway_->port("metrics"), "idle_timeout"), 1);
}

TEST_F(GatewayTest, AuthTokensOnTheUpgradeAndExpiryMidConnection) {
  char dir[] = "/tmp/anima-gateway-auth.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string tokens = std::string(dir) + "/keys.json", secret_file = std::string(dir) + "/secret";
  const std::string secret = "a-test-secret-of-some-length";
  std::ofstream(tokens)
      << R"({"principals": {"app": {}}, "keys": [{"principal": "app", "sha256": ")"
      << KeyRing::Sha256Hex("static-token") << R"("}]})";
  std::ofstream(secret_file) << secret << "\n";
  StartGateway({"--auth-keys-file=" + tokens, "--auth-jwt-secret-file=" + secret_file});
  int port = gateway_->port("http");

  // No token, a wrong token: 401 and no WebSocket.
  std::map<std::string, std::string> upgrade = {{"Connection", "Upgrade"},
                                                {"Upgrade", "websocket"},
                                                {"Sec-WebSocket-Version", "13"},
                                                {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}};
  auto refused = HttpRequest(port, "GET", "/", "", upgrade);
  EXPECT_EQ(refused.status, 401);
  // The console's page holds no data and needs no key; it learns that it must ask for one.
  EXPECT_EQ(HttpRequest(port, "GET", "/").status, 200);
  EXPECT_EQ(
      nlohmann::json::parse(HttpRequest(port, "GET", "/console/config.json").body)["auth_required"],
      true);
  EXPECT_EQ(refused.headers["www-authenticate"], "Bearer");
  WsClient nobody;
  EXPECT_FALSE(nobody.Connect(port, "/"));
  WsClient wrong;
  EXPECT_FALSE(wrong.Connect(port, "/", {{"Authorization", "Bearer not-a-token"}}));
  auto expired = Authenticator::SignHs256(R"({"exp":1000})", secret);
  WsClient late;
  EXPECT_FALSE(late.Connect(port, "/?token=" + expired));
  // Probes stay open to the load balancer.
  EXPECT_EQ(HttpRequest(port, "GET", "/healthz").status, 200);

  // A static token in the header, a JWT in the query.
  WsClient by_header;
  ASSERT_TRUE(by_header.Connect(port, "/", {{"Authorization", "Bearer static-token"}}))
      << by_header.error();
  EXPECT_EQ(by_header.Read().value_or(Json())["type"], "welcome");
  auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                 (std::chrono::system_clock::now() + 2s).time_since_epoch())
                 .count();
  std::string jwt =
      Authenticator::SignHs256(R"({"sub":"t","exp":)" + std::to_string(exp) + "}", secret);
  WsClient by_query;
  ASSERT_TRUE(by_query.Connect(port, "/ws?token=" + jwt)) << by_query.error();
  EXPECT_EQ(by_query.Read().value_or(Json())["type"], "welcome");
  EXPECT_EQ(Exchange(by_query, R"({"type":"ping","id":"p"})")["type"], "pong");

  // The JWT expires while its connection is open: unauthenticated, then 1008.
  auto error = by_query.ReadUntil("error");
  ASSERT_TRUE(error.has_value()) << gateway_->Log();
  EXPECT_EQ((*error)["code"], "unauthenticated");
  EXPECT_FALSE(by_query.Read().has_value());
  EXPECT_TRUE(by_query.closed());
  EXPECT_EQ(by_query.close_code(), 1008);
  // The static token's connection is unaffected.
  EXPECT_EQ(Exchange(by_header, R"({"type":"ping","id":"p"})")["type"], "pong");
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_auth_failures_total{reason=\"missing\"}"], 2);
  EXPECT_EQ(m["anima_gateway_auth_failures_total{reason=\"invalid\"}"], 2);
  EXPECT_EQ(m["anima_gateway_auth_failures_total{reason=\"expired\"}"], 1);
  std::remove(tokens.c_str());
  std::remove(secret_file.c_str());
  rmdir(dir);
}

TEST_F(GatewayTest, APortInUseIsAnErrorNotACrash) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::string command = anima::testing::BinDir() + "/anima-gateway --metrics-port=0 --port=" +
                        std::to_string(ntohs(addr.sin_port)) + " >/dev/null 2>&1";
  int status = std::system(command.c_str());
  close(fd);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
}

TEST_F(GatewayTest, BadAuthFilesExitTwo) {
  auto gateway =
      Process::Start(anima::testing::BinDir() + "/anima-gateway",
                     {"--port=0", "--metrics-port=0", "--auth-keys-file=/nonexistent/keys.json"});
  EXPECT_EQ(gateway, nullptr);
}

}  // namespace
}  // namespace anima::gateway
