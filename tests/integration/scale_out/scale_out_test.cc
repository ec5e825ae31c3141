// Two of every service sharing Redis and PostgreSQL, as `tools/anima up --replicas=2` runs them:
// the real gateway, router and self-coding binaries twice each, one broker and the simulator, a
// real redis-server and a real PostgreSQL 15 started here. What a client sees: a conversation
// continues across gateways and routers; a principal's rate limit is one limit across both
// gateways; a job submitted on one gateway is watched on the other; kill -9 of the self-coding
// replica running a job loses no event; kill -9 of a router costs the request it held and no
// more; Redis and PostgreSQL stopped and started again: the documented degradation, then recovery.
//
// The tests share one system and run in the order written; each leaves it running.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <thread>

#include "gateway/principals.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/support/postgres_server.h"
#include "tests/support/redis_server.h"

namespace anima::testing {
namespace {

using nlohmann::json;

// One replica: its binary and flags, so that it can be started again on the gRPC port it had.
struct Replica {
  std::string binary;
  std::vector<std::string> flags;
  std::unique_ptr<Process> process;
  int grpc_port = 0;

  bool Start() {
    std::vector<std::string> args = {"--port=" + std::to_string(grpc_port), "--metrics-port=0"};
    args.insert(args.end(), flags.begin(), flags.end());
    process = Process::Start(binary, args);
    if (process == nullptr) return false;
    if (grpc_port == 0 && binary != "anima-gateway") grpc_port = process->port("grpc");
    return true;
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port); }
};

std::string Targets(const std::vector<Replica>& replicas) {
  std::string out = "ipv4:";
  for (size_t i = 0; i < replicas.size(); ++i) out += (i ? "," : "") + replicas[i].address();
  return out;
}

double Metric(const Process& p, const std::string& name) {
  auto m = ScrapeMetrics(p.port("metrics"));
  auto it = m.find(name);
  return it == m.end() ? 0 : it->second;
}

class ScaleOutTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    postgres_ = PostgresServer::Start();
    ASSERT_NE(postgres_, nullptr);
    std::string pg_url = postgres_->CreateDatabase("anima_scale_out");

    std::string dir = MakeTempDir("anima-scale-out");
    std::string keys = dir + "/keys.json";
    json doc = {{"tiers", {{"capped", {{"requests_per_minute", 4}}}}},
                {"principals", {{"alice", json::object()}, {"carol", {{"tier", "capped"}}}}},
                {"keys",
                 {{{"principal", "alice"}, {"sha256", gateway::KeyRing::Sha256Hex("key-alice")}},
                  {{"principal", "carol"}, {"sha256", gateway::KeyRing::Sha256Hex("key-carol")}}}}};
    std::ofstream(keys) << doc.dump();

    sim_ = {"anima-llm-sim",
            {"--rules=" + SourceDir() + "/tests/integration/scale_out/scale_out_rules.json"}};
    ASSERT_TRUE(sim_.Start());
    broker_ = {"anima-llm-broker",
               {"--config=" + SourceDir() + "/services/llm_broker/config.sim.json",
                "--openai-base-url=http://127.0.0.1:" + std::to_string(sim_.process->port("http")) +
                    "/v1"}};
    ASSERT_TRUE(broker_.Start());
    for (int i = 0; i < 2; ++i) {
      coders_.push_back(
          {"anima-self-coding",
           {"--broker=" + broker_.address(), "--data-dir=" + MakeTempDir("anima-scale-out-jobs"),
            "--postgres=" + pg_url, "--lease-ms=3000", "--heartbeat-ms=500"}});
      ASSERT_TRUE(coders_.back().Start());
    }
    for (int i = 0; i < 2; ++i) {
      routers_.push_back({"anima-router",
                          {"--redis=" + redis_->url(), "--broker=" + broker_.address(),
                           "--self-coding=" + Targets(coders_),
                           // more than the conversation test's turns, so each one still grows
                           "--memory-turns=32"}});
      ASSERT_TRUE(routers_.back().Start());
    }
    for (int i = 0; i < 2; ++i) {
      gateways_.push_back({"anima-gateway",
                           {"--redis=" + redis_->url(), "--router=" + Targets(routers_),
                            "--auth-keys-file=" + keys}});
      ASSERT_TRUE(gateways_.back().Start());
    }
  }

  static void TearDownTestSuite() {
    gateways_.clear();
    routers_.clear();
    coders_.clear();
    broker_.process.reset();
    sim_.process.reset();
    postgres_.reset();
    redis_.reset();
  }

  static std::unique_ptr<WsClient> Connect(int gateway, const std::string& key = "key-alice") {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(ws->Connect(gateways_[gateway].process->port("http"), "/",
                            {{"Authorization", "Bearer " + key}}))
        << ws->error();
    ws->Ignore("consciousness_state");
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome && (*welcome)["type"] == "welcome");
    return ws;
  }

  // The terminal frame of request `id`: a response, an error or a job's result.
  static json Await(WsClient& ws, const std::string& id, std::chrono::milliseconds timeout = 60s) {
    for (;;) {
      auto f = ws.Read(timeout);
      if (!f) return json();
      if ((*f)["id"] != id) continue;
      std::string type = (*f)["type"];
      if (type == "chat_response" || type == "error" || type == "self_coding_result") return *f;
    }
  }

  static json Chat(WsClient& ws, const std::string& id, const std::string& conversation,
                   const std::string& message) {
    json frame = {{"type", "chat"}, {"id", id}, {"message", message}};
    if (!conversation.empty()) frame["conversation_id"] = conversation;
    EXPECT_TRUE(ws.SendText(frame.dump()));
    return Await(ws, id);
  }

  static json PacedJob(const std::string& id) {
    return {{"type", "self_coding_request"},
            {"id", id},
            {"task", "Paced task: a function answer() that returns 42"},
            {"language", "python"},
            {"tests",
             "from solution import answer\n\n\ndef test_answer():\n    assert answer() == 42\n"},
            {"max_attempts", 1}};
  }

  // Watches `job_id` through `gateway` to its end, watching again from the last seq seen whenever
  // the stream breaks (a replica died under it), as a client following PROTOCOL.md would. Every
  // seq seen lands in `seqs`, duplicates included.
  static json WatchToEnd(int gateway, const std::string& job_id, std::vector<int64_t>* seqs) {
    int64_t after = 0;
    auto deadline = std::chrono::steady_clock::now() + 120s;
    int round = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      auto ws = Connect(gateway);
      std::string id = "watch-" + std::to_string(round++);
      EXPECT_TRUE(ws->SendText(
          json{{"type", "self_coding_watch"}, {"id", id}, {"job_id", job_id}, {"after_seq", after}}
              .dump()));
      for (;;) {
        auto f = ws->Read(60s);
        if (!f) break;
        if ((*f)["id"] != id) continue;
        std::string type = (*f)["type"];
        if (type == "self_coding_progress") {
          int64_t seq = (*f)["seq"];
          seqs->push_back(seq);
          after = std::max(after, seq);
        } else if (type == "self_coding_result") {
          return *f;
        } else if (type == "error") {
          break;  // the replica serving the watch went away: watch again from `after`
        }
      }
      std::this_thread::sleep_for(200ms);
    }
    return json();
  }

  static inline std::unique_ptr<RedisServer> redis_;
  static inline std::unique_ptr<PostgresServer> postgres_;
  static inline Replica sim_, broker_;
  static inline std::vector<Replica> coders_, routers_, gateways_;
};

// Round robin spreads consecutive calls over both routers, so turns alternating between two
// gateways cross routers and gateways both ways; the simulator counts every word it is sent as a
// prompt token, so each turn's prompt_tokens show that every earlier turn came with it. A
// gateway's channel picks only among routers it is already connected to, and the gateway's own
// calls (state polls) share the rotation, so the first few turns may all land on one router: the
// test goes on (at most 20 turns) until both have served some.
TEST_F(ScaleOutTest, ConversationContinuesAcrossGatewaysAndRouters) {
  auto chats_served = [](Replica& router) {
    double chats = 0;
    for (const auto& [name, value] : ScrapeMetrics(router.process->port("metrics"))) {
      if (name.rfind("anima_router_requests_total{", 0) == 0 &&
          name.find("type=\"chat\"") != std::string::npos) {
        chats += value;
      }
    }
    return chats;
  };
  auto first = Connect(0);
  json turn = Chat(*first, "t0", "", "remember the word plum");
  ASSERT_EQ(turn["type"], "chat_response") << turn.dump();
  std::string conversation = turn["conversation_id"];
  int previous = turn["usage"]["prompt_tokens"];
  auto second = Connect(1);
  bool both_served = false;
  for (int i = 1; i <= 20 && !both_served; ++i) {
    WsClient& ws = i % 2 ? *second : *first;
    json next = Chat(ws, "t" + std::to_string(i), conversation, "and now?");
    ASSERT_EQ(next["type"], "chat_response") << next.dump();
    EXPECT_EQ(next["conversation_id"], conversation);
    int tokens = next["usage"]["prompt_tokens"];
    EXPECT_GT(tokens, previous) << "turn " << i << " came without the earlier ones";
    previous = tokens;
    if (i >= 4) both_served = chats_served(routers_[0]) > 0 && chats_served(routers_[1]) > 0;
  }
  EXPECT_TRUE(both_served) << "20 turns and a router served no chat; round robin did not spread "
                              "them (router chats: "
                           << chats_served(routers_[0]) << ", " << chats_served(routers_[1]) << ")";
}

// Carol may send 4 chats a minute wherever she connects: 3 on each gateway get exactly 4 answers.
TEST_F(ScaleOutTest, RateLimitIsOneLimitAcrossGateways) {
  auto a = Connect(0, "key-carol");
  auto b = Connect(1, "key-carol");
  int answered = 0, refused = 0;
  for (int i = 0; i < 6; ++i) {
    json r = Chat(i % 2 ? *b : *a, "r" + std::to_string(i), "", "hello");
    if (r["type"] == "chat_response") ++answered;
    if (r["type"] == "error") {
      EXPECT_EQ(r["code"], "quota_exceeded") << r.dump();
      EXPECT_EQ(r["limit"], "requests_per_minute");
      ++refused;
    }
  }
  EXPECT_EQ(answered, 4);
  EXPECT_EQ(refused, 2);
}

TEST_F(ScaleOutTest, JobSubmittedOnOneGatewayIsWatchedOnTheOther) {
  auto ws = Connect(0);
  ASSERT_TRUE(ws->SendText(PacedJob("job").dump()));
  auto accepted = ws->ReadUntil("self_coding_accepted", "job", 30s);
  ASSERT_TRUE(accepted);
  std::vector<int64_t> seqs;
  json result = WatchToEnd(1, (*accepted)["job_id"], &seqs);
  ASSERT_EQ(result["status"], "succeeded") << result.dump();
  ASSERT_FALSE(seqs.empty());
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], static_cast<int64_t>(i + 1));
}

// kill -9 of the replica running a job: the other re-claims it when the lease runs out and runs
// the attempt again; a watcher sees every event once, seq contiguous, and the job's result.
TEST_F(ScaleOutTest, KillingTheReplicaRunningAJobLosesNoEvent) {
  auto ws = Connect(0);
  ASSERT_TRUE(ws->SendText(PacedJob("paced").dump()));
  auto accepted = ws->ReadUntil("self_coding_accepted", "paced", 30s);
  ASSERT_TRUE(accepted);
  std::string job_id = (*accepted)["job_id"];
  int running = -1;
  ASSERT_TRUE(Eventually([&] {
    for (int i = 0; i < 2; ++i) {
      if (Metric(*coders_[i].process, "anima_selfcoding_running_jobs") >= 1) running = i;
    }
    return running >= 0;
  }));
  coders_[running].process->Signal(SIGKILL);
  coders_[running].process->Wait();

  std::vector<int64_t> seqs;
  json result = WatchToEnd(1, job_id, &seqs);
  EXPECT_EQ(result["status"], "succeeded") << result.dump();
  std::set<int64_t> distinct(seqs.begin(), seqs.end());
  EXPECT_EQ(distinct.size(), seqs.size()) << "an event was delivered twice";
  ASSERT_FALSE(seqs.empty());
  EXPECT_EQ(seqs.front(), 1);
  for (size_t i = 1; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], seqs[i - 1] + 1) << "seq gap";
  ASSERT_TRUE(coders_[running].Start());
}

// kill -9 of a router holding a chat: that chat gets an error, the next one is answered.
TEST_F(ScaleOutTest, KillingARouterCostsOnlyTheRequestItHeld) {
  auto ws = Connect(0);
  ASSERT_TRUE(ws->SendText(R"({"type":"chat","id":"slow","message":"take your time"})"));
  int holder = -1;
  ASSERT_TRUE(Eventually([&] {
    for (int i = 0; i < 2; ++i) {
      if (Metric(*routers_[i].process, "anima_router_in_flight") >= 1) holder = i;
    }
    return holder >= 0;
  }));
  routers_[holder].process->Signal(SIGKILL);
  routers_[holder].process->Wait();
  json lost = Await(*ws, "slow", 30s);
  EXPECT_EQ(lost["type"], "error") << lost.dump();
  json next = Chat(*ws, "after", "", "hello again");
  EXPECT_EQ(next["type"], "chat_response") << next.dump();
  ASSERT_TRUE(routers_[holder].Start());
}

// Redis down: chat still works (no memory, quotas on the local fallback) and nothing false is
// said; Redis back: memory works again by itself.
TEST_F(ScaleOutTest, RedisDownDegradesAndRecovers) {
  redis_->Stop();
  auto ws = Connect(0);
  json during = Chat(*ws, "d0", "", "is anyone there");
  EXPECT_EQ(during["type"], "chat_response") << during.dump();
  json during2 = Chat(*ws, "d1", during.value("conversation_id", ""), "and still?");
  EXPECT_EQ(during2["type"], "chat_response") << during2.dump();
  EXPECT_GT(
      Metric(*gateways_[0].process, "anima_gateway_quota_fallback_total{reason=\"unavailable\"}") +
          Metric(*gateways_[0].process, "anima_gateway_quota_fallback_total{reason=\"timeout\"}"),
      0);

  redis_->Restart();
  EXPECT_TRUE(Eventually(
      [&] {
        json a = Chat(*ws, "m0", "", "remember the word pear");
        if (a["type"] != "chat_response") return false;
        json b = Chat(*ws, "m1", a["conversation_id"], "and now?");
        return b["type"] == "chat_response" &&
               b["usage"]["prompt_tokens"].get<int>() > a["usage"]["prompt_tokens"].get<int>() + 3;
      },
      30s))
      << "conversation memory did not come back with Redis";
}

// PostgreSQL down: a new job is refused as unavailable; PostgreSQL back: jobs are taken again.
TEST_F(ScaleOutTest, PostgresDownRefusesJobsThenRecovers) {
  postgres_->Stop();
  auto ws = Connect(1);
  ASSERT_TRUE(ws->SendText(PacedJob("down").dump()));
  json refused = Await(*ws, "down", 30s);
  EXPECT_EQ(refused["type"], "error") << refused.dump();
  EXPECT_EQ(refused["code"], "unavailable") << refused.dump();

  postgres_->Restart();
  std::string job_id;
  ASSERT_TRUE(Eventually(
      [&] {
        static int n = 0;
        std::string id = "up" + std::to_string(n++);
        if (!ws->SendText(PacedJob(id).dump())) return false;
        for (;;) {
          auto f = ws->Read(30s);
          if (!f) return false;
          if ((*f)["id"] != id) continue;
          if ((*f)["type"] == "self_coding_accepted") {
            job_id = (*f)["job_id"];
            return true;
          }
          if ((*f)["type"] == "error") return false;
        }
      },
      60s));
  std::vector<int64_t> seqs;
  EXPECT_EQ(WatchToEnd(0, job_id, &seqs)["status"], "succeeded");
}

}  // namespace
}  // namespace anima::testing
