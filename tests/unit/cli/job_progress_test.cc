#include "tools/cli/job_progress.h"

#include <gtest/gtest.h>

namespace anima::cli {
namespace {

using nlohmann::json;
using std::chrono::seconds;

json Event(int seq, const std::string& stage, int attempt, int percent,
           const std::string& message) {
  return {{"seq", seq},
          {"stage", stage},
          {"attempt", attempt},
          {"percent", percent},
          {"message", message}};
}

size_t Columns(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(JobProgressTest, TheBarShowsPercentStageAttemptTimeAndMessage) {
  JobProgress p(3);
  ASSERT_TRUE(p.Update(Event(4, "testing", 2, 50, "running 5 tests")));
  EXPECT_EQ(p.Bar(seconds(72), 100),
            "[##########----------]  50%  testing  attempt 2/3  1:12  running 5 tests");
  EXPECT_EQ(p.Line(seconds(72)), "1:12   50%  testing  attempt 2/3: running 5 tests");
  EXPECT_EQ(p.last_seq(), 4);
}

TEST(JobProgressTest, TheBarFitsTheTerminalCuttingTheMessageFirst) {
  JobProgress p(3);
  p.Update(Event(1, "generating", 1, 100, "asking the model for a solution to the whole task"));
  for (int width : {200, 60, 47, 40, 30, 12, 1}) {
    std::string bar = p.Bar(seconds(5), width);
    EXPECT_LE(Columns(bar), static_cast<size_t>(width)) << width << ": " << bar;
  }
  EXPECT_EQ(p.Bar(seconds(5), 60).substr(0, 22), "[####################]");
  // Too narrow for the message and the time: the bar and the status stay, then a shorter bar.
  EXPECT_EQ(p.Bar(seconds(5), 52), "[####################] 100%  generating  attempt 1/3");
  EXPECT_EQ(p.Bar(seconds(5), 47), "[##########] 100%  generating  attempt 1/3");
}

TEST(JobProgressTest, AMessageIsNeverCutInsideACharacter) {
  JobProgress p;
  p.Update(Event(1, "testing", 1, 0, "ééééééééééééééééééééééééééééééééé"));
  for (int width = 40; width < 80; ++width) {
    std::string bar = p.Bar(seconds(0), width);
    ASSERT_FALSE(bar.empty());
    EXPECT_NE(static_cast<unsigned char>(bar.back()), 0xC3) << width;  // a lead byte alone
  }
}

TEST(JobProgressTest, EscapesFromTheServerNeverReachTheTerminal) {
  JobProgress p;
  p.Update(Event(1, "test\x1b[2Jing", 1, 10, "a\x1b]0;pwned\x07 b\r\nc\t\x7f"));
  std::string bar = p.Bar(seconds(1), 200);
  EXPECT_EQ(bar.find('\x1b'), std::string::npos) << bar;
  EXPECT_EQ(bar.find('\x07'), std::string::npos) << bar;
  EXPECT_EQ(bar.find('\r'), std::string::npos) << bar;
  EXPECT_EQ(Printable("a\x1b]0;x\x07 b\r\nc\t"), "a]0;x b  c ");
}

TEST(JobProgressTest, AnEventSeenBeforeIsNotDrawnAgain) {
  JobProgress p;
  EXPECT_TRUE(p.Update(Event(2, "generating", 1, 10, "")));
  EXPECT_FALSE(p.Update(Event(2, "generating", 1, 10, "")));
  EXPECT_FALSE(p.Update(Event(1, "queued", 0, 0, "")));
  EXPECT_EQ(p.stage(), "generating");
  EXPECT_TRUE(p.Update(Event(3, "testing", 1, 40, "")));
}

TEST(JobProgressTest, NonsenseFieldsKeepWhatWasThere) {
  JobProgress p;
  p.Update(Event(1, "testing", 1, 40, "x"));
  EXPECT_TRUE(p.Update(json{{"seq", 2}, {"stage", 5}, {"attempt", "two"}, {"percent", 900}}));
  EXPECT_EQ(p.stage(), "testing");
  EXPECT_EQ(p.attempt(), 1);
  EXPECT_EQ(p.percent(), 100);
  EXPECT_TRUE(p.Update(json{{"seq", 3}, {"percent", -5}}));
  EXPECT_EQ(p.percent(), 0);
  EXPECT_EQ(p.Bar(seconds(0), 80).substr(0, 22), "[--------------------]");
}

TEST(JobProgressTest, ElapsedIsMinutesThenHours) {
  EXPECT_EQ(Elapsed(seconds(0)), "0:00");
  EXPECT_EQ(Elapsed(seconds(59)), "0:59");
  EXPECT_EQ(Elapsed(seconds(3599)), "59:59");
  EXPECT_EQ(Elapsed(seconds(3661)), "1:01:01");
  EXPECT_EQ(Elapsed(seconds(-3)), "0:00");
}

}  // namespace
}  // namespace anima::cli
