// Two real anima-gateway binaries on one real redis-server, in front of the fake Router: a
// principal's quota is one quota whichever gateway, and whichever door, its requests take; with
// Redis down chat stays available, each gateway holding the principal to its limits alone. And
// the usage ledger on a real PostgreSQL: what a gateway counted is still there after it stops.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "gateway/principals.h"
#include "gtest/gtest.h"
#include "tests/integration/gateway/gateway_over_fake_router.h"
#include "tests/integration/harness/harness.h"
#include "tests/support/postgres_server.h"
#include "tests/support/redis_server.h"

namespace anima::gateway {
namespace {

using anima::testing::Eventually;
using anima::testing::HttpRequest;
using anima::testing::HttpResponse;
using anima::testing::Process;
using anima::testing::ScrapeMetrics;
using anima::testing::WsClient;
using Json = nlohmann::json;

class SharedQuotaTest : public testing::GatewayOverFakeRouterTest {
 protected:
  void SetUp() override {
    GatewayOverFakeRouterTest::SetUp();
    redis_ = anima::testing::RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    std::string dir = anima::testing::MakeTempDir("anima-shared-quota");
    keys_file_ = dir + "/keys.json";
    Json doc = {{"tiers", {{"small", {{"requests_per_minute", 4}}}}},
                {"principals", {{"carol", {{"tier", "small"}}}}},
                {"keys", {{{"principal", "carol"}, {"sha256", KeyRing::Sha256Hex("key-carol")}}}}};
    std::ofstream(keys_file_) << doc.dump();
    for (int i = 0; i < 2; ++i) {
      gateways_.push_back(Process::Start(
          "anima-gateway",
          {"--port=0", "--metrics-port=0", "--router=127.0.0.1:" + std::to_string(router_->port()),
           "--state-interval-ms=600000", "--auth-keys-file=" + keys_file_,
           "--redis=" + redis_->url()}));
      ASSERT_NE(gateways_.back(), nullptr);
      Process& g = *gateways_.back();
      ASSERT_TRUE(Eventually([&] {
        return HttpRequest(g.port("http"), "GET", "/readyz").status == 200;
      })) << g.Log();
    }
  }

  std::unique_ptr<WsClient> Connect(int gateway) {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(
        ws->Connect(gateways_[gateway]->port("http"), "/", {{"Authorization", "Bearer key-carol"}}))
        << ws->error();
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome && (*welcome)["type"] == "welcome");
    return ws;
  }

  // The chat's terminal frame.
  static Json Chat(WsClient& ws, const std::string& id) {
    EXPECT_TRUE(ws.SendText(Json{{"type", "chat"}, {"id", id}, {"message", "hi"}}.dump()));
    for (;;) {
      auto f = ws.Read();
      if (!f) return Json();
      if ((*f)["type"] == "chat_response" || (*f)["type"] == "error") return *f;
    }
  }

  HttpResponse Post(int gateway) {
    Json body = {{"model", "auto"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    return HttpRequest(
        gateways_[gateway]->port("http"), "POST", "/v1/chat/completions", body.dump(),
        {{"Authorization", "Bearer key-carol"}, {"Content-Type", "application/json"}});
  }

  double Metric(int gateway, const std::string& series) {
    auto m = ScrapeMetrics(gateways_[gateway]->port("metrics"));
    auto it = m.find(series);
    return it == m.end() ? 0 : it->second;
  }

  std::unique_ptr<anima::testing::RedisServer> redis_;
  std::string keys_file_;
  std::vector<std::unique_ptr<Process>> gateways_;
};

// Carol may make 4 requests a minute: ten, spread over two gateways and both doors, get exactly
// four answers.
TEST_F(SharedQuotaTest, ARateLimitHoldsAcrossTwoGateways) {
  auto ws0 = Connect(0);
  auto ws1 = Connect(1);
  int answered = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    int gateway = i % 2;
    if (i % 4 < 2) {
      Json r = Chat(gateway ? *ws1 : *ws0, "c" + std::to_string(i));
      if (r["type"] == "chat_response") ++answered;
      if (r["type"] == "error") {
        EXPECT_EQ(r["code"], "quota_exceeded") << r.dump();
        EXPECT_EQ(r["limit"], "requests_per_minute");
        EXPECT_GT(r["retry_after_ms"].get<int64_t>(), 0);
        ++refused;
      }
    } else {
      HttpResponse r = Post(gateway);
      if (r.status == 200) ++answered;
      if (r.status == 429) {
        EXPECT_EQ(Json::parse(r.body)["error"]["param"], "requests_per_minute");
        EXPECT_EQ(r.headers["x-ratelimit-limit-requests"], "4");
        EXPECT_EQ(r.headers["x-ratelimit-remaining-requests"], "0");
        ++refused;
      }
    }
  }
  EXPECT_EQ(answered, 4);
  EXPECT_EQ(refused, 6);
  EXPECT_EQ(router_->dispatched(), 4);
  const std::string refusals =
      "anima_gateway_quota_refusals_total{limit=\"requests_per_minute\",tier=\"small\"}";
  EXPECT_EQ(Metric(0, refusals) + Metric(1, refusals), 6);
  EXPECT_EQ(Metric(0, "anima_gateway_quota_backend_up"), 1);
  EXPECT_EQ(Metric(0, "anima_gateway_quota_fallback_total{reason=\"unavailable\"}"), 0);

  // Either gateway reports the same usage.
  for (int g = 0; g < 2; ++g) {
    HttpResponse usage = HttpRequest(gateways_[g]->port("http"), "GET", "/v1/usage", "",
                                     {{"Authorization", "Bearer key-carol"}});
    ASSERT_EQ(usage.status, 200) << usage.body;
    Json u = Json::parse(usage.body);
    EXPECT_EQ(u["day"]["requests"], 4) << "gateway " << g;
    EXPECT_EQ(u["limits"][0]["limit"], "requests_per_minute");
    EXPECT_EQ(u["limits"][0]["remaining"], 0);
    EXPECT_EQ(usage.headers["x-ratelimit-remaining-requests"], "0");
  }
}

// The quota answer comes over the network, yet a connection's frames are still handled in the
// order they were sent: a cancel right behind its request finds it in flight, and the usage
// asked for after it counts it. Redis hangs here, so the answer (the fallback's, after the call
// timeout) comes long after the frames behind the request have arrived.
TEST_F(SharedQuotaTest, FramesStayInOrderWhileTheQuotaIsAsked) {
  auto ws = Connect(0);
  redis_->Pause();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"h","message":"hang"})"));
  ASSERT_TRUE(ws->SendText(R"({"type":"cancel","id":"x","target_id":"h"})"));
  ASSERT_TRUE(ws->SendText(R"({"type":"usage_query","id":"u"})"));
  auto cancelled = ws->ReadUntil("error", "h");
  ASSERT_TRUE(cancelled) << "the cancel overtook its request";
  EXPECT_EQ((*cancelled)["code"], "cancelled");
  auto usage = ws->ReadUntil("usage", "u");
  ASSERT_TRUE(usage);
  EXPECT_EQ((*usage)["day"]["requests"], 1);
  for (const auto& f : ws->skipped()) EXPECT_NE(f.value("code", ""), "not_found") << f.dump();
  EXPECT_GE(Metric(0, "anima_gateway_quota_fallback_total{reason=\"timeout\"}"), 1);
  redis_->Resume();
}

// A frame the gateway read is answered even when a shutdown comes while its quota is still asked
// of a Redis that hangs: `unavailable` with its id, before the 1001 (never a silent drop).
// The SIGTERM goes once anima_gateway_quota_pending says the frame was read and waits for Redis
// (a frame not yet read at the 1001 is the client's to send again); should the 200 ms fallback
// answer first on a slow machine, the next frame tries again.
TEST_F(SharedQuotaTest, AShutdownAnswersAFrameWaitingForItsQuota) {
  auto ws = Connect(0);
  redis_->Pause();
  std::string id;
  for (int attempt = 0; attempt < 3 && id.empty(); ++attempt) {
    std::string next = "q" + std::to_string(attempt);
    ASSERT_TRUE(ws->SendText(Json{{"type", "chat"}, {"id", next}, {"message", "hang"}}.dump()));
    if (Eventually([&] { return Metric(0, "anima_gateway_quota_pending") == 1; },
                   std::chrono::milliseconds(100))) {
      id = next;
    } else {
      ASSERT_TRUE(ws->ReadUntil("chat_response", next)) << "the fallback's answer";
    }
  }
  ASSERT_FALSE(id.empty()) << "never saw a frame waiting for Redis";
  gateways_[0]->Signal(SIGTERM);
  auto answer = ws->ReadUntil("error", id);
  redis_->Resume();
  ASSERT_TRUE(answer) << "no answer before the close; skipped: " << ws->skipped().size();
  EXPECT_EQ((*answer)["code"], "unavailable") << answer->dump();
  EXPECT_FALSE(ws->Read()) << "the connection closes after the answer";
  EXPECT_EQ(ws->close_code(), 1001);
  EXPECT_EQ(gateways_[0]->Wait(), 0) << gateways_[0]->Log();
}

// Redis stopped: chats are still answered, each gateway holding carol to 4 a minute on its own
// (never unlimited), and the fallback is counted; Redis back: the gateways use it again.
TEST_F(SharedQuotaTest, RedisDownFallsBackToALocalLimit) {
  redis_->Stop();
  auto ws = Connect(0);
  int answered = 0;
  for (int i = 0; i < 6; ++i)
    answered += Chat(*ws, "d" + std::to_string(i))["type"] == "chat_response";
  EXPECT_EQ(answered, 4);
  EXPECT_EQ(Post(0).status, 429);
  EXPECT_GE(Metric(0, "anima_gateway_quota_fallback_total{reason=\"unavailable\"}") +
                Metric(0, "anima_gateway_quota_fallback_total{reason=\"timeout\"}"),
            7);
  EXPECT_EQ(Metric(0, "anima_gateway_quota_backend_up"), 0);

  ASSERT_TRUE(redis_->Restart());
  // The next request after Redis answers again is counted there (and the gauge says so).
  EXPECT_TRUE(Eventually([&] {
    Post(0);
    return Metric(0, "anima_gateway_quota_backend_up") == 1;
  }));
}

// With --postgres, the usage a gateway counted is written to the ledger (at the latest when it
// stops), so a gateway started later, with no Redis, reports it.
TEST_F(SharedQuotaTest, UsageOutlivesTheGatewayInTheLedger) {
  auto pg = anima::testing::PostgresServer::Start();
  ASSERT_NE(pg, nullptr);
  std::string url = pg->CreateDatabase("gateway_ledger");
  auto start = [&] {
    auto g = Process::Start(
        "anima-gateway",
        {"--port=0", "--metrics-port=0", "--router=127.0.0.1:" + std::to_string(router_->port()),
         "--state-interval-ms=600000", "--auth-keys-file=" + keys_file_, "--postgres=" + url});
    EXPECT_NE(g, nullptr);
    return g;
  };
  auto first = start();
  ASSERT_NE(first, nullptr);
  gateways_[0] = std::move(first);
  auto ws = Connect(0);
  EXPECT_EQ(Chat(*ws, "a")["type"], "chat_response");
  EXPECT_EQ(Post(0).status, 200);
  ws->Close();
  gateways_[0]->Signal(SIGTERM);
  EXPECT_EQ(gateways_[0]->Wait(), 0) << gateways_[0]->Log();

  gateways_[0] = start();
  ASSERT_NE(gateways_[0], nullptr);
  HttpResponse usage = HttpRequest(gateways_[0]->port("http"), "GET", "/v1/usage", "",
                                   {{"Authorization", "Bearer key-carol"}});
  ASSERT_EQ(usage.status, 200) << usage.body;
  Json u = Json::parse(usage.body);
  EXPECT_EQ(u["day"]["requests"], 2) << u.dump();
  EXPECT_EQ(u["month"]["requests"], 2);
}

}  // namespace
}  // namespace anima::gateway
