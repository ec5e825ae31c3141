#include "services/self_coding/round_robin_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace anima::selfcoding {
namespace {

std::vector<std::string> Drain(RoundRobinQueue<std::string>& queue) {
  std::vector<std::string> out;
  while (auto item = queue.Pop()) out.push_back(*item);
  return out;
}

TEST(RoundRobinQueue, KeysTakeTurnsWhateverTheyQueuedBefore) {
  RoundRobinQueue<std::string> queue;
  for (const char* item : {"a1", "a2", "a3", "a4"}) queue.Push("a", item);
  queue.Push("b", "b1");
  queue.Push("c", "c1");
  queue.Push("c", "c2");
  EXPECT_EQ(queue.size(), 7u);
  EXPECT_EQ(queue.size("a"), 4u);
  EXPECT_EQ(queue.keys(), 3u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1", "b1", "c1", "a2", "c2", "a3", "a4"}));
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.keys(), 0u);
  EXPECT_FALSE(queue.Pop().has_value());
}

TEST(RoundRobinQueue, AKeyThatJoinsWaitsBehindTheKeysInLineNotTheirItems) {
  RoundRobinQueue<std::string> queue;
  queue.Push("a", "a1");
  queue.Push("a", "a2");
  queue.Push("a", "a3");
  EXPECT_EQ(*queue.Pop(), "a1");
  queue.Push("b", "b1");
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a2", "b1", "a3"}));
  // A key that emptied and comes back joins at the end of the line.
  queue.Push("a", "a4");
  queue.Push("b", "b2");
  queue.Push("a", "a5");
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a4", "b2", "a5"}));
}

TEST(RoundRobinQueue, RemoveTakesAnItemOutAndAnEmptiedKeyLosesItsTurn) {
  RoundRobinQueue<std::string> queue;
  queue.Push("a", "a1");
  queue.Push("b", "b1");
  queue.Push("b", "b2");
  queue.Push("c", "c1");
  EXPECT_FALSE(queue.Remove("a", "b1"));  // wrong key
  EXPECT_FALSE(queue.Remove("z", "a1"));
  EXPECT_TRUE(queue.Contains("b", "b2"));
  EXPECT_TRUE(queue.Remove("b", "b2"));
  EXPECT_FALSE(queue.Contains("b", "b2"));
  EXPECT_TRUE(queue.Remove("a", "a1"));
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(queue.size("a"), 0u);
  EXPECT_EQ(queue.keys(), 2u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"b1", "c1"}));
}

}  // namespace
}  // namespace anima::selfcoding
