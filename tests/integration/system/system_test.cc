// The whole system as a client sees it: the real simulator, broker, router and gateway binaries
// on free ports, a WebSocket client, and the metrics endpoints.
#include <csignal>
#include <fstream>
#include <iostream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"

namespace anima::testing {
namespace {

class SystemTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + SourceDir() + "/tests/testdata/sim_rules.json"}));
    ASSERT_TRUE(system_->StartBroker());
    ASSERT_TRUE(system_->StartRouter({"--poll-interval-ms=200"}));
    ASSERT_TRUE(system_->StartGateway());
  }

  static void TearDownTestSuite() { system_.reset(); }

  // A connected client that has read its welcome frame; state broadcasts are ignored.
  std::unique_ptr<WsClient> Connect(const std::string& path = "/") {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(ws->Connect(system_->gateway()->port("http"), path)) << ws->error();
    ws->Ignore("consciousness_state");
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome.has_value());
    if (welcome) {
      EXPECT_EQ((*welcome)["type"], "welcome");
    }
    return ws;
  }

  static inline std::unique_ptr<System> system_;
};

TEST_F(SystemTest, WelcomeDescribesTheSessionAndLimits) {
  WsClient ws;
  ASSERT_TRUE(ws.Connect(system_->gateway()->port("http")));
  auto welcome = ws.Read();
  ASSERT_TRUE(welcome);
  EXPECT_EQ((*welcome)["type"], "welcome");
  EXPECT_EQ((*welcome)["protocol"], 1);
  EXPECT_EQ((*welcome)["session_id"].get<std::string>().rfind("s-", 0), 0u);
  EXPECT_EQ((*welcome)["server"], "anima-gateway/0.1.0");
  EXPECT_EQ((*welcome)["limits"]["max_message_bytes"], 65536);
}

TEST_F(SystemTest, TheOriginalChatFrameGetsAnAnswerFromTheProvider) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","message":"Hello, consciousness system!"})"));
  auto res = ws->ReadUntil("chat_response");
  ASSERT_TRUE(res) << ws->error();
  // The reply the simulator's rules script for this prompt, through the OpenAI wire format.
  EXPECT_EQ((*res)["message"], "Hello! I am here and aware. How can I help you today?");
  EXPECT_EQ((*res)["provider"], "openai");
  EXPECT_EQ((*res)["finish_reason"], "stop");
  EXPECT_FALSE((*res)["id"].get<std::string>().empty());  // assigned by the gateway
  EXPECT_GT((*res)["usage"]["completion_tokens"].get<int>(), 0);
  EXPECT_EQ((*res)["usage"]["total_tokens"].get<int>(),
            (*res)["usage"]["prompt_tokens"].get<int>() +
                (*res)["usage"]["completion_tokens"].get<int>());
  EXPECT_TRUE((*res).contains("latency_ms"));
}

TEST_F(SystemTest, StreamingChatSendsDeltasThatAddUpToTheResponse) {
  auto ws = Connect("/ws");
  ASSERT_TRUE(ws->SendText(
      R"({"type":"chat","id":"c1","message":"Hello, consciousness system!","stream":true})"));
  std::string joined;
  int deltas = 0;
  while (true) {
    auto frame = ws->Read();
    ASSERT_TRUE(frame) << ws->error();
    EXPECT_EQ((*frame)["id"], "c1");
    if ((*frame)["type"] == "chat_delta") {
      joined += (*frame)["delta"].get<std::string>();
      ++deltas;
      continue;
    }
    ASSERT_EQ((*frame)["type"], "chat_response") << frame->dump();
    EXPECT_EQ((*frame)["message"], joined);
    break;
  }
  EXPECT_GT(deltas, 1);
}

TEST_F(SystemTest, ConversationContinuesWithItsId) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"a","message":"remember the word plum"})"));
  auto first = ws->ReadUntil("chat_response", "a");
  ASSERT_TRUE(first);
  std::string conv = (*first)["conversation_id"];
  ASSERT_FALSE(conv.empty());
  ASSERT_TRUE(ws->SendText(nlohmann::json{
      {"type", "chat"}, {"id", "b"}, {"message", "and now?"}, {"conversation_id", conv}}
                               .dump()));
  auto second = ws->ReadUntil("chat_response", "b");
  ASSERT_TRUE(second);
  EXPECT_EQ((*second)["conversation_id"], conv);
  // The simulator reports the prompt size: the second request carried the first turn too.
  EXPECT_GT((*second)["usage"]["prompt_tokens"].get<int>(),
            (*first)["usage"]["prompt_tokens"].get<int>());
}

TEST_F(SystemTest, EveryProviderFailingIsAProviderErrorWithCauses) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"f","message":"please fail with a 401"})"));
  auto err = ws->ReadUntil("error", "f");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "provider_error");
  ASSERT_TRUE((*err)["causes"].is_array());
  ASSERT_FALSE((*err)["causes"].empty());
  EXPECT_EQ((*err)["causes"][0]["provider"], "openai");
}

TEST_F(SystemTest, BadInputGetsClearErrorsAndTheConnectionStaysOpen) {
  auto ws = Connect();
  struct Case {
    std::string frame, code, mention;
  };
  std::vector<Case> cases = {
      {"not json", "invalid_json", ""},
      {"[1,2]", "invalid_json", ""},
      {R"({"message":"no type"})", "invalid_message", "type"},
      {R"({"type":"teleport","id":"t"})", "unknown_type", ""},
      {R"({"type":"chat","id":"x"})", "invalid_message", "message"},
      {R"({"type":"chat","id":"x","message":5})", "invalid_message", "message"},
      {R"({"type":"chat","id":"x","message":""})", "invalid_message", "message"},
      {R"({"type":"self_coding_request","id":"s"})", "invalid_message", "task"},
      {R"({"type":"ping","id":""})", "invalid_message", "id"},
  };
  for (const auto& c : cases) {
    ASSERT_TRUE(ws->SendText(c.frame));
    auto err = ws->ReadUntil("error");
    ASSERT_TRUE(err) << c.frame;
    EXPECT_EQ((*err)["code"], c.code) << c.frame;
    if (!c.mention.empty()) {
      EXPECT_NE((*err)["message"].get<std::string>().find(c.mention), std::string::npos)
          << c.frame << " -> " << err->dump();
    }
  }
  ASSERT_TRUE(ws->SendBinary("\x01\x02"));
  auto bin = ws->ReadUntil("error");
  ASSERT_TRUE(bin);
  EXPECT_EQ((*bin)["code"], "invalid_message");
  // Still open and answering.
  ASSERT_TRUE(ws->SendText(R"({"type":"ping","id":"p"})"));
  auto pong = ws->ReadUntil("pong", "p");
  ASSERT_TRUE(pong);
}

TEST_F(SystemTest, OversizedFrameIsTooLargeThenClose1009) {
  auto ws = Connect();
  std::string big = R"({"type":"chat","message":")" + std::string(70000, 'a') + "\"}";
  ASSERT_TRUE(ws->SendText(big));
  auto err = ws->ReadUntil("error");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "too_large");
  EXPECT_FALSE(ws->Read(5s).has_value());
  EXPECT_TRUE(ws->closed());
  EXPECT_EQ(ws->close_code(), 1009);
}

TEST_F(SystemTest, StateListsEveryServiceWithHarmony) {
  auto ws = std::make_unique<WsClient>();
  ASSERT_TRUE(ws->Connect(system_->gateway()->port("http")));
  ASSERT_TRUE(ws->SendText(R"({"type":"consciousness_query","id":"q"})"));
  auto state = ws->ReadUntil("consciousness_state", "q");
  ASSERT_TRUE(state);
  EXPECT_GE((*state)["harmony"].get<double>(), 0.9);
  EXPECT_EQ((*state)["status"], "healthy");
  std::vector<std::string> names;
  for (const auto& m : (*state)["modules"]) names.push_back(m["name"]);
  EXPECT_NE(std::find(names.begin(), names.end(), "router"), names.end());
  bool has_broker = false;
  for (const auto& n : names) has_broker |= n.rfind("llm-broker", 0) == 0;
  EXPECT_TRUE(has_broker);
  EXPECT_TRUE((*state)["load"].contains("queue_depth"));
  // The gateway describes itself too, with its counters.
  for (const char* name : {"gateway", "gateway/admission", "gateway/broadcaster"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
  }
  for (const auto& m : (*state)["modules"]) {
    if (m["name"] == "gateway") {
      EXPECT_EQ(m["service"], "gateway");
      EXPECT_EQ(m["status"], "healthy");
      EXPECT_GE(m["counters"]["connections"].get<double>(), 1) << m.dump();
      EXPECT_GE(m["in_flight"].get<int64_t>(), 1) << "the query itself is in flight";
    }
    if (m["name"] == "gateway/admission") {
      EXPECT_TRUE(m["counters"].contains("refused")) << m.dump();
    }
  }
}

TEST_F(SystemTest, EveryServiceServesItsMetrics) {
  // Make sure there was traffic on every hop first.
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"m","message":"Hello, consciousness system!"})"));
  ASSERT_TRUE(ws->ReadUntil("chat_response", "m"));

  struct Expect {
    Process* process;
    std::vector<std::string> prefixes;
  };
  std::vector<Expect> all = {
      {system_->gateway(), {"anima_gateway_connections", "anima_gateway_frames_received_total"}},
      {system_->router(), {"anima_router_requests_total", "anima_grpc_server_handled_total"}},
      {system_->broker(),
       {"anima_broker_provider_requests_total", "anima_grpc_server_handled_total"}},
      {system_->sim(), {"anima_sim_requests_total"}},
  };
  for (const auto& e : all) {
    auto metrics = ScrapeMetrics(e.process->port("metrics"));
    ASSERT_FALSE(metrics.empty()) << e.process->log_path();
    for (std::string want : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                             "process_open_fds", "process_start_time_seconds"}) {
      EXPECT_TRUE(metrics.count(want)) << want << " missing on " << e.process->log_path();
    }
    for (const auto& prefix : e.prefixes) {
      bool found = false;
      for (const auto& [k, v] : metrics) found |= k.rfind(prefix, 0) == 0;
      EXPECT_TRUE(found) << prefix << " missing on " << e.process->log_path();
    }
  }
  auto router_metrics = ScrapeMetrics(system_->router()->port("metrics"));
  EXPECT_GE(router_metrics["anima_router_requests_total{outcome=\"ok\",type=\"chat\"}"], 1);
}

TEST_F(SystemTest, HealthAndReadiness) {
  EXPECT_EQ(HttpRequest(system_->gateway()->port("http"), "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(system_->gateway()->port("http"), "GET", "/readyz").status, 200);
  EXPECT_EQ(HttpRequest(system_->gateway()->port("http"), "GET", "/nope").status, 404);
}

// Waits until the simulator has seen `n` streams cut off by their client.
bool SimSawCancellations(Process& sim, double n) {
  for (int i = 0; i < 200; ++i) {
    if (ScrapeMetrics(sim.port("metrics"))["anima_sim_streams_cancelled_total"] >= n) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

TEST_F(SystemTest, CancelStopsTheProviderRequest) {
  double before =
      ScrapeMetrics(system_->sim()->port("metrics"))["anima_sim_streams_cancelled_total"];
  auto ws = Connect();
  ASSERT_TRUE(
      ws->SendText(R"({"type":"chat","id":"slow","message":"take your time","stream":true})"));
  // Give the request time to reach the provider, then cancel it.
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(ws->SendText(R"({"type":"cancel","id":"k","target_id":"slow"})"));
  auto err = ws->ReadUntil("error", "slow");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "cancelled");
  EXPECT_TRUE(SimSawCancellations(*system_->sim(), before + 1));
}

TEST_F(SystemTest, TimeoutMsEndsTheRequestAndTheProviderCall) {
  double before =
      ScrapeMetrics(system_->sim()->port("metrics"))["anima_sim_streams_cancelled_total"];
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(
      R"({"type":"chat","id":"t","message":"take your time","stream":true,"timeout_ms":300})"));
  auto err = ws->ReadUntil("error", "t");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "deadline_exceeded");
  EXPECT_TRUE(SimSawCancellations(*system_->sim(), before + 1));
}

TEST_F(SystemTest, AClientThatDisconnectsStopsTheProviderRequest) {
  double before =
      ScrapeMetrics(system_->sim()->port("metrics"))["anima_sim_streams_cancelled_total"];
  {
    auto ws = Connect();
    ASSERT_TRUE(
        ws->SendText(R"({"type":"chat","id":"gone","message":"take your time","stream":true})"));
    std::this_thread::sleep_for(300ms);
  }  // the client goes away
  EXPECT_TRUE(SimSawCancellations(*system_->sim(), before + 1));
}

// The state follows a back end that dies and comes back.
TEST_F(SystemTest, StateShowsAKilledBrokerDownAndThenBack) {
  auto broker_state = [&]() {
    WsClient ws;
    EXPECT_TRUE(ws.Connect(system_->gateway()->port("http")));
    ws.SendText(R"({"type":"consciousness_query","id":"q"})");
    auto state = ws.ReadUntil("consciousness_state", "q");
    std::string status = "missing";
    double harmony = state ? (*state)["harmony"].get<double>() : -1;
    if (state) {
      for (const auto& m : (*state)["modules"]) {
        if (m["name"] == "llm-broker") status = m["status"];
      }
    }
    return std::make_pair(status, harmony);
  };
  auto wait_for = [&](const std::string& want) {
    for (int i = 0; i < 100; ++i) {
      auto [status, harmony] = broker_state();
      if (status == want) return harmony;
      std::this_thread::sleep_for(100ms);
    }
    return -1.0;
  };
  double healthy = wait_for("healthy");
  ASSERT_GE(healthy, 0.9);
  system_->broker()->Signal(SIGKILL);
  system_->broker()->Wait();
  double down = wait_for("down");
  ASSERT_GE(down, 0);
  EXPECT_LT(down, healthy);

  ASSERT_TRUE(system_->Restart(system_->broker()));
  EXPECT_GE(wait_for("healthy"), 0.9);
}

// A router whose chat is normal priority with room for one at a time and one waiting: the
// scheduler's promises as a client sees them.
TEST_F(SystemTest, PrioritiesAndOverloadThroughTheScheduler) {
  std::string dir = MakeTempDir("anima-sched");
  std::ofstream(dir + "/router.json") << R"({
    "priorities": {"chat": "normal"},
    "scheduler": {"max_in_flight": 1, "queue_capacity": {"normal": 1}}})";
  auto router = Process::Start("anima-router",
                               {"--port=0", "--metrics-port=0", "--config=" + dir + "/router.json",
                                "--broker=" + system_->broker()->address("grpc")});
  ASSERT_NE(router, nullptr);
  auto gateway = Process::Start(
      "anima-gateway", {"--port=0", "--metrics-port=0", "--router=" + router->address("grpc")});
  ASSERT_NE(gateway, nullptr);
  WsClient ws;
  ASSERT_TRUE(ws.Connect(gateway->port("http")));
  ws.Ignore("consciousness_state");
  ws.Ignore("welcome");
  ASSERT_TRUE(ws.SendText(R"({"type":"chat","id":"running","message":"take your time"})"));
  // Wait until the first holds the only slot, so the next one has to queue.
  for (int i = 0; i < 100; ++i) {
    if (ScrapeMetrics(router->port("metrics"))["anima_router_in_flight"] >= 1) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(
      ws.SendText(R"({"type":"chat","id":"queued","message":"Hello, consciousness system!"})"));
  for (int i = 0; i < 100; ++i) {
    if (ScrapeMetrics(router->port("metrics"))["anima_router_queue_depth{priority=\"normal\"}"] >=
        1) {
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(ws.SendText(R"({"type":"chat","id":"rejected","message":"one more"})"));
  auto overloaded = ws.ReadUntil("error", "rejected");
  ASSERT_TRUE(overloaded);
  EXPECT_EQ((*overloaded)["code"], "overloaded");
  EXPECT_GT((*overloaded)["retry_after_ms"].get<int>(), 0);

  // High priority is not held back by the full normal class.
  ASSERT_TRUE(ws.SendText(R"({"type":"consciousness_query","id":"high"})"));
  auto state = ws.Read();
  ASSERT_TRUE(state);
  EXPECT_EQ((*state)["id"], "high");
  EXPECT_EQ((*state)["load"]["queue_depth"]["normal"], 1);

  // Freeing the slot starts the queued chat.
  ASSERT_TRUE(ws.SendText(R"({"type":"cancel","id":"c","target_id":"running"})"));
  auto cancelled = ws.ReadUntil("error", "running");
  ASSERT_TRUE(cancelled);
  EXPECT_EQ((*cancelled)["code"], "cancelled");
  auto answer = ws.ReadUntil("chat_response", "queued");
  ASSERT_TRUE(answer);
  auto metrics = ScrapeMetrics(router->port("metrics"));
  EXPECT_EQ(metrics["anima_router_rejected_total{priority=\"normal\"}"], 1);
}

// Runs last among the chat tests (gtest runs tests in declaration order).
TEST_F(SystemTest, KilledRouterGivesUnavailableAndRecoveryOnceBack) {
  system_->router()->Signal(SIGKILL);
  system_->router()->Wait();
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"u","message":"anyone there?"})"));
  auto err = ws->ReadUntil("error", "u");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "unavailable");
  // Readiness follows the router's health within a few probe intervals.
  int ready = 200;
  for (int i = 0; i < 100 && ready != 503; ++i) {
    ready = HttpRequest(system_->gateway()->port("http"), "GET", "/readyz").status;
    if (ready != 503) std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(ready, 503);

  ASSERT_TRUE(system_->Restart(system_->router()));
  // The gateway reconnects by itself; the same connection works again within a few tries.
  bool recovered = false;
  for (int i = 0; i < 50 && !recovered; ++i) {
    std::string id = "r" + std::to_string(i);
    ASSERT_TRUE(ws->SendText(
        nlohmann::json{{"type", "chat"}, {"id", id}, {"message", "Hello, consciousness system!"}}
            .dump()));
    auto frame = ws->Read();
    ASSERT_TRUE(frame);
    recovered = (*frame)["type"] == "chat_response";
    if (!recovered) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(recovered);
}

TEST_F(SystemTest, SigtermStopsEveryServiceCleanly) {
  for (auto* p : {system_->gateway(), system_->router(), system_->broker(), system_->sim()}) {
    auto start = std::chrono::steady_clock::now();
    p->Signal(SIGTERM);
    EXPECT_EQ(p->Wait(), 0) << p->log_path();
    std::cerr << p->log_path() << " stopped in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - start)
                     .count()
              << " ms\n";
  }
}

}  // namespace
}  // namespace anima::testing
