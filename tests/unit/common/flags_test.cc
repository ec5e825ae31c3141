#include "services/common/flags.h"

#include <cstdlib>
#include <stdexcept>

#include "gtest/gtest.h"

namespace anima::common {
namespace {

struct Options {
  std::string router = "127.0.0.1:50051";
  int port = 3002;
  double ratio = 0.5;
  bool verbose = false;
};

FlagSet MakeFlags(Options& o) {
  FlagSet f("anima-test");
  f.Add("router", &o.router, "ANIMA_TEST_ROUTER", "router address");
  f.Add("port", &o.port, "ANIMA_TEST_PORT", "port");
  f.Add("ratio", &o.ratio, "", "ratio");
  f.Add("verbose", &o.verbose, "", "verbose");
  return f;
}

TEST(FlagSetTest, DefaultsStayWithoutFlagsOrEnvironment) {
  Options o;
  auto f = MakeFlags(o);
  ASSERT_TRUE(f.Parse({}).ok());
  EXPECT_EQ(o.port, 3002);
  EXPECT_EQ(o.router, "127.0.0.1:50051");
}

TEST(FlagSetTest, BothSyntaxesAndBareBooleans) {
  Options o;
  auto f = MakeFlags(o);
  ASSERT_TRUE(f.Parse({"--port=0", "--router", "10.0.0.1:1", "--verbose", "extra"}).ok());
  EXPECT_EQ(o.port, 0);
  EXPECT_EQ(o.router, "10.0.0.1:1");
  EXPECT_TRUE(o.verbose);
  EXPECT_EQ(f.positional(), std::vector<std::string>{"extra"});
}

TEST(FlagSetTest, EnvironmentIsTheFallbackAndFlagsWin) {
  setenv("ANIMA_TEST_PORT", "4000", 1);
  setenv("ANIMA_TEST_ROUTER", "env:1", 1);
  Options o;
  auto f = MakeFlags(o);
  ASSERT_TRUE(f.Parse({"--router=flag:2"}).ok());
  EXPECT_EQ(o.port, 4000);
  EXPECT_EQ(o.router, "flag:2");
  unsetenv("ANIMA_TEST_PORT");
  unsetenv("ANIMA_TEST_ROUTER");
}

TEST(FlagSetTest, BadValuesNameTheFlag) {
  Options o;
  auto f = MakeFlags(o);
  auto s = f.Parse({"--port=abc"});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("--port"), std::string::npos);

  setenv("ANIMA_TEST_PORT", "x", 1);
  Options o2;
  auto f2 = MakeFlags(o2);
  auto s2 = f2.Parse({});
  unsetenv("ANIMA_TEST_PORT");
  ASSERT_FALSE(s2.ok());
  EXPECT_NE(s2.message().find("ANIMA_TEST_PORT"), std::string::npos);
}

TEST(FlagSetTest, UnknownFlagAndMissingValueAreErrors) {
  Options o;
  auto f = MakeFlags(o);
  EXPECT_FALSE(f.Parse({"--prot=1"}).ok());
  Options o2;
  auto f2 = MakeFlags(o2);
  EXPECT_FALSE(f2.Parse({"--port"}).ok());
}

TEST(FlagSetTest, HelpIsReportedAndUsageListsFlags) {
  Options o;
  auto f = MakeFlags(o);
  ASSERT_TRUE(f.Parse({"--help"}).ok());
  EXPECT_TRUE(f.help_requested());
  EXPECT_NE(f.Usage().find("--router [ANIMA_TEST_ROUTER]"), std::string::npos);
}

FlagSet MakeFlagsWithFallback(Options& o) {
  FlagSet f("anima-test");
  f.Add("router", &o.router, "ANIMA_TEST_ROUTER", "router address");
  f.AddEnvFallback("router", "ANIMA_SHARED_ROUTER");
  return f;
}

TEST(FlagSetTest, FallbackVariableServesWhenTheFlagsOwnIsUnsetOrEmpty) {
  setenv("ANIMA_SHARED_ROUTER", "shared:1", 1);
  Options o;
  auto f = MakeFlagsWithFallback(o);
  ASSERT_TRUE(f.Parse({}).ok());
  EXPECT_EQ(o.router, "shared:1");

  setenv("ANIMA_TEST_ROUTER", "", 1);
  Options o2;
  auto f2 = MakeFlagsWithFallback(o2);
  ASSERT_TRUE(f2.Parse({}).ok());
  EXPECT_EQ(o2.router, "shared:1");
  unsetenv("ANIMA_TEST_ROUTER");
  unsetenv("ANIMA_SHARED_ROUTER");
}

TEST(FlagSetTest, OwnVariableWinsOverTheFallbackAndFlagsWinOverBoth) {
  setenv("ANIMA_SHARED_ROUTER", "shared:1", 1);
  setenv("ANIMA_TEST_ROUTER", "own:2", 1);
  Options o;
  auto f = MakeFlagsWithFallback(o);
  ASSERT_TRUE(f.Parse({}).ok());
  EXPECT_EQ(o.router, "own:2");

  Options o2;
  auto f2 = MakeFlagsWithFallback(o2);
  ASSERT_TRUE(f2.Parse({"--router=flag:3"}).ok());
  EXPECT_EQ(o2.router, "flag:3");
  unsetenv("ANIMA_TEST_ROUTER");
  unsetenv("ANIMA_SHARED_ROUTER");
}

TEST(FlagSetTest, BadFallbackValueNamesTheFallbackVariable) {
  setenv("ANIMA_SHARED_PORT", "x", 1);
  Options o;
  auto f = MakeFlags(o);
  f.AddEnvFallback("port", "ANIMA_SHARED_PORT");
  auto s = f.Parse({});
  unsetenv("ANIMA_SHARED_PORT");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("ANIMA_SHARED_PORT"), std::string::npos);
}

TEST(FlagSetTest, UsageShowsBothVariables) {
  Options o;
  auto f = MakeFlagsWithFallback(o);
  EXPECT_NE(f.Usage().find("--router [ANIMA_TEST_ROUTER, else ANIMA_SHARED_ROUTER]"),
            std::string::npos);
}

TEST(FlagSetTest, FallbackForAnUnknownFlagIsABug) {
  Options o;
  auto f = MakeFlags(o);
  EXPECT_THROW(f.AddEnvFallback("routr", "ANIMA_SHARED_ROUTER"), std::logic_error);
}

}  // namespace
}  // namespace anima::common
