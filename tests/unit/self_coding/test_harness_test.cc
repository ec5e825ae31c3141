#include "services/self_coding/test_harness.h"

#include <gtest/gtest.h>

namespace anima::selfcoding {
namespace {

TEST(TestHarness, OnlyTheLineWithThisRunsNonceCounts) {
  const std::string nonce = NewNonce();
  EXPECT_EQ(nonce.size(), 32u);
  EXPECT_NE(nonce, NewNonce());
  auto forged = ParseReport("ANIMA_RESULT 0123 passed=5 failed=0\n", nonce);
  EXPECT_FALSE(forged.has_value());
  auto real = ParseReport("garbage\nANIMA_RESULT feed passed=9 failed=0\nANIMA_RESULT " + nonce +
                              " passed=2 failed=1\n",
                          nonce);
  ASSERT_TRUE(real.has_value());
  EXPECT_EQ(real->passed, 2);
  EXPECT_EQ(real->failed, 1);
  EXPECT_FALSE(real->exit_code.has_value());
  auto cpp = ParseReport("ANIMA_RESULT " + nonce + " exit=3\n", nonce);
  ASSERT_TRUE(cpp.has_value());
  EXPECT_EQ(cpp->exit_code, 3);
  EXPECT_FALSE(ParseReport("", nonce).has_value());
  EXPECT_FALSE(ParseReport("ANIMA_RESULT  passed=1 failed=0\n", "").has_value());
}

TEST(TestHarness, HarnessFilesAreReservedAndCompiledIn) {
  EXPECT_TRUE(IsHarnessFile(kPythonHarnessFile));
  EXPECT_TRUE(IsHarnessFile(kCppHarnessFile));
  EXPECT_FALSE(IsHarnessFile("test_main.py"));
  auto argv = CppBuildCommand({"a.cpp", "test_main.cpp"});
  EXPECT_NE(std::find(argv.begin(), argv.end(), "-Wl,--wrap=main"), argv.end());
  EXPECT_NE(std::find(argv.begin(), argv.end(), kCppHarnessFile), argv.end());
  EXPECT_EQ(argv.back(), "test_main.cpp");
}

}  // namespace
}  // namespace anima::selfcoding
