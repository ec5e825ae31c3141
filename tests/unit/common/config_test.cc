#include "services/common/config.h"

#include <fstream>

#include "gtest/gtest.h"

namespace anima::common {
namespace {

using nlohmann::json;

TEST(ConfigReaderTest, ReadsTypedFieldsWithDefaults) {
  json j = {{"name", "openai"}, {"port", 8080}, {"ratio", 0.5}, {"on", true}};
  ConfigReader r(j, "providers[0]");
  EXPECT_EQ(r.String("name", "", true), "openai");
  EXPECT_EQ(r.Int("port", 1, 1, 65535), 8080);
  EXPECT_DOUBLE_EQ(r.Number("ratio", 0, 0, 1), 0.5);
  EXPECT_TRUE(r.Bool("on", false));
  EXPECT_EQ(r.Int("absent", 42, 0, 100), 42);
  r.RejectUnknown();
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST(ConfigReaderTest, MissingRequiredFieldNamesTheFullPath) {
  json j = json::object();
  ConfigReader r(j, "providers[1]");
  r.String("base_url", "", true);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "providers[1].base_url: is required");
}

TEST(ConfigReaderTest, WrongTypeAndRangeAreErrors) {
  json j = {{"port", "80"}};
  ConfigReader r(j, "");
  r.Int("port", 0, 1, 65535);
  EXPECT_EQ(r.status().message(), "port: expected an integer");

  json k = {{"port", 70000}};
  ConfigReader r2(k, "gateway");
  r2.Int("port", 0, 1, 65535);
  EXPECT_EQ(r2.status().message(), "gateway.port: must be between 1 and 65535, got 70000");
}

TEST(ConfigReaderTest, UnknownFieldIsAnError) {
  json j = {{"name", "x"}, {"nmae", "typo"}};
  ConfigReader r(j, "p");
  r.String("name");
  r.RejectUnknown();
  EXPECT_EQ(r.status().message(), "p.nmae: unknown field");
}

TEST(ConfigReaderTest, FirstErrorWins) {
  json j = {{"a", 1}, {"b", 2}};
  ConfigReader r(j, "");
  r.String("a");
  r.String("b");
  EXPECT_EQ(r.status().message(), "a: expected a string");
}

TEST(ConfigReaderTest, NonObjectIsAnError) {
  json j = json::array();
  ConfigReader r(j, "routes");
  EXPECT_FALSE(r.ok());
}

TEST(LoadJsonFileTest, ReportsMissingFileAndSyntaxErrors) {
  EXPECT_EQ(LoadJsonFile("/nonexistent/anima.json").status().code(), absl::StatusCode::kNotFound);
  std::string path = ::testing::TempDir() + "/bad.json";
  std::ofstream(path) << "{\"a\": 1,, }";
  auto bad = LoadJsonFile(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("not valid JSON at byte"), std::string::npos);

  std::ofstream(path, std::ios::trunc) << "[1,2]";
  EXPECT_FALSE(LoadJsonFile(path).ok());

  std::ofstream(path, std::ios::trunc) << "// comments are allowed\n{\"a\": 1}";
  auto good = LoadJsonFile(path);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ((*good)["a"], 1);
}

}  // namespace
}  // namespace anima::common
