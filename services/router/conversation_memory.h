#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "anima/v1/llm_broker.pb.h"

namespace anima::router {

// The last turns of each conversation, sent to the broker as context with the next message.
// Bounded three ways: turns per conversation, number of conversations (the least recently used
// is forgotten first) and age since the last turn. Thread-safe.
class ConversationMemory {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  struct Limits {
    size_t max_turns = 10;  // a turn is one user message and one reply
    size_t max_conversations = 10000;
    std::chrono::seconds max_age{3600};
  };

  explicit ConversationMemory(Limits limits, Clock clock = std::chrono::steady_clock::now);

  // The stored turns, oldest first, as alternating user/assistant messages.
  google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> History(const std::string& id);
  void Append(const std::string& id, const std::string& user, const std::string& assistant);
  size_t size();

 private:
  struct Conversation {
    std::list<std::pair<std::string, std::string>> turns;
    std::chrono::steady_clock::time_point last_used;
    std::list<std::string>::iterator lru_position;
  };
  void EvictExpiredLocked(std::chrono::steady_clock::time_point now);

  Limits limits_;
  Clock clock_;
  std::mutex mu_;
  std::unordered_map<std::string, Conversation> conversations_;
  std::list<std::string> lru_;  // front: most recently used
};

}  // namespace anima::router
