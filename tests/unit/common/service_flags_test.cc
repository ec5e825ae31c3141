#include "services/common/service_flags.h"

#include <cstdlib>
#include <stdexcept>

#include "gtest/gtest.h"

namespace anima::common {
namespace {

TEST(ServiceFlagsTest, VariablesAreNamedFromThePrefix) {
  setenv("ANIMA_TEST_BIND", "0.0.0.0", 1);
  setenv("ANIMA_TEST_PORT", "1", 1);
  setenv("ANIMA_TEST_METRICS_PORT", "2", 1);
  setenv("ANIMA_TEST_LOG_FORMAT", "json", 1);
  setenv("ANIMA_TEST_LOG_LEVEL", "debug", 1);
  setenv("ANIMA_TEST_READY_FILE", "/tmp/ready.json", 1);
  ServiceFlags service{.port = 50051, .metrics_port = 9101};
  FlagSet flags("anima-test");
  AddServiceFlags(flags, "ANIMA_TEST", "gRPC port", &service);
  auto s = flags.Parse({});
  for (const char* name :
       {"ANIMA_TEST_BIND", "ANIMA_TEST_PORT", "ANIMA_TEST_METRICS_PORT", "ANIMA_TEST_LOG_FORMAT",
        "ANIMA_TEST_LOG_LEVEL", "ANIMA_TEST_READY_FILE"}) {
    unsetenv(name);
  }
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(service.bind, "0.0.0.0");
  EXPECT_EQ(service.port, 1);
  EXPECT_EQ(service.metrics_port, 2);
  EXPECT_EQ(service.log_format, "json");
  EXPECT_EQ(service.log_level, "debug");
  EXPECT_EQ(service.ready_file, "/tmp/ready.json");
}

TEST(ServiceFlagsTest, LogVariablesFallBackToTheSharedOnes) {
  setenv("ANIMA_LOG_FORMAT", "json", 1);
  setenv("ANIMA_LOG_LEVEL", "warn", 1);
  setenv("ANIMA_TEST_LOG_LEVEL", "debug", 1);
  ServiceFlags service;
  FlagSet flags("anima-test");
  AddServiceFlags(flags, "ANIMA_TEST", "gRPC port", &service);
  auto s = flags.Parse({});
  unsetenv("ANIMA_LOG_FORMAT");
  unsetenv("ANIMA_LOG_LEVEL");
  unsetenv("ANIMA_TEST_LOG_LEVEL");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(service.log_format, "json");
  EXPECT_EQ(service.log_level, "debug");
  EXPECT_NE(flags.Usage().find("--log-format [ANIMA_TEST_LOG_FORMAT, else ANIMA_LOG_FORMAT]"),
            std::string::npos);
}

TEST(ServiceFlagsTest, PortsOutOfRangeNameTheFlag) {
  ServiceFlags service{.port = 70000};
  auto s = InitService(service, "test");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "--port: must be between 0 and 65535, got 70000");

  service = ServiceFlags{.metrics_port = -1};
  s = InitService(service, "test");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.message(), "--metrics-port: must be between 0 and 65535, got -1");
}

TEST(ServiceFlagsTest, BadLogFormatIsAnError) {
  EXPECT_FALSE(InitService(ServiceFlags{.log_format = "xml"}, "test").ok());
}

int ThrowingMain(int, char**) { throw std::runtime_error("disk on fire"); }
int SevenMain(int, char**) { return 7; }

TEST(ServiceFlagsTest, RunMainTurnsAnEscapingExceptionIntoExitOne) {
  testing::internal::CaptureStderr();
  EXPECT_EQ(RunMain("anima-test", ThrowingMain, 0, nullptr), 1);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "anima-test: fatal: disk on fire\n");
  EXPECT_EQ(RunMain("anima-test", SevenMain, 0, nullptr), 7);
}

}  // namespace
}  // namespace anima::common
