#include "services/llm_broker/sse_parser.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/llm_broker/openai_fixtures.h"

namespace anima::broker {
namespace {

using testing::kMidStreamError;
using testing::kRecordedStream;

std::vector<std::string> Datas(const std::vector<SseEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.data);
  return out;
}

// Feeds `input` in pieces ending at each of `cuts` and returns the data of every event.
std::vector<std::string> FeedSplit(const std::string& input, const std::vector<size_t>& cuts) {
  SseParser parser;
  std::vector<SseEvent> events;
  size_t pos = 0;
  for (size_t cut : cuts) {
    EXPECT_TRUE(parser.Feed(std::string_view(input).substr(pos, cut - pos), events).ok());
    pos = cut;
  }
  EXPECT_TRUE(parser.Feed(std::string_view(input).substr(pos), events).ok());
  EXPECT_TRUE(parser.Finish(events).ok());
  return Datas(events);
}

std::vector<std::string> Whole(const std::string& input) { return FeedSplit(input, {}); }

TEST(SseParserTest, RecordedOpenAiStreamGivesSevenEvents) {
  auto events = Whole(kRecordedStream);
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[1].find("\"content\":\"Hi\"") != std::string::npos, true);
  EXPECT_EQ(events[6], "[DONE]");
}

TEST(SseParserTest, EverySplitPointOfTheRecordedStreamGivesTheSameEvents) {
  const std::string input = kRecordedStream;
  const auto expected = Whole(input);
  for (size_t cut = 1; cut < input.size(); ++cut) {
    ASSERT_EQ(FeedSplit(input, {cut}), expected) << "split at " << cut;
  }
}

TEST(SseParserTest, ByteByByteGivesTheSameEvents) {
  const std::string input = kRecordedStream;
  std::vector<size_t> cuts;
  for (size_t i = 1; i < input.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(FeedSplit(input, cuts), Whole(input));
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

TEST(SseParserTest, CrlfAndCrOnlyLineEndingsAtEverySplit) {
  const auto expected = Whole(kRecordedStream);
  for (const std::string ending : {"\r\n", "\r"}) {
    const std::string input = Replace(kRecordedStream, "\n", ending);
    EXPECT_EQ(Whole(input), expected);
    for (size_t cut = 1; cut < input.size(); ++cut) {
      ASSERT_EQ(FeedSplit(input, {cut}), expected) << "split at " << cut;
    }
  }
}

TEST(SseParserTest, CrAtTheEndOfOneFeedAndLfAtTheStartOfTheNextIsOneLineBreak) {
  SseParser parser;
  std::vector<SseEvent> events;
  ASSERT_TRUE(parser.Feed("data: a\r", events).ok());
  ASSERT_TRUE(parser.Feed("\ndata: b\r", events).ok());
  ASSERT_TRUE(parser.Feed("\n\r", events).ok());
  ASSERT_TRUE(parser.Feed("\n", events).ok());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, "a\nb");  // not two events: no blank line between a and b
}

TEST(SseParserTest, CommentsAndKeepAlivesAreIgnored) {
  auto events = Whole(": OPENROUTER PROCESSING\n\n:\n\ndata: x\n: ping\n\n: keep-alive\n\n");
  EXPECT_EQ(events, std::vector<std::string>{"x"});
}

TEST(SseParserTest, DataWithoutSpaceAndOnlyOneSpaceStripped) {
  EXPECT_EQ(Whole("data:x\n\ndata:  y\n\n"), (std::vector<std::string>{"x", " y"}));
}

TEST(SseParserTest, MultipleDataLinesAreJoinedWithNewline) {
  EXPECT_EQ(Whole("data: {\ndata: \"a\":1\ndata: }\n\n"),
            std::vector<std::string>{"{\n\"a\":1\n}"});
}

TEST(SseParserTest, SeveralEventsInOneFeed) {
  SseParser parser;
  std::vector<SseEvent> events;
  ASSERT_TRUE(parser.Feed("data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4", events).ok());
  EXPECT_EQ(Datas(events), (std::vector<std::string>{"1", "2", "3"}));
  ASSERT_TRUE(parser.Finish(events).ok());  // a last event without blank line is dispatched
  EXPECT_EQ(events.size(), 4u);
}

TEST(SseParserTest, EmptyEventsAreSkippedEvenAfterAnId) {
  auto events = Whole("id: 7\n\n: ping\n\ndata:\n\nretry: 3000\n\ndata: real\n\n");
  EXPECT_EQ(events, std::vector<std::string>{"real"});
}

TEST(SseParserTest, EventIdAndRetryFieldsAreExposed) {
  SseParser parser;
  std::vector<SseEvent> events;
  ASSERT_TRUE(
      parser.Feed("retry: 3000\nid: 42\nevent: response.created\ndata: {}\n\ndata: 2\n\n", events)
          .ok());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].event, "response.created");
  EXPECT_EQ(events[0].id, "42");
  EXPECT_EQ(events[0].retry_ms, 3000);
  EXPECT_EQ(events[1].event, "");  // the type does not carry over
  EXPECT_EQ(events[1].id, "42");   // the id does
  EXPECT_EQ(parser.retry_ms(), 3000);
  EXPECT_EQ(parser.last_event_id(), "42");
}

TEST(SseParserTest, Utf8SplitAcrossFeedsStaysIntact) {
  const std::string text = "data: caf\xc3\xa9 \xe2\x82\xac\n\n";
  std::vector<size_t> cuts;
  for (size_t i = 1; i < text.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(FeedSplit(text, cuts), std::vector<std::string>{"caf\xc3\xa9 \xe2\x82\xac"});
}

TEST(SseParserTest, LongLinesAreFineBelowTheEventLimit) {
  std::string big(200000, 'x');
  SseParser parser(1 << 20);
  std::vector<SseEvent> events;
  std::string input = "data: " + big + "\n\n";
  for (size_t pos = 0; pos < input.size(); pos += 8192) {
    ASSERT_TRUE(parser.Feed(std::string_view(input).substr(pos, 8192), events).ok());
  }
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].data, big);
}

TEST(SseParserTest, OversizedEventIsAnErrorAndTheParserStaysFailed) {
  SseParser parser(1000);
  std::vector<SseEvent> events;
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) status = parser.Feed("data: 0123456789\n", events);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(events.empty());
  EXPECT_FALSE(parser.Feed("\n", events).ok());
  // One long line without a line break is caught too.
  SseParser line_parser(1000);
  EXPECT_FALSE(line_parser.Feed(std::string(2000, 'a'), events).ok());
}

TEST(SseParserTest, MidStreamErrorAfterHttp200IsAnOrdinaryEvent) {
  auto events = Whole(kMidStreamError);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].rfind("{\"error\"", 0), 0u);
}

}  // namespace
}  // namespace anima::broker
