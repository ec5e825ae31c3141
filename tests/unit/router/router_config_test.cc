#include "services/router/router_config.h"

#include "gtest/gtest.h"

namespace anima::router {
namespace {

using nlohmann::json;

TEST(RouterConfigTest, DefaultsMatchTheOriginalPriorities) {
  auto c = DefaultRouterConfig();
  EXPECT_EQ(c.PriorityOf("chat"), Priority::kHigh);
  EXPECT_EQ(c.PriorityOf("self_coding_request"), Priority::kHigh);
  EXPECT_EQ(c.PriorityOf("consciousness_query"), Priority::kHigh);
  EXPECT_EQ(c.PriorityOf("anything_else"), Priority::kNormal);
  EXPECT_EQ(c.DeadlineOf("chat"), std::chrono::milliseconds(120000));
  EXPECT_EQ(c.ModuleFor("word_count"), nullptr);
}

TEST(RouterConfigTest, ParsesModulesPrioritiesAndScheduler) {
  auto c = ParseRouterConfig(json::parse(R"({
    "priorities": {"chat": "normal"},
    "default_priority": "low",
    "deadlines_ms": {"chat": 5000},
    "scheduler": {"max_in_flight": 8, "normal_weight": 2, "queue_capacity": {"low": 3}},
    "modules": [{"name": "word-count", "address": "127.0.0.1:50060",
                 "types": ["word_count"], "priority": "low", "deadline_ms": 2000}]
  })"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->PriorityOf("chat"), Priority::kNormal);
  EXPECT_EQ(c->PriorityOf("unlisted"), Priority::kLow);
  EXPECT_EQ(c->DeadlineOf("chat"), std::chrono::milliseconds(5000));
  EXPECT_EQ(c->DeadlineOf("word_count"), std::chrono::milliseconds(2000));
  EXPECT_EQ(c->scheduler.max_in_flight, 8);
  EXPECT_EQ(c->scheduler.normal_weight, 2);
  EXPECT_EQ(c->scheduler.queue_capacity[2], 3u);
  EXPECT_EQ(c->scheduler.queue_capacity[0], 1024u);
  ASSERT_NE(c->ModuleFor("word_count"), nullptr);
  EXPECT_EQ(c->ModuleFor("word_count")->address, "127.0.0.1:50060");
}

TEST(RouterConfigTest, ErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* error;
  };
  for (const auto& c : std::vector<Case>{
           {R"({"priorities": {"chat": "urgent"}})",
            "priorities.chat: must be one of high, normal, low"},
           {R"({"modules": [{"name": "m", "types": ["x"]}]})", "modules[0].address: is required"},
           {R"({"modules": [{"name": "m", "address": "a:1", "types": ["chat"]}]})",
            "modules[0].types: \"chat\" is handled by the router itself"},
           {R"({"modules": [{"name": "a", "address": "a:1", "types": ["x"]},
                            {"name": "b", "address": "b:1", "types": ["x"]}]})",
            "modules[1].types: \"x\" is already routed to another module"},
           {R"({"modules": [{"name": "a", "address": "a:1", "types": ["x"]},
                            {"name": "a", "address": "b:1", "types": ["y"]}]})",
            "modules[1].name: \"a\" is already the name of another module"},
           {R"({"modules": [{"name": "llm-broker", "address": "a:1", "types": ["x"]}]})",
            "modules[0].name: \"llm-broker\" is the name of one of Anima's own services"},
           {R"({"scheduler": {"max_in_flight": 0}})",
            "scheduler.max_in_flight: must be between 1 and 1048576, got 0"},
           {R"({"schedular": {}})", "schedular: unknown field"},
           {R"({"modules": [{"name": "m", "address": "a:1", "types": ["x"], "port": 1}]})",
            "modules[0].port: unknown field"},
       }) {
    auto parsed = ParseRouterConfig(json::parse(c.json));
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().message(), c.error);
  }
}

}  // namespace
}  // namespace anima::router
