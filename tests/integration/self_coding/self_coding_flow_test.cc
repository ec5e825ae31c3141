// Self-coding end to end, as a client sees it: WebSocket frames through the real gateway,
// router, self-coding service (bubblewrap sandbox), broker and simulator binaries.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"

namespace anima::testing {
namespace {

using nlohmann::json;

json DemoRequest() {
  std::ifstream in(SourceDir() + "/docs/examples/self-coding-demo.json");
  return json::parse(in);
}

class SelfCodingFlowTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // Private (mkdtemp's 0700), as the service requires: workspaces are not kept in it.
    std::string data_dir = MakeTempDir("anima-sc-data");
    // A job whose service was killed is claimed again once its lease runs out: short here. The
    // binaries the System starts inherit the environment.
    setenv("ANIMA_SELF_CODING_LEASE_MS", "2000", 1);
    setenv("ANIMA_SELF_CODING_HEARTBEAT_MS", "300", 1);
    system_ = std::make_unique<System>();
    ASSERT_TRUE(
        system_->StartSim({"--rules=" + SourceDir() + "/tests/testdata/self_coding_rules.json"}));
    ASSERT_TRUE(system_->StartBroker());
    ASSERT_TRUE(system_->StartSelfCoding(data_dir));
    ASSERT_TRUE(system_->StartRouter());
    ASSERT_TRUE(system_->StartGateway());
  }

  static void TearDownTestSuite() { system_.reset(); }

  std::unique_ptr<WsClient> Connect() {
    auto ws = std::make_unique<WsClient>();
    EXPECT_TRUE(ws->Connect(system_->gateway()->port("http"))) << ws->error();
    ws->Ignore("consciousness_state");
    ws->Ignore("welcome");
    return ws;
  }

  // Reads the frames of one job until its result; checks the progress invariants on the way.
  // `after_seq`: the first progress event expected is after_seq + 1.
  static json ReadJob(WsClient& ws, const std::string& id, std::vector<json>* progress,
                      int64_t after_seq = 0) {
    int64_t last_seq = after_seq;
    int last_percent = -1;
    while (true) {
      auto frame = ws.Read(60s);
      if (!frame) return json();
      if ((*frame)["id"] != id) continue;
      std::string type = (*frame)["type"];
      if (type == "self_coding_progress") {
        EXPECT_EQ((*frame)["seq"].get<int64_t>(), last_seq + 1) << frame->dump();
        last_seq = (*frame)["seq"];
        EXPECT_GE((*frame)["percent"].get<int>(), last_percent) << frame->dump();
        last_percent = (*frame)["percent"];
        progress->push_back(*frame);
      } else if (type != "self_coding_accepted") {
        return *frame;
      }
    }
  }

  static inline std::unique_ptr<System> system_;
};

TEST_F(SelfCodingFlowTest, TheDemoFailsOnceThenSucceedsWithEveryStepStreamed) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(DemoRequest().dump()));
  auto accepted = ws->ReadUntil("self_coding_accepted", "demo-1");
  ASSERT_TRUE(accepted);
  std::string job_id = (*accepted)["job_id"];
  std::vector<json> progress;
  json result = ReadJob(*ws, "demo-1", &progress);
  ASSERT_EQ(result["type"], "self_coding_result") << result.dump();
  EXPECT_EQ(result["job_id"], job_id);
  EXPECT_EQ(result["status"], "succeeded");
  EXPECT_EQ(result["attempts"], 2);
  EXPECT_EQ(result["tests"]["passed"], 3);
  EXPECT_EQ(result["tests"]["failed"], 0);
  EXPECT_NE(result["files"]["solution.py"].get<std::string>().find(".lower()"), std::string::npos);
  std::vector<std::string> stages;
  for (const auto& p : progress) stages.push_back(p["stage"]);
  EXPECT_EQ(stages.front(), "queued");
  EXPECT_NE(std::find(stages.begin(), stages.end(), "testing"), stages.end());
  EXPECT_NE(std::find(stages.begin(), stages.end(), "retrying"), stages.end());
  EXPECT_EQ(stages.back(), "succeeded");
  EXPECT_EQ(progress.back()["percent"], 100);

  // Watching from every after_seq replays exactly what was missed, then the result.
  int64_t last = progress.back()["seq"];
  for (int64_t after = 0; after <= last; ++after) {
    std::string id = "w" + std::to_string(after);
    ASSERT_TRUE(ws->SendText(
        json{{"type", "self_coding_watch"}, {"id", id}, {"job_id", job_id}, {"after_seq", after}}
            .dump()));
    std::vector<json> replay;
    json end = ReadJob(*ws, id, &replay, after);
    ASSERT_EQ(end["type"], "self_coding_result") << end.dump();
    EXPECT_EQ(end["status"], "succeeded");
    ASSERT_EQ(static_cast<int64_t>(replay.size()), last - after) << "after_seq " << after;
    if (!replay.empty()) {
      EXPECT_EQ(replay.front()["seq"].get<int64_t>(), after + 1);
    }
  }
}

TEST_F(SelfCodingFlowTest, FailureAfterTheBudgetIsReportedWithTheTestOutput) {
  auto ws = Connect();
  json req = DemoRequest();
  req["id"] = "budget";
  req["max_attempts"] = 1;
  ASSERT_TRUE(ws->SendText(req.dump()));
  std::vector<json> progress;
  json result = ReadJob(*ws, "budget", &progress);
  ASSERT_EQ(result["type"], "self_coding_result") << result.dump();
  EXPECT_EQ(result["status"], "failed");
  EXPECT_EQ(result["attempts"], 1);
  EXPECT_FALSE(result["reason"].get<std::string>().empty());
  EXPECT_GT(result["tests"]["failed"].get<int>(), 0);
  EXPECT_FALSE(result["tests"]["output_tail"].get<std::string>().empty());
}

TEST_F(SelfCodingFlowTest, UnknownJobsAreNotFound) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(R"({"type":"self_coding_watch","id":"u","job_id":"job-nope"})"));
  auto err = ws->ReadUntil("error", "u");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "not_found");
  ASSERT_TRUE(ws->SendText(R"({"type":"self_coding_cancel","id":"c","job_id":"job-nope"})"));
  err = ws->ReadUntil("error", "c");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "not_found");
}

TEST_F(SelfCodingFlowTest, CancelEndsARunningJobAndASecondCancelIsAConflict) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(json{{"type", "self_coding_request"},
                                {"id", "slow"},
                                {"task", "Slow task: return 1"},
                                {"tests", "from solution import f\nassert f() == 1\n"}}
                               .dump()));
  auto accepted = ws->ReadUntil("self_coding_accepted", "slow");
  ASSERT_TRUE(accepted);
  std::string job_id = (*accepted)["job_id"];
  // Wait until it is generating (the simulator holds the answer for 30 s).
  while (true) {
    auto p = ws->ReadUntil("self_coding_progress", "slow", 30s);
    ASSERT_TRUE(p);
    if ((*p)["stage"] == "generating") break;
  }
  ASSERT_TRUE(
      ws->SendText(json{{"type", "self_coding_cancel"}, {"id", "cx"}, {"job_id", job_id}}.dump()));
  // Both the canceller and the job's own stream get the result, in either order.
  std::map<std::string, json> results;
  while (results.size() < 2) {
    auto frame = ws->Read(15s);
    ASSERT_TRUE(frame) << "results so far: " << results.size();
    if ((*frame)["type"] == "self_coding_result") results[(*frame)["id"]] = *frame;
  }
  EXPECT_EQ(results["cx"]["status"], "cancelled");
  EXPECT_EQ(results["slow"]["status"], "cancelled");

  ASSERT_TRUE(
      ws->SendText(json{{"type", "self_coding_cancel"}, {"id", "cy"}, {"job_id", job_id}}.dump()));
  auto err = ws->ReadUntil("error", "cy");
  ASSERT_TRUE(err);
  EXPECT_EQ((*err)["code"], "conflict");
}

TEST_F(SelfCodingFlowTest, AJobRunningWhenTheServiceWasKilledRunsAgainAfterARestart) {
  auto ws = Connect();
  ASSERT_TRUE(ws->SendText(json{
      {"type", "self_coding_request"},
      {"id", "r"},
      {"task", "Slow task: return 1"},
      {"tests", "from solution import f\nassert f() == 1\n"},
      {"max_attempts", 1}}.dump()));
  auto accepted = ws->ReadUntil("self_coding_accepted", "r");
  ASSERT_TRUE(accepted);
  std::string job_id = (*accepted)["job_id"];
  int64_t seen = 0;
  while (true) {
    auto p = ws->ReadUntil("self_coding_progress", "r", 30s);
    ASSERT_TRUE(p);
    seen = (*p)["seq"];
    if ((*p)["stage"] == "generating") break;
  }
  system_->self_coding()->Signal(SIGKILL);
  system_->self_coding()->Wait();
  // The client's stream ends with unavailable: the service it was watching is gone.
  auto gone = ws->ReadUntil("error", "r", 15s);
  ASSERT_TRUE(gone);
  EXPECT_EQ((*gone)["code"], "unavailable");

  // SQLite, one replica: once the dead process's lease has run out, the restarted one claims
  // the job and runs attempt 1 again; the events go on from where they were.
  ASSERT_TRUE(system_->Restart(system_->self_coding()));
  json watch = {
      {"type", "self_coding_watch"}, {"id", "rw"}, {"job_id", job_id}, {"after_seq", seen}};
  std::optional<json> result;
  std::vector<json> replay;
  // The router reconnects to the restarted service within a second or so.
  for (int i = 0; i < 50 && !result; ++i) {
    ASSERT_TRUE(ws->SendText(watch.dump()));
    replay.clear();
    json end = ReadJob(*ws, "rw", &replay, seen);
    if (end["type"] == "self_coding_result") {
      result = end;
    } else {
      std::this_thread::sleep_for(100ms);
    }
  }
  ASSERT_TRUE(result);
  EXPECT_EQ((*result)["status"], "succeeded") << result->dump();
  ASSERT_FALSE(replay.empty());
  EXPECT_EQ(replay.front()["seq"].get<int64_t>(), seen + 1);
  EXPECT_EQ(replay.front()["message"], "worker lost; attempt 1 re-run");
}

}  // namespace
}  // namespace anima::testing
