#include "services/llm_broker/broker_config.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "services/common/config.h"

namespace anima::broker {
namespace {

using nlohmann::json;

json Valid() {
  return json::parse(R"({"providers":[{"name":"openai","type":"openai",
    "base_url":"https://api.openai.com/v1","api_key_env":"OPENAI_API_KEY",
    "models":["gpt-4o-mini"],"default_model":"gpt-4o-mini","connect_timeout_ms":5000,
    "first_token_timeout_ms":30000,"total_timeout_ms":120000,"max_retries":2}],
    "default_strategy":"failover","ca_file":"/etc/ssl/certs/ca-certificates.crt"})");
}

std::string ErrorOf(const json& j) {
  auto parsed = ParseBrokerConfig(j);
  return parsed.ok() ? "" : std::string(parsed.status().message());
}

TEST(BrokerConfigTest, TheDocumentedExampleParses) {
  auto config = ParseBrokerConfig(Valid());
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->providers.size(), 1u);
  EXPECT_EQ(config->providers[0].first_token_timeout_ms, 30000);
  EXPECT_EQ(config->ca_file, "/etc/ssl/certs/ca-certificates.crt");
}

TEST(BrokerConfigTest, ShippedConfigFilesParse) {
  const char* src = std::getenv("ANIMA_SOURCE_DIR");
  if (src == nullptr) GTEST_SKIP() << "ANIMA_SOURCE_DIR is not set";
  for (const char* name : {"config.example.json", "config.sim.json"}) {
    auto json = common::LoadJsonFile(std::string(src) + "/services/llm_broker/" + name);
    ASSERT_TRUE(json.ok()) << json.status();
    auto config = ParseBrokerConfig(*json);
    EXPECT_TRUE(config.ok()) << name << ": " << config.status();
  }
}

TEST(BrokerConfigTest, ErrorsNameTheField) {
  json j = Valid();
  j["providers"][0]["base_url"] = 5;
  EXPECT_EQ(ErrorOf(j), "providers[0].base_url: expected a string");
  j = Valid();
  j["providers"][0]["colour"] = "blue";
  EXPECT_EQ(ErrorOf(j), "providers[0].colour: unknown field");
  j = Valid();
  j["extra"] = 1;
  EXPECT_EQ(ErrorOf(j), "extra: unknown field");
  j = Valid();
  j["providers"][0]["max_retries"] = 99;
  EXPECT_NE(ErrorOf(j).find("providers[0].max_retries"), std::string::npos);
  j = Valid();
  j["providers"][0]["type"] = "anthropic";
  EXPECT_NE(ErrorOf(j).find("providers[0].type"), std::string::npos);
  j = Valid();
  j["providers"][0]["type"] = "gemini";
  j["providers"][0]["organization"] = "org";
  EXPECT_NE(ErrorOf(j).find("providers[0].organization"), std::string::npos);
  j = Valid();
  j["providers"][0]["base_url"] = "ftp://x";
  EXPECT_NE(ErrorOf(j).find("providers[0].base_url"), std::string::npos);
  j = Valid();
  j["providers"][0]["default_model"] = "gpt-9";
  EXPECT_NE(ErrorOf(j).find("providers[0].default_model"), std::string::npos);
  j = Valid();
  j["providers"].push_back(j["providers"][0]);
  EXPECT_NE(ErrorOf(j).find("providers[1].name"), std::string::npos);
  j = Valid();
  j["providers"][0].erase("api_key_env");
  EXPECT_NE(ErrorOf(j).find("providers[0].api_key_env"), std::string::npos);
  j = Valid();
  j["default_strategy"] = "roulette";
  EXPECT_NE(ErrorOf(j).find("default_strategy"), std::string::npos);
  EXPECT_NE(ErrorOf(json::object()).find("providers"), std::string::npos);
}

TEST(BrokerConfigTest, PricesAndGuards) {
  json j = Valid();
  j["providers"][0]["prices"] = {
      {"gpt-4o-mini", {{"input_per_mtok", 0.15}, {"output_per_mtok", 0.6}}}};
  j["providers"][0]["max_concurrency"] = 8;
  j["breaker_failure_threshold"] = 0;
  j["default_strategy"] = "hedge";
  j["hedge_delay_ms"] = 100;
  auto config = ParseBrokerConfig(j);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->providers[0].prices.at("gpt-4o-mini").output_per_mtok, 0.6);
  EXPECT_EQ(config->providers[0].max_concurrency, 8);
  EXPECT_EQ(config->breaker_failure_threshold, 0);
  EXPECT_EQ(config->hedge_delay_ms, 100);
  j["providers"][0]["prices"]["gpt-4o-mini"]["input_per_mtok"] = -1;
  EXPECT_NE(ErrorOf(j).find("providers[0].prices.gpt-4o-mini.input_per_mtok"), std::string::npos);
  j["providers"][0]["prices"] = {{"gpt-4o-mini", {{"per_token", 1}}}};
  EXPECT_NE(ErrorOf(j).find("per_token"), std::string::npos);
  j["providers"][0]["prices"] = "cheap";
  EXPECT_NE(ErrorOf(j).find("providers[0].prices"), std::string::npos);
}

TEST(BrokerConfigTest, VeniceAndGeminiAreProviderTypes) {
  for (const std::string type : {"venice", "gemini", "openai_compatible"}) {
    json j = Valid();
    j["providers"][0]["type"] = type;
    j["providers"][0].erase("api_key_env");  // optional for every type but openai
    auto config = ParseBrokerConfig(j);
    ASSERT_TRUE(config.ok()) << type << ": " << config.status();
    EXPECT_EQ(config->providers[0].type, type);
  }
}

TEST(BrokerConfigTest, DefaultUsesTheSimulatorWithoutAKey) {
  auto sim = DefaultBrokerConfig(false);
  ASSERT_EQ(sim.providers.size(), 3u);
  EXPECT_EQ(sim.providers[0].name, "openai");  // first: requests without a provider go there
  EXPECT_EQ(sim.providers[0].base_url, "http://127.0.0.1:18080/v1");
  EXPECT_EQ(sim.providers[1].name, "venice");
  EXPECT_EQ(sim.providers[1].type, "venice");
  EXPECT_EQ(sim.providers[1].base_url, "http://127.0.0.1:18080/api/v1");
  EXPECT_EQ(sim.providers[2].name, "gemini");
  EXPECT_EQ(sim.providers[2].type, "gemini");
  EXPECT_EQ(sim.providers[2].base_url, "http://127.0.0.1:18080/v1beta");
  EXPECT_NE(sim.source.find("simulator"), std::string::npos);
  auto keyed = DefaultBrokerConfig(false, true, true);
  EXPECT_EQ(keyed.providers[1].base_url, "https://api.venice.ai/api/v1");
  EXPECT_EQ(keyed.providers[1].api_key_env, "VENICE_API_KEY");
  EXPECT_EQ(keyed.providers[2].base_url, "https://generativelanguage.googleapis.com/v1beta");
  EXPECT_EQ(keyed.providers[2].api_key_env, "GEMINI_API_KEY");
  auto real = DefaultBrokerConfig(true);
  EXPECT_EQ(real.providers[0].base_url, "https://api.openai.com/v1");
  EXPECT_EQ(real.providers[0].api_key_env, "OPENAI_API_KEY");
}

TEST(BrokerConfigTest, KeysComeFromTheEnvironmentOrAFileAndAreNeverInErrors) {
  ProviderConfig p;
  p.name = "openai";
  p.api_key_env = "TEST_KEY_VAR";
  auto key = LoadApiKey(p, [](const char* name) -> const char* {
    return std::string(name) == "TEST_KEY_VAR" ? "sk-secret\n" : nullptr;
  });
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(*key, "sk-secret");
  auto missing = LoadApiKey(p, [](const char*) -> const char* { return nullptr; });
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("TEST_KEY_VAR"), std::string::npos);

  std::string path = ::testing::TempDir() + "/broker-key.txt";
  std::ofstream(path) << "sk-from-file  \n";
  ProviderConfig f;
  f.name = "openai";
  f.api_key_file = path;
  auto from_file = LoadApiKey(f);
  ASSERT_TRUE(from_file.ok());
  EXPECT_EQ(*from_file, "sk-from-file");
}

}  // namespace
}  // namespace anima::broker
