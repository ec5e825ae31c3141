// Two principals on one gateway, through the real gateway, router, broker, simulator and
// self-coding binaries: neither reads nor writes the other's conversation (with the same
// conversation_id), nor watches or cancels the other's jobs; the admin can; job quotas hold.
#include <fstream>
#include <regex>

#include "gateway/principals.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"

namespace anima::testing {
namespace {

using nlohmann::json;

class TenantsSystemTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string dir = MakeTempDir("anima-tenants-system");
    std::string keys = dir + "/keys.json";
    json doc = {{"tiers", {{"small", {{"jobs_in_flight", 1}}}}},
                {"principals",
                 {{"alice", {{"tier", "small"}}},
                  {"bob", {{"tier", "small"}}},
                  {"ops", {{"role", "admin"}}}}},
                {"keys",
                 {{{"principal", "alice"}, {"sha256", gateway::KeyRing::Sha256Hex("key-alice")}},
                  {{"principal", "bob"}, {"sha256", gateway::KeyRing::Sha256Hex("key-bob")}},
                  {{"principal", "ops"}, {"sha256", gateway::KeyRing::Sha256Hex("key-ops")}}}}};
    std::ofstream(keys) << doc.dump();
    system_ = std::make_unique<System>();
    ASSERT_TRUE(
        system_->StartSim({"--rules=" + SourceDir() + "/tests/testdata/self_coding_rules.json"}));
    ASSERT_TRUE(system_->StartBroker());
    ASSERT_TRUE(system_->StartSelfCoding(MakeTempDir("anima-tenants-jobs")));
    ASSERT_TRUE(system_->StartRouter());
    ASSERT_TRUE(system_->StartGateway({"--auth-keys-file=" + keys}));
  }
  static void TearDownTestSuite() { system_.reset(); }

  static std::unique_ptr<WsClient> Connect(const std::string& key) {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(
        ws->Connect(system_->gateway()->port("http"), "/", {{"Authorization", "Bearer " + key}}))
        << ws->error();
    ws->Ignore("consciousness_state");
    auto welcome = ws->Read();
    EXPECT_TRUE(welcome && (*welcome)["type"] == "welcome");
    return ws;
  }

  // The terminal frame of request `id`, skipping deltas, progress and acceptance.
  static json Await(WsClient& ws, const std::string& id, std::chrono::milliseconds timeout = 60s) {
    for (;;) {
      auto f = ws.Read(timeout);
      if (!f) return json();
      if ((*f)["id"] != id) continue;
      std::string type = (*f)["type"];
      if (type == "chat_response" || type == "error" || type == "self_coding_result" ||
          type == "self_coding_jobs") {
        return *f;
      }
    }
  }

  static json Answer(WsClient& ws, const json& frame, std::chrono::milliseconds timeout = 60s) {
    EXPECT_TRUE(ws.SendText(frame.dump()));
    return Await(ws, frame["id"], timeout);
  }

  // The first frame answering `frame` (for a job: its acceptance, long before its end).
  static json First(WsClient& ws, const json& frame) {
    EXPECT_TRUE(ws.SendText(frame.dump()));
    for (;;) {
      auto f = ws.Read(30s);
      if (!f) return json();
      if ((*f)["id"] == frame["id"]) return *f;
    }
  }

  static json Chat(WsClient& ws, const std::string& id, const std::string& conversation,
                   const std::string& message) {
    json frame = {{"type", "chat"}, {"id", id}, {"message", message}};
    if (!conversation.empty()) frame["conversation_id"] = conversation;
    return Answer(ws, frame);
  }

  static inline std::unique_ptr<System> system_;
};

// The simulator counts every word of every message it is sent as a prompt token, so a reply's
// prompt_tokens tell how much conversation memory the router sent with the message.
TEST_F(TenantsSystemTest, ConversationsAreThePrincipals) {
  auto alice = Connect("key-alice");
  auto bob = Connect("key-bob");
  json first = Chat(*alice, "a1", "shared", "the secret number is forty two");
  ASSERT_EQ(first["type"], "chat_response") << first.dump();
  EXPECT_EQ(first["conversation_id"], "shared");
  json again = Chat(*alice, "a2", "shared", "what was it");
  ASSERT_EQ(again["type"], "chat_response");
  // Alice's second message carries her first turn: memory works for her.
  json fresh = Chat(*alice, "a3", "", "what was it");
  EXPECT_GT(again["usage"]["prompt_tokens"].get<int>(), fresh["usage"]["prompt_tokens"].get<int>());

  // Bob with the same conversation id starts an empty conversation of his own...
  json theirs = Chat(*bob, "b1", "shared", "what was it");
  ASSERT_EQ(theirs["type"], "chat_response");
  EXPECT_EQ(theirs["usage"]["prompt_tokens"], fresh["usage"]["prompt_tokens"]);
  // ...and what he writes there never reaches Alice's.
  json alice_after = Chat(*alice, "a4", "shared", "what was it");
  EXPECT_EQ(alice_after["usage"]["prompt_tokens"].get<int>(),
            again["usage"]["prompt_tokens"].get<int>() +
                again["usage"]["completion_tokens"].get<int>() + 3);

  // Ids the router makes are 128 random bits.
  std::regex conv("conv-[0-9a-f]{32}");
  EXPECT_TRUE(std::regex_match(fresh["conversation_id"].get<std::string>(), conv))
      << fresh["conversation_id"];
  EXPECT_NE(fresh["conversation_id"], Chat(*alice, "a5", "", "x")["conversation_id"]);
}

TEST_F(TenantsSystemTest, JobsAreThePrincipalsAndTheAdminSeesAll) {
  auto alice = Connect("key-alice");
  auto bob = Connect("key-bob");
  auto ops = Connect("key-ops");
  std::ifstream in(SourceDir() + "/docs/examples/self-coding-demo.json");
  json demo = json::parse(in);
  demo["id"] = "job";
  ASSERT_TRUE(alice->SendText(demo.dump()));
  auto accepted = alice->ReadUntil("self_coding_accepted", "job", 30s);
  ASSERT_TRUE(accepted);
  std::string job_id = (*accepted)["job_id"];
  EXPECT_TRUE(std::regex_match(job_id, std::regex("job-[0-9a-f]{32}"))) << job_id;
  json result = Await(*alice, "job");
  ASSERT_EQ(result["status"], "succeeded") << result.dump();

  // Bob: exactly what an unknown id gets.
  json unknown = Answer(*bob, {{"type", "self_coding_watch"},
                               {"id", "u"},
                               {"job_id", "job-00000000000000000000000000000000"}});
  ASSERT_EQ(unknown["code"], "not_found") << unknown.dump();
  json watch = Answer(*bob, {{"type", "self_coding_watch"}, {"id", "w"}, {"job_id", job_id}});
  EXPECT_EQ(watch["code"], "not_found");
  std::string shown = unknown["message"];
  EXPECT_EQ(watch["message"], std::regex_replace(shown, std::regex("job-0{32}"), job_id));
  json cancel = Answer(*bob, {{"type", "self_coding_cancel"}, {"id", "c"}, {"job_id", job_id}});
  EXPECT_EQ(cancel["code"], "not_found");

  // Alice and the admin see the job and its whole history.
  json own = Answer(*alice, {{"type", "self_coding_watch"}, {"id", "w2"}, {"job_id", job_id}});
  EXPECT_EQ(own["status"], "succeeded");
  json admin = Answer(*ops, {{"type", "self_coding_watch"}, {"id", "w3"}, {"job_id", job_id}});
  EXPECT_EQ(admin["type"], "self_coding_result");
  EXPECT_EQ(admin["status"], "succeeded");

  // Lists: each principal's own jobs; every principal's for the admin who asks for all.
  auto listed = [&](WsClient& who, const json& frame) {
    json answer = Answer(who, frame);
    EXPECT_EQ(answer["type"], "self_coding_jobs") << answer.dump();
    std::optional<json> found;
    for (const json& job : answer.value("jobs", json::array())) {
      if (job["job_id"] == job_id) found = job;
    }
    return found;
  };
  auto mine = listed(*alice, {{"type", "self_coding_list"}, {"id", "l1"}});
  ASSERT_TRUE(mine);
  EXPECT_EQ((*mine)["status"], "succeeded");
  EXPECT_EQ((*mine)["principal"], "alice");
  EXPECT_EQ((*mine)["attempts"], 2);
  // The demo's task is over 200 characters: a list shows its start.
  EXPECT_EQ((*mine)["task"], demo["task"].get<std::string>().substr(0, 200) + "…");
  EXPECT_FALSE(listed(*bob, {{"type", "self_coding_list"}, {"id", "l2"}}));
  EXPECT_FALSE(listed(*ops, {{"type", "self_coding_list"}, {"id", "l3"}}));
  auto all = listed(*ops, {{"type", "self_coding_list"}, {"id", "l4"}, {"all", true}});
  ASSERT_TRUE(all);
  EXPECT_EQ((*all)["principal"], "alice");
  EXPECT_FALSE(listed(*alice, {{"type", "self_coding_list"}, {"id", "l5"}, {"status", "failed"}}));
  json refused = Answer(*bob, {{"type", "self_coding_list"}, {"id", "l6"}, {"all", true}});
  EXPECT_EQ(refused["code"], "invalid_message") << refused.dump();
}

TEST_F(TenantsSystemTest, JobsInFlightIsAQuota) {
  auto bob = Connect("key-bob");
  json slow = {{"type", "self_coding_request"}, {"id", "slow"}, {"task", "Slow task: wait"}};
  ASSERT_TRUE(bob->SendText(slow.dump()));
  auto accepted = bob->ReadUntil("self_coding_accepted", "slow", 30s);
  ASSERT_TRUE(accepted);
  json second = Answer(*bob, {{"type", "self_coding_request"}, {"id", "two"}, {"task", "x"}}, 30s);
  EXPECT_EQ(second["code"], "quota_exceeded") << second.dump();
  EXPECT_EQ(second["limit"], "jobs_in_flight");
  EXPECT_GT(second["retry_after_ms"].get<int64_t>(), 0);
  // Alice is not held to Bob's jobs: hers is accepted (its first answer, not its end, which is
  // the simulator's 30 s away).
  auto alice = Connect("key-alice");
  json hers =
      First(*alice, {{"type", "self_coding_request"}, {"id", "h"}, {"task", "Slow task: x"}});
  EXPECT_EQ(hers["type"], "self_coding_accepted") << hers.dump();
  // Cancelling the first job, while its broker call is in flight, ends it and frees the slot.
  json cancelled = Answer(
      *bob, {{"type", "self_coding_cancel"}, {"id", "c"}, {"job_id", (*accepted)["job_id"]}});
  EXPECT_EQ(cancelled["status"], "cancelled") << cancelled.dump();
  json again = First(*bob, {{"type", "self_coding_request"}, {"id", "three"}, {"task", "x"}});
  EXPECT_EQ(again["type"], "self_coding_accepted") << again.dump();
}

}  // namespace
}  // namespace anima::testing
