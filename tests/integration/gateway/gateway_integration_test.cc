// The real anima-gateway binary against an in-process fake Router, through a real WebSocket.
#include <csignal>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using anima::testing::HttpRequest;
using anima::testing::Process;
using anima::testing::WsClient;
using Json = nlohmann::json;

// Polls `condition` until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 15s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

class GatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    router_ = testing::FakeRouter::Start();
    ASSERT_NE(router_, nullptr);
  }

  void StartGateway(std::vector<std::string> extra_args = {}) {
    std::vector<std::string> args = {"--port=0", "--metrics-port=0",
                                     "--router=127.0.0.1:" + std::to_string(router_->port()),
                                     "--log-level=debug"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    gateway_ = Process::Start(anima::testing::BinDir() + "/anima-gateway", args);
    ASSERT_NE(gateway_, nullptr);
    // Ready means the gateway has reached the router once, so the first request does not race
    // the first connection (whose connect timeout is short).
    ASSERT_TRUE(Eventually([&] {
      return HttpRequest(gateway_->port("http"), "GET", "/readyz").status == 200;
    })) << gateway_->Log();
  }

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

  std::unique_ptr<testing::FakeRouter> router_;
  std::unique_ptr<Process> gateway_;
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
  EXPECT_EQ(router_->dispatched(), 0) << "nothing invalid reaches the router";
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

TEST_F(GatewayTest, ExtraTypesReachModules) {
  StartGateway({"--extra-types=weather"});
  auto ws = Connect();
  Json reply = Exchange(*ws, R"({"type":"weather","id":"w1","city":"Oslo"})");
  EXPECT_EQ(reply["type"], "weather_result");
  EXPECT_EQ(reply["id"], "w1");
  EXPECT_EQ(reply["echo"]["city"], "Oslo");
  EXPECT_EQ(router_->last_envelope().type(), "weather");
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

}  // namespace
}  // namespace anima::gateway
