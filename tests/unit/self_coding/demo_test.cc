// The demo (docs/examples/self-coding-demo.json) under the simulator's rules: the first attempt
// gets a scripted mistake, the retry prompt gets the fix. Guards the prompt phrases the rules
// match on.
#include <gtest/gtest.h>

#include <fstream>

#include "nlohmann/json.hpp"
#include "services/self_coding/pipeline.h"
#include "tests/unit/self_coding/fakes.h"
#include "tools/llm_sim/rules.h"

namespace anima::selfcoding {
namespace {

std::string SourceDir() {
  const char* dir = std::getenv("ANIMA_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

nlohmann::json LoadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
}

// Answers like the simulator would: the first matching rule's reply, else its default reply.
class RulesBroker : public BrokerClient {
 public:
  explicit RulesBroker(sim::RuleSet rules) : rules_(std::move(rules)) {}
  absl::StatusOr<anima::v1::CompletionResponse> Complete(
      const anima::v1::CompletionRequest& request, CancelToken* cancel) override {
    std::string prompt = request.messages(request.messages_size() - 1).content();
    const sim::Rule* rule = rules_.Match(prompt, "gpt-4o-mini");
    matched.push_back(rule != nullptr);
    anima::v1::CompletionResponse response;
    response.set_message(rules_.ReplyFor(rule, prompt, "gpt-4o-mini"));
    return response;
  }
  std::vector<bool> matched;

 private:
  sim::RuleSet rules_;
};

anima::v1::SubmitRequest DemoRequest() {
  nlohmann::json frame = LoadJson(SourceDir() + "/docs/examples/self-coding-demo.json");
  anima::v1::SubmitRequest spec;
  spec.set_task(frame.value("task", ""));
  spec.set_language(frame.value("language", ""));
  spec.set_tests(frame.value("tests", ""));
  spec.set_max_attempts(frame.value("max_attempts", 0));
  return spec;
}

class NullSink : public ProgressSink {
 public:
  void Progress(const std::string&, int, int, const std::string&) override {}
};

void ExpectDemoSucceedsOnTheSecondAttempt(const nlohmann::json& rules_json,
                                          const std::string& source) {
  auto rules = sim::RuleSet::FromJson(rules_json, source);
  ASSERT_TRUE(rules.ok()) << rules.status();
  RulesBroker broker(std::move(*rules));
  auto sandbox = testing::TestSandbox();
  JobPipeline pipeline(&broker, sandbox.get(), {});
  testing::TempDir dir;
  NullSink sink;
  CancelToken cancel;
  auto result = pipeline.Run(DemoRequest(), "job-demo", dir.path(), &sink, &cancel);
  EXPECT_EQ(result.status(), "succeeded") << result.reason();
  EXPECT_EQ(result.attempts(), 2);
  EXPECT_EQ(result.tests().passed(), 3);
  EXPECT_EQ(broker.matched, (std::vector<bool>{true, true}));
}

TEST(SelfCodingDemo, TheRulesToMergeMakeTheDemoFailOnceThenSucceed) {
  nlohmann::json rules = {
      {"rules", LoadJson(SourceDir() + "/tests/unit/self_coding/demo_rules.json")}};
  ExpectDemoSucceedsOnTheSecondAttempt(rules, "demo_rules.json");
}

TEST(SelfCodingDemo, TheSimulatorsDefaultRulesRunTheDemo) {
  nlohmann::json rules = LoadJson(SourceDir() + "/tools/llm_sim/rules.json");
  ASSERT_NE(rules.dump().find("Demo word_count"), std::string::npos)
      << "tools/llm_sim/rules.json lost the demo rules (tests/unit/self_coding/demo_rules.json); "
         "the README's demo depends on them";
  ExpectDemoSucceedsOnTheSecondAttempt(rules, "tools/llm_sim/rules.json");
}

}  // namespace
}  // namespace anima::selfcoding
