// Principals, quotas and browser safety at the real anima-gateway binary, in front of the fake
// Router, over both front doors (WebSocket and the OpenAI-compatible HTTP API).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/principals.h"
#include "gtest/gtest.h"
#include "tests/integration/gateway/gateway_over_fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::gateway {
namespace {

using namespace std::chrono_literals;
using anima::testing::Eventually;
using anima::testing::HttpRequest;
using anima::testing::HttpResponse;
using anima::testing::WsClient;
using Json = nlohmann::json;

class TenantsTest : public testing::GatewayOverFakeRouterTest {
 protected:
  void SetUp() override {
    GatewayOverFakeRouterTest::SetUp();
    char dir[] = "/tmp/anima-tenants.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    keys_file_ = dir_ + "/keys.json";
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // Alice (tier small), Bob (tier small) and an admin, each with one key.
  void WriteKeys(const Json& small_tier, const std::string& alice_key = "key-alice") {
    Json doc = {{"tiers", {{"small", small_tier}}},
                {"principals",
                 {{"alice", {{"tier", "small"}}},
                  {"bob", {{"tier", "small"}}},
                  {"ops", {{"role", "admin"}}}}},
                {"keys",
                 {{{"principal", "alice"}, {"sha256", KeyRing::Sha256Hex(alice_key)}},
                  {{"principal", "bob"}, {"sha256", KeyRing::Sha256Hex("key-bob")}},
                  {{"principal", "ops"}, {"sha256", KeyRing::Sha256Hex("key-ops")}}}}};
    std::ofstream(keys_file_ + ".tmp") << doc.dump();
    std::rename((keys_file_ + ".tmp").c_str(), keys_file_.c_str());
  }

  std::unique_ptr<WsClient> Connect(const std::string& key) {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(ws->Connect(gateway_->port("http"), "/", {{"Authorization", "Bearer " + key}}))
        << ws->error();
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome && (*welcome)["type"] == "welcome");
    if (welcome) last_welcome_ = *welcome;
    return ws;
  }

  Json last_welcome_;  // of the last Connect

  Json Exchange(WsClient& ws, const Json& frame) {
    EXPECT_TRUE(ws.SendText(frame.dump()));
    auto reply =
        ws.ReadUntil(frame.contains("type") && frame["type"] == "usage_query" ? "usage" : "",
                     frame.value("id", ""));
    return reply.value_or(Json());
  }

  // The terminal frame of a request (skipping deltas and progress).
  Json Answer(WsClient& ws, const Json& frame) {
    EXPECT_TRUE(ws.SendText(frame.dump()));
    for (;;) {
      auto f = ws.Read();
      if (!f) return Json();
      std::string type = (*f)["type"];
      if (type == "chat_response" || type == "error" || type == "usage" ||
          type == "self_coding_result" || type == "consciousness_state") {
        return *f;
      }
    }
  }

  HttpResponse Post(const std::string& key, const std::string& message) {
    Json body = {{"model", "auto"}, {"messages", {{{"role", "user"}, {"content", message}}}}};
    return HttpRequest(gateway_->port("http"), "POST", "/v1/chat/completions", body.dump(),
                       {{"Authorization", "Bearer " + key}, {"Content-Type", "application/json"}});
  }

  std::string dir_, keys_file_;
};

TEST_F(TenantsTest, ThePrincipalTravelsToTheRouter) {
  WriteKeys({{"jobs_in_flight", 2}, {"jobs_per_day", 20}});
  StartGateway({"--auth-keys-file=" + keys_file_});
  auto alice = Connect("key-alice");
  EXPECT_EQ(last_welcome_["principal"], "alice");
  EXPECT_EQ(last_welcome_["role"], "user");
  Json reply = Answer(*alice, {{"type", "chat"}, {"id", "c1"}, {"message", "hi"}});
  EXPECT_EQ(reply["type"], "chat_response");
  common::Identity identity = router_->last_identity();
  EXPECT_EQ(identity.principal, "alice");
  EXPECT_FALSE(identity.admin);
  EXPECT_EQ(identity.job_limits.in_flight, 2);
  EXPECT_EQ(identity.job_limits.per_day, 20);

  auto ops = Connect("key-ops");
  EXPECT_EQ(last_welcome_["role"], "admin");
  Answer(*ops, {{"type", "self_coding_request"}, {"id", "j1"}, {"task", "t"}});
  identity = router_->last_identity();
  EXPECT_EQ(identity.principal, "ops");
  EXPECT_TRUE(identity.admin);

  EXPECT_EQ(Post("key-bob", "over http").status, 200);
  EXPECT_EQ(router_->last_identity().principal, "bob");
}

TEST_F(TenantsTest, WithoutAuthEveryClientIsLocal) {
  StartGateway();
  WsClient ws;
  ASSERT_TRUE(ws.Connect(gateway_->port("http"), "/"));
  auto welcome = ws.Read();
  ASSERT_TRUE(welcome);
  EXPECT_EQ((*welcome)["principal"], "local");
  EXPECT_EQ((*welcome)["role"], "admin");
  EXPECT_EQ(Answer(ws, {{"type", "chat"}, {"id", "c"}, {"message", "x"}})["type"], "chat_response");
  EXPECT_EQ(router_->last_identity().principal, "local");
  Json usage = Answer(ws, {{"type", "usage_query"}, {"id", "u"}});
  EXPECT_EQ(usage["principal"], "local");
  EXPECT_EQ(usage["limits"], Json::array());
  EXPECT_EQ(usage["day"]["requests"], 1);
}

TEST_F(TenantsTest, ARateQuotaIsOneQuotaAcrossConnectionsAndFrontDoors) {
  WriteKeys({{"requests_per_minute", 3}});
  StartGateway({"--auth-keys-file=" + keys_file_});
  auto a1 = Connect("key-alice");
  auto a2 = Connect("key-alice");
  EXPECT_EQ(Answer(*a1, {{"type", "chat"}, {"id", "1"}, {"message", "x"}})["type"],
            "chat_response");
  EXPECT_EQ(Answer(*a2, {{"type", "chat"}, {"id", "2"}, {"message", "x"}})["type"],
            "chat_response");
  HttpResponse third = Post("key-alice", "x");
  EXPECT_EQ(third.status, 200) << third.body;
  EXPECT_EQ(third.headers["x-ratelimit-limit-requests"], "3");
  EXPECT_EQ(third.headers["x-ratelimit-remaining-requests"], "0");
  EXPECT_FALSE(third.headers["x-ratelimit-reset-requests"].empty());

  // The fourth, on any door, is over.
  Json refused = Answer(*a1, {{"type", "chat"}, {"id", "4"}, {"message", "x"}});
  EXPECT_EQ(refused["type"], "error");
  EXPECT_EQ(refused["code"], "quota_exceeded");
  EXPECT_EQ(refused["limit"], "requests_per_minute");
  EXPECT_EQ(refused["id"], "4");
  EXPECT_GT(refused["retry_after_ms"].get<int64_t>(), 0);
  EXPECT_LE(refused["retry_after_ms"].get<int64_t>(), 20000);
  HttpResponse over = Post("key-alice", "x");
  EXPECT_EQ(over.status, 429);
  Json error = Json::parse(over.body)["error"];
  EXPECT_EQ(error["type"], "rate_limit_exceeded");
  EXPECT_EQ(error["code"], "rate_limit_exceeded");
  EXPECT_EQ(error["param"], "requests_per_minute");
  EXPECT_FALSE(over.headers["retry-after"].empty());
  EXPECT_FALSE(over.headers["retry-after-ms"].empty());
  EXPECT_EQ(over.headers["x-ratelimit-remaining-requests"], "0");

  // Nobody else notices.
  auto bob = Connect("key-bob");
  EXPECT_EQ(Answer(*bob, {{"type", "chat"}, {"id", "b"}, {"message", "x"}})["type"],
            "chat_response");
  EXPECT_EQ(Post("key-bob", "x").status, 200);
  int dispatched = router_->dispatched();
  EXPECT_EQ(dispatched, 5);  // the refused ones never reached the router
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_quota_refusals_total{limit=\"requests_per_minute\",tier=\"small\"}"],
            2);
  EXPECT_EQ(m["anima_gateway_principal_quota_refusals_total{limit=\"requests_per_minute\","
              "principal=\"alice\"}"],
            2);
}

TEST_F(TenantsTest, InFlightQuota) {
  WriteKeys({{"requests_in_flight", 1}});
  StartGateway({"--auth-keys-file=" + keys_file_});
  auto a1 = Connect("key-alice");
  ASSERT_TRUE(a1->SendText(R"({"type":"chat","id":"h","message":"hang"})"));
  ASSERT_TRUE(Eventually([&] { return router_->dispatched() == 1; }));
  auto a2 = Connect("key-alice");
  Json refused = Answer(*a2, {{"type", "chat"}, {"id", "2"}, {"message", "x"}});
  EXPECT_EQ(refused["code"], "quota_exceeded");
  EXPECT_EQ(refused["limit"], "requests_in_flight");
  EXPECT_EQ(Post("key-alice", "x").status, 429);
  // The hung request ends (cancelled): the slot is free again.
  ASSERT_TRUE(a1->SendText(R"({"type":"cancel","id":"c","target_id":"h"})"));
  ASSERT_TRUE(a1->ReadUntil("error", "h"));
  EXPECT_TRUE(Eventually([&] {
    return Answer(*a2, {{"type", "chat"}, {"id", "3"}, {"message", "x"}})["type"] ==
           "chat_response";
  }));
}

TEST_F(TenantsTest, TokenAndCostBudgetsChargedFromWhatTheAnswerCost) {
  WriteKeys({{"tokens_per_day", 1000}, {"cost_per_month", 1.0}});
  StartGateway({"--auth-keys-file=" + keys_file_});
  auto alice = Connect("key-alice");
  // 1,200 tokens over all candidates: the answer is given, the next chat is refused.
  EXPECT_EQ(Answer(*alice, {{"type", "chat"}, {"id", "1"}, {"message", "cost:1200:0.25"}})["type"],
            "chat_response");
  Json refused = Answer(*alice, {{"type", "chat"}, {"id", "2"}, {"message", "x"}});
  EXPECT_EQ(refused["code"], "quota_exceeded");
  EXPECT_EQ(refused["limit"], "tokens_per_day");
  EXPECT_GT(refused["retry_after_ms"].get<int64_t>(), 0);
  // Budgets stop spending, not everything: the state can still be asked for.
  EXPECT_EQ(Answer(*alice, {{"type", "consciousness_query"}, {"id", "q"}})["type"],
            "consciousness_state");
  HttpResponse over = Post("key-alice", "x");
  EXPECT_EQ(over.status, 429);
  EXPECT_EQ(Json::parse(over.body)["error"]["type"], "insufficient_quota");
  EXPECT_EQ(Json::parse(over.body)["error"]["code"], "insufficient_quota");

  // Usage: the caller's own, over WebSocket and HTTP alike.
  Json usage = Answer(*alice, {{"type", "usage_query"}, {"id", "u"}});
  EXPECT_EQ(usage["type"], "usage");
  EXPECT_EQ(usage["principal"], "alice");
  EXPECT_EQ(usage["tier"], "small");
  EXPECT_EQ(usage["day"]["tokens"], 1200);
  EXPECT_DOUBLE_EQ(usage["month"]["cost_usd"].get<double>(), 0.25);
  ASSERT_EQ(usage["limits"].size(), 2u);
  EXPECT_EQ(usage["limits"][0]["limit"], "tokens_per_day");
  EXPECT_EQ(usage["limits"][0]["used"], 1200);
  EXPECT_EQ(usage["limits"][0]["remaining"], 0);
  EXPECT_EQ(usage["limits"][1]["limit"], "cost_per_month");
  EXPECT_DOUBLE_EQ(usage["limits"][1]["remaining"].get<double>(), 0.75);
  HttpResponse http_usage = HttpRequest(gateway_->port("http"), "GET", "/v1/usage", "",
                                        {{"Authorization", "Bearer key-alice"}});
  ASSERT_EQ(http_usage.status, 200) << http_usage.body;
  EXPECT_EQ(Json::parse(http_usage.body)["day"]["tokens"], 1200);

  // Another principal's usage: admins only.
  Json denied = Answer(*alice, {{"type", "usage_query"}, {"id", "u2"}, {"principal", "bob"}});
  EXPECT_EQ(denied["code"], "invalid_message");
  EXPECT_EQ(HttpRequest(gateway_->port("http"), "GET", "/v1/usage?principal=bob", "",
                        {{"Authorization", "Bearer key-alice"}})
                .status,
            403);
  auto ops = Connect("key-ops");
  Json of_alice = Answer(*ops, {{"type", "usage_query"}, {"id", "u3"}, {"principal", "alice"}});
  EXPECT_EQ(of_alice["principal"], "alice");
  EXPECT_EQ(of_alice["day"]["tokens"], 1200);
  EXPECT_EQ(Answer(*ops, {{"type", "usage_query"}, {"id", "u4"}, {"principal", "nobody"}})["code"],
            "not_found");
  HttpResponse admin_http = HttpRequest(gateway_->port("http"), "GET", "/v1/usage?principal=alice",
                                        "", {{"Authorization", "Bearer key-ops"}});
  EXPECT_EQ(Json::parse(admin_http.body)["principal"], "alice");
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_tokens_charged_total{tier=\"small\"}"], 1200);
  EXPECT_DOUBLE_EQ(m["anima_gateway_cost_usd_total{tier=\"small\"}"], 0.25);
}

TEST_F(TenantsTest, BrowserOriginsAndTheSubprotocolBearer) {
  WriteKeys(Json::object());
  StartGateway({"--auth-keys-file=" + keys_file_, "--allowed-origins=https://app.example"});
  int port = gateway_->port("http");
  std::map<std::string, std::string> upgrade = {{"Connection", "Upgrade"},
                                                {"Upgrade", "websocket"},
                                                {"Sec-WebSocket-Version", "13"},
                                                {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                                                {"Authorization", "Bearer key-alice"}};
  auto evil = upgrade;
  evil["Origin"] = "https://evil.example";
  EXPECT_EQ(HttpRequest(port, "GET", "/", "", evil).status, 403);
  auto api =
      HttpRequest(port, "POST", "/v1/chat/completions", "{}",
                  {{"Origin", "https://evil.example"}, {"Authorization", "Bearer key-alice"}});
  EXPECT_EQ(api.status, 403);
  EXPECT_EQ(router_->dispatched(), 0);
  WsClient from_app;
  EXPECT_TRUE(from_app.Connect(
      port, "/", {{"Origin", "https://app.example"}, {"Authorization", "Bearer key-alice"}}))
      << from_app.error();

  // A browser: the key as a subprotocol, anima.v1 selected, the key never echoed.
  auto browser = upgrade;
  browser.erase("Authorization");
  browser["Sec-WebSocket-Protocol"] = "anima.v1, anima.bearer.key-bob";
  browser["Origin"] = "http://127.0.0.1:" + std::to_string(port);  // the gateway's own page
  auto switched = HttpRequest(port, "GET", "/", "", browser);
  EXPECT_EQ(switched.status, 101);
  EXPECT_EQ(switched.headers["sec-websocket-protocol"], "anima.v1");
  browser["Sec-WebSocket-Protocol"] = "anima.v1, anima.bearer.wrong";
  EXPECT_EQ(HttpRequest(port, "GET", "/", "", browser).status, 401);
  auto m = anima::testing::ScrapeMetrics(gateway_->port("metrics"));
  EXPECT_EQ(m["anima_gateway_auth_failures_total{reason=\"origin\"}"], 2);
}

TEST_F(TenantsTest, FailedAuthIsThrottledPerAddress) {
  WriteKeys(Json::object());
  StartGateway({"--auth-keys-file=" + keys_file_});
  int throttled = 0;
  for (int i = 0; i < 25; ++i) {
    int status = Post("wrong-" + std::to_string(i), "x").status;
    EXPECT_TRUE(status == 401 || status == 429) << status;
    throttled += status == 429;
  }
  EXPECT_GE(throttled, 4);
  EXPECT_EQ(Post("key-alice", "x").status, 429);  // even a good key, from this address, for now
  EXPECT_TRUE(Eventually([&] { return Post("key-alice", "x").status == 200; }));
}

TEST_F(TenantsTest, KeysReloadWithoutDroppingConnections) {
  WriteKeys({{"requests_per_minute", 100}});
  StartGateway({"--auth-keys-file=" + keys_file_});
  auto alice = Connect("key-alice");
  auto bob = Connect("key-bob");
  // Alice's key is rotated: her open connection is told and closed at its next request; Bob's
  // connection stays and takes the new limits.
  WriteKeys({{"requests_per_minute", 1}}, "key-alice-2");
  gateway_->Signal(SIGHUP);
  ASSERT_TRUE(Eventually([&] {
    return gateway_->Log().find("keys file reloaded") != std::string::npos;
  })) << gateway_->Log();
  Json revoked = Answer(*alice, {{"type", "chat"}, {"id", "1"}, {"message", "x"}});
  EXPECT_EQ(revoked["code"], "unauthenticated");
  EXPECT_EQ(revoked["id"], "1");
  EXPECT_FALSE(alice->Read(2s).has_value());
  EXPECT_EQ(alice->close_code(), 1008);
  EXPECT_EQ(Answer(*bob, {{"type", "chat"}, {"id", "1"}, {"message", "x"}})["type"],
            "chat_response");
  EXPECT_EQ(Answer(*bob, {{"type", "chat"}, {"id", "2"}, {"message", "x"}})["limit"],
            "requests_per_minute");
  Connect("key-alice-2");
  WsClient old_key;
  EXPECT_FALSE(
      old_key.Connect(gateway_->port("http"), "/", {{"Authorization", "Bearer key-alice"}}));
  // A broken file is refused; the keys in use stay.
  std::ofstream(keys_file_) << R"({"keys": [{"principal": "x"}]})";
  gateway_->Signal(SIGHUP);
  ASSERT_TRUE(Eventually(
      [&] { return gateway_->Log().find("keys file not reloaded") != std::string::npos; }));
  EXPECT_NE(gateway_->Log().find("keys[0].sha256"), std::string::npos);
  Connect("key-alice-2");
  EXPECT_EQ(gateway_->Log().find("key-alice"), std::string::npos) << "a key reached the log";
}

TEST_F(TenantsTest, IdleKeepAliveConnectionsCountAgainstTheCap) {
  StartGateway({"--max-connections=2"});
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context ioc;
  auto open = [&] {
    auto s = std::make_unique<beast::tcp_stream>(ioc);
    s->connect({boost::asio::ip::make_address("127.0.0.1"),
                static_cast<unsigned short>(gateway_->port("http"))});
    return s;
  };
  auto get = [&](beast::tcp_stream& s, const char* target) {
    http::request<http::string_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "x");
    http::write(s, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(s, buffer, res);
    return res.result_int();
  };
  // Keep-alive: these two stay open and idle. The start-up readiness probe's connection may
  // still hold a slot for a moment after it closed (slow under sanitizers), hence Eventually.
  std::unique_ptr<beast::tcp_stream> first, second;
  ASSERT_TRUE(Eventually([&] {
    first = open();
    return get(*first, "/v1/models") == 200;
  }));
  ASSERT_TRUE(Eventually([&] {
    second = open();
    return get(*second, "/v1/models") == 200;
  }));
  auto third = open();
  EXPECT_EQ(get(*third, "/v1/models"), 503);
  auto probe = open();
  EXPECT_EQ(get(*probe, "/healthz"), 200);  // probes still answered
  WsClient ws;
  EXPECT_FALSE(ws.Connect(gateway_->port("http"), "/"));
  first.reset();
  EXPECT_TRUE(Eventually([&] {
    auto again = open();
    return get(*again, "/v1/models") == 200;
  }));
}

TEST_F(TenantsTest, TheApiHasTheConnectionsMessageRate) {
  StartGateway({"--messages-per-second=2"});
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect({boost::asio::ip::make_address("127.0.0.1"),
             static_cast<unsigned short>(gateway_->port("http"))});
  std::vector<int> statuses;
  for (int i = 0; i < 3; ++i) {
    http::request<http::string_body> req{http::verb::get, "/v1/models", 11};
    req.set(http::field::host, "x");
    http::write(s, req);
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(s, buffer, res);
    statuses.push_back(res.result_int());
  }
  EXPECT_EQ(statuses, (std::vector<int>{200, 200, 429}));
}

TEST(TenantsStartTest, NoAuthBeyondLoopbackIsRefused) {
  std::string out;
  std::string command = anima::testing::BinDir() +
                        "/anima-gateway --port=0 --metrics-port=0 --bind=0.0.0.0 >/tmp/"
                        "anima-tenants-bind.log 2>&1";
  int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in("/tmp/anima-tenants-bind.log");
  out.assign(std::istreambuf_iterator<char>(in), {});
  EXPECT_NE(out.find("without auth"), std::string::npos) << out;
  EXPECT_NE(out.find("--allow-unauthenticated"), std::string::npos) << out;

  // Loudly allowed.
  auto gateway = anima::testing::Process::Start(
      "anima-gateway",
      {"--port=0", "--metrics-port=0", "--bind=0.0.0.0", "--allow-unauthenticated"});
  ASSERT_NE(gateway, nullptr);
  EXPECT_NE(gateway->Log().find("AUTH IS OFF"), std::string::npos) << gateway->Log();
}

TEST(TenantsStartTest, AKeysFileWithAnErrorNamesTheField) {
  std::string path = "/tmp/anima-tenants-bad-keys.json";
  std::ofstream(path) << R"({"tiers": {"free": {"requests_per_minut": 5}}})";
  std::string command = anima::testing::BinDir() +
                        "/anima-gateway --port=0 --metrics-port=0 --auth-keys-file=" + path +
                        " >/tmp/anima-tenants-keys.log 2>&1";
  int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  std::ifstream in("/tmp/anima-tenants-keys.log");
  std::string out(std::istreambuf_iterator<char>(in), {});
  EXPECT_NE(out.find("tiers.free.requests_per_minut"), std::string::npos) << out;
  std::remove(path.c_str());
}

}  // namespace
}  // namespace anima::gateway
