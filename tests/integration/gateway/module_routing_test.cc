// A type the gateway does not know, end to end: the real gateway, the real router with a
// `--config` that routes `word_count` to the real anima-word-count module.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"

namespace anima::gateway {
namespace {

using anima::testing::Eventually;
using anima::testing::HttpRequest;
using anima::testing::Process;
using anima::testing::System;
using anima::testing::WsClient;
using Json = nlohmann::json;

TEST(ModuleRoutingTest, UnknownTypesReachTheRoutersModules) {
  System system;
  ASSERT_TRUE(system.StartWordCount());

  char dir_template[] = "/tmp/anima-gateway-modules.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  std::string config = std::string(dir_template) + "/router.json";
  {
    std::ofstream out(config);
    out << Json{{"modules", Json::array({{{"name", "word-count"},
                                          {"address", system.word_count()->address("grpc")},
                                          {"types", {"word_count"}},
                                          {"priority", "low"},
                                          {"deadline_ms", 5000}}})}}
               .dump();
  }
  ASSERT_TRUE(system.StartRouter({"--config=" + config}));
  ASSERT_TRUE(system.StartGateway());
  Process& gateway = *system.gateway();
  ASSERT_TRUE(Eventually([&] {
    return HttpRequest(gateway.port("http"), "GET", "/readyz").status == 200;
  })) << gateway.Log();

  WsClient ws;
  ASSERT_TRUE(ws.Connect(gateway.port("http"))) << ws.error();
  ws.Ignore("consciousness_state");
  auto welcome = ws.Read();
  ASSERT_TRUE(welcome.has_value());
  EXPECT_EQ((*welcome)["type"], "welcome");

  ASSERT_TRUE(ws.SendText(R"({"type":"word_count","id":"w","text":"a b c"})"));
  auto result = ws.Read();
  ASSERT_TRUE(result.has_value()) << ws.error() << "\n" << system.router()->Log();
  EXPECT_EQ((*result)["type"], "word_count_result") << result->dump();
  EXPECT_EQ((*result)["id"], "w");
  EXPECT_EQ((*result)["words"], 3);
  EXPECT_EQ((*result)["characters"], 5);

  // The module's own error answer reaches the client too, with the request's id.
  ASSERT_TRUE(ws.SendText(R"({"type":"word_count","id":"bad"})"));
  auto bad = ws.Read();
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ((*bad)["id"], "bad") << bad->dump();
  EXPECT_EQ((*bad)["type"], "error") << bad->dump();

  ASSERT_TRUE(ws.SendText(R"({"type":"teleport"})"));
  auto unknown = ws.Read();
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ((*unknown)["type"], "error");
  EXPECT_EQ((*unknown)["code"], "unknown_type") << unknown->dump();
  EXPECT_TRUE((*unknown)["id"].is_string());

  // Still open: the connection serves the next request.
  ASSERT_TRUE(ws.SendText(R"({"type":"word_count","id":"w2","text":""})"));
  auto again = ws.Read();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ((*again)["words"], 0);

  // The gateway learned from the router (Router.ListRoutes) that word_count is low priority, so
  // it admits word_count frames through its adaptive limit: they show up in its admission
  // metrics under `low`, with the type's own limit.
  int sent = 0;
  EXPECT_TRUE(Eventually([&] {
    std::string frame =
        R"({"type":"word_count","text":"x","id":"m)" + std::to_string(++sent) + "\"}";
    if (!ws.SendText(frame) || !ws.Read().has_value()) return false;
    auto m = anima::testing::ScrapeMetrics(gateway.port("metrics"));
    return m["anima_gateway_admission_wait_seconds_count{priority=\"low\"}"] > 0 &&
           m["anima_gateway_admission_limit{type=\"word_count\"}"] >= 1;
  })) << gateway.Log();
  std::remove(config.c_str());
  rmdir(dir_template);
}

}  // namespace
}  // namespace anima::gateway
