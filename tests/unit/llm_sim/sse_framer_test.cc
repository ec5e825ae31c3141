#include "tools/llm_sim/sse_framer.h"

#include "gtest/gtest.h"

namespace anima::sim {
namespace {

std::string Join(const std::vector<BodyWrite>& writes) {
  std::string all;
  for (const auto& w : writes) all += w.bytes;
  return all;
}

const std::vector<SseEvent> kEvents = {{R"({"a":"Grüß 👋"})", std::chrono::milliseconds(0)},
                                       {R"({"b":2})", std::chrono::milliseconds(0)},
                                       {"[DONE]", std::chrono::milliseconds(0)}};

TEST(SseFramerTest, PlainFramingIsOneEventPerWrite) {
  auto writes = FrameEvents(kEvents, Modifiers{}, 1);
  ASSERT_EQ(writes.size(), 3u);
  EXPECT_EQ(writes[0].bytes, "data: {\"a\":\"Grüß 👋\"}\n\n");
  EXPECT_EQ(writes[2].bytes, "data: [DONE]\n\n");
}

TEST(SseFramerTest, LineEndingsSpacingCommentsAndFields) {
  Modifiers m;
  m.crlf = true;
  m.nospace = true;
  m.comments = true;
  m.fields = true;
  EXPECT_EQ(Join(FrameEvents({kEvents[1]}, m, 1)),
            "retry: 3000\r\n\r\n: keep-alive\r\n\r\nid:1\r\ndata:{\"b\":2}\r\n\r\n");
}

TEST(SseFramerTest, MultiPutsSeveralEventsInOneWriteButKeepsDelaysApart) {
  Modifiers m;
  m.multi = true;
  std::vector<SseEvent> events = kEvents;
  events.push_back({"late", std::chrono::milliseconds(50)});
  auto writes = FrameEvents(events, m, 1);
  ASSERT_EQ(writes.size(), 2u);
  EXPECT_EQ(writes[0].bytes, "data: {\"a\":\"Grüß 👋\"}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n");
  EXPECT_EQ(writes[1].delay, std::chrono::milliseconds(50));
}

TEST(SseFramerTest, SplitBytesKeepsBytesAndSplitsCrLfAndMultibyteCharacters) {
  Modifiers m;
  m.split_bytes = true;
  m.crlf = true;
  std::vector<SseEvent> events = kEvents;
  events[1].delay = std::chrono::milliseconds(7);
  Modifiers plain = m;
  plain.split_bytes = false;
  for (uint64_t seed = 1; seed < 50; ++seed) {
    auto writes = FrameEvents(events, m, seed);
    EXPECT_EQ(Join(writes), Join(FrameEvents(events, plain, seed)));
    int delayed = 0;
    for (const auto& w : writes) {
      ASSERT_FALSE(w.bytes.empty());
      EXPECT_LE(w.bytes.size(), 12u);
      delayed += w.delay.count() > 0;
      // CR and LF never travel in one write: a CR is always the last byte of its write.
      size_t cr = w.bytes.find('\r');
      if (cr != std::string::npos) {
        EXPECT_EQ(cr, w.bytes.size() - 1);
      }
    }
    EXPECT_EQ(delayed, 1);
  }
}

TEST(SseFramerTest, SplitIsReproducibleAndByteByByteIsOneByteEach) {
  EXPECT_EQ(SplitBytes("hello world, hello split", false, 9),
            SplitBytes("hello world, hello split", false, 9));
  auto bytes = SplitBytes("añb", true, 0);
  ASSERT_EQ(bytes.size(), 4u);
  EXPECT_EQ(bytes[1], "\xC3");
}

}  // namespace
}  // namespace anima::sim
