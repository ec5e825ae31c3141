#include "tools/bench/runner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/unit/bench/fake_servers.h"

namespace anima::bench {
namespace {

BenchConfig ConfigFor(const testing::FakeGateway* gateway, const testing::FakeSim* sim) {
  BenchConfig c;
  if (gateway != nullptr) {
    c.ws_url_text = gateway->url();
    c.ws_url = *cli::ParseUrl(c.ws_url_text);
  }
  if (sim != nullptr) {
    c.sim_url_text = sim->url();
    c.sim_url = *cli::ParseUrl(c.sim_url_text);
  }
  c.sim_key = "sim-key";
  c.load.message = "hello";
  c.connections = 4;
  c.in_flight = 2;
  c.threads = 2;
  c.duration_s = 120;  // the request budget ends these runs
  c.warmup_s = 0;
  c.requests = 200;
  return c;
}

TEST(RunLoadTest, ClosedLoopOverWebSocketStopsAtTheRequestBudget) {
  testing::FakeGateway gateway;
  auto r = RunLoad(ConfigFor(&gateway, nullptr), "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sent, 200);
  EXPECT_EQ(r->ok, 200);
  EXPECT_TRUE(r->errors.empty());
  EXPECT_EQ(r->latency.count, 200u);
  EXPECT_LE(r->latency.p50_ms, r->latency.p99_ms);
  EXPECT_LE(r->latency.p99_ms, r->latency.max_ms);
  EXPECT_GT(r->throughput(), 0);
  EXPECT_TRUE(r->notes.empty()) << r->notes.front();
  EXPECT_EQ(gateway.chats(), 200) << "no request is sent outside the plan";
}

TEST(RunLoadTest, StreamedAnswersEndAtTheChatResponse) {
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.load.stream = true;
  c.requests = 50;
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ok, 50);
}

TEST(RunLoadTest, ErrorFramesAreCountedByCode) {
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.load.message = "please fail";
  c.requests = 20;
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sent, 20);
  EXPECT_EQ(r->ok, 0);
  EXPECT_EQ(r->errors["rate_limited"], 20);
  EXPECT_EQ(r->latency.count, 0u);
  EXPECT_EQ(r->error_latency.count, 20u) << "how fast each refusal came back is kept";
}

TEST(RunLoadTest, AClosedLoopWaitsTheRetryAfterItIsToldBeforeSendingAgain) {
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.load.message = "please back off";  // overloaded, retry_after_ms 50
  c.connections = 1;
  c.in_flight = 1;
  c.threads = 1;
  c.requests = 3;
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->errors["overloaded"], 3);
  auto times = gateway.chat_times();
  ASSERT_EQ(times.size(), 3u);
  for (size_t i = 1; i < times.size(); ++i) {
    EXPECT_GE(times[i] - times[i - 1], std::chrono::milliseconds(50))
        << "request " << i << " was sent before the wait it was told";
  }
}

TEST(RunLoadTest, WatchedProcessesReportTheirCpu) {
  // This process is the generator: it spends CPU on every message, so its share is above zero.
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.requests = 2000;
  c.watch = {{"bench", ::getpid()}, {"gone", 0x3ffffff0}};
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->process_cpu.size(), 1u) << "a process that is not running is left out";
  EXPECT_EQ(r->process_cpu[0].name, "bench");
  EXPECT_GE(r->process_cpu[0].seconds, 0);
  ASSERT_EQ(r->notes.size(), 1u);
  EXPECT_NE(r->notes[0].find("gone"), std::string::npos) << r->notes[0];
}

TEST(RunLoadTest, OpenLoopSendsExactlyRateTimesDuration) {
  // 200 msg/s for 0.5 s over 4 connections: sends are scheduled every 5 ms from the start, so
  // exactly 100 fall inside the window however late the timers fire.
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.rate = 200;
  c.duration_s = 0.5;
  c.requests = 0;
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sent, 100);
  EXPECT_EQ(r->ok, 100);
  EXPECT_TRUE(r->settings.open_loop);
}

TEST(RunLoadTest, WarmupRequestsAreNotRecorded) {
  testing::FakeGateway gateway;
  BenchConfig c = ConfigFor(&gateway, nullptr);
  c.rate = 200;
  c.warmup_s = 0.25;
  c.duration_s = 0.25;
  c.requests = 0;
  auto r = RunLoad(c, "ws");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->sent, 50);
  EXPECT_EQ(gateway.chats(), 100);
}

TEST(RunLoadTest, SimulatorTargetNonStreamedAndStreamed) {
  testing::FakeSim sim;
  BenchConfig c = ConfigFor(nullptr, &sim);
  c.requests = 100;
  auto plain = RunLoad(c, "sim");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->ok, 100);
  EXPECT_TRUE(plain->errors.empty());
  EXPECT_EQ(sim.requests(), 100);
  c.load.stream = true;
  auto streamed = RunLoad(c, "sim");
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  EXPECT_EQ(streamed->ok, 100);
  EXPECT_EQ(sim.requests(), 200);
}

TEST(RunLoadTest, SimulatorErrorsAreCountedByStatus) {
  testing::FakeSim sim;
  BenchConfig c = ConfigFor(nullptr, &sim);
  c.sim_key = "wrong";
  c.requests = 10;
  auto r = RunLoad(c, "sim");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ok, 0);
  EXPECT_EQ(r->errors["http_401"], 10);
}

TEST(RunLoadTest, UnreachableTargetIsAnErrorNotAResult) {
  int port = 0;
  {
    testing::FakeGateway gateway;  // learn a port that is then closed
    port = gateway.port();
  }
  BenchConfig c;
  c.ws_url_text = "ws://127.0.0.1:" + std::to_string(port) + "/";
  c.ws_url = *cli::ParseUrl(c.ws_url_text);
  c.connections = 2;
  auto r = RunLoad(c, "ws");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("2 of 2"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace anima::bench
