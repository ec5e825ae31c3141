// The OpenAI-compatible API through the real binaries: simulator, broker, router and gateway on
// free ports.
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"

namespace anima::testing {
namespace {

using Json = nlohmann::json;

class OpenAiSystemTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + SourceDir() + "/tests/testdata/sim_rules.json"}));
    ASSERT_TRUE(system_->StartBroker());
    ASSERT_TRUE(system_->StartRouter());
    ASSERT_TRUE(system_->StartGateway());
  }

  static void TearDownTestSuite() { system_.reset(); }

  static inline std::unique_ptr<System> system_;
};

constexpr char kPrompt[] = "Hello, consciousness system!";
// What the simulator's rules answer to kPrompt.
constexpr char kReply[] = "Hello! I am here and aware. How can I help you today?";

TEST_F(OpenAiSystemTest, ChatCompletionReturnsTheSimulatorsReply) {
  Json body = {{"model", "auto"},
               {"messages",
                {{{"role", "system"}, {"content", "You are Anima."}},
                 {{"role", "user"}, {"content", kPrompt}}}}};
  auto r =
      HttpRequest(system_->gateway()->port("http"), "POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body << system_->gateway()->Log() << system_->router()->Log();
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], kReply);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_GT(j["usage"]["completion_tokens"].get<int>(), 0);
}

TEST_F(OpenAiSystemTest, StreamedDeltasAddUpToTheReply) {
  Json body = {{"messages", {{{"role", "user"}, {"content", kPrompt}}}},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto r =
      HttpRequest(system_->gateway()->port("http"), "POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::string joined;
  std::string last;
  bool usage = false;
  size_t pos = 0;
  while ((pos = r.body.find("data: ", pos)) != std::string::npos) {
    size_t end = r.body.find("\n\n", pos);
    ASSERT_NE(end, std::string::npos) << r.body;
    last = r.body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (last == "[DONE]") break;
    Json chunk = Json::parse(last);
    if (chunk.contains("usage")) usage = true;
    if (!chunk["choices"].empty() && chunk["choices"][0]["delta"].contains("content")) {
      joined += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(last, "[DONE]");
  EXPECT_EQ(joined, kReply);
  EXPECT_TRUE(usage);
}

TEST_F(OpenAiSystemTest, ModelsListsTheBrokersProviders) {
  auto r = HttpRequest(system_->gateway()->port("http"), "GET", "/v1/models");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j = Json::parse(r.body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_FALSE(j["data"].empty()) << r.body;
  for (const auto& m : j["data"]) {
    EXPECT_EQ(m["object"], "model");
    EXPECT_EQ(m["id"].get<std::string>().rfind(m["owned_by"].get<std::string>() + "/", 0), 0u);
  }
}

}  // namespace
}  // namespace anima::testing
