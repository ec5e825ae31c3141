#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "anima/v1/llm_broker.pb.h"

namespace anima::router {

// Whose conversation a turn belongs to: the same conversation id used by two principals names
// two unrelated conversations (PROTOCOL.md §1).
struct ConversationKey {
  std::string_view principal;
  std::string_view id;  // empty: no conversation, nothing is read or stored
};

// The last turns of each conversation, sent to the broker as context with the next message.
// Bounded four ways: turns per conversation, number of conversations, total bytes (the least
// recently used conversation is forgotten first, whole) and age since the last turn. A stored
// user message or answer longer than max_message_bytes is cut, ending with kTruncatedMarker, so
// one turn cannot hold much of the budget. Thread-safe.
class ConversationMemory {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  struct Limits {
    size_t max_turns = 10;  // a turn is one user message and one reply
    size_t max_conversations = 10000;
    // Everything stored: text, keys and the bookkeeping around them (see bytes()).
    size_t max_bytes = size_t{64} << 20;
    size_t max_message_bytes = size_t{16} << 10;  // one user message, one answer
    std::chrono::seconds max_age{3600};
  };

  // Ends a message that was cut to max_message_bytes.
  static constexpr std::string_view kTruncatedMarker = "\n[truncated]";

  explicit ConversationMemory(Limits limits, Clock clock = std::chrono::steady_clock::now);

  // The stored turns, oldest first, as alternating user/assistant messages. Reading does not
  // make a conversation recently used; only a new turn does.
  google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> History(const ConversationKey& key);
  void Append(const ConversationKey& key, std::string_view user, std::string_view assistant);
  size_t size();
  // What the stored conversations take, counted as their text and keys plus an estimate of the
  // containers around them; never above Limits::max_bytes after a call returns.
  size_t bytes();

 private:
  // One allocation per turn: the user message followed by the answer.
  struct Turn {
    std::string text;
    uint32_t user_size;
  };
  struct Conversation {
    std::vector<Turn> turns;
    std::chrono::steady_clock::time_point last_used;
    std::list<const std::string*>::iterator lru_position;
    size_t bytes = 0;
  };
  using Map = std::unordered_map<std::string, Conversation>;

  std::string Cap(std::string_view text) const;
  // Forgets conversations from the least recently used end until every limit holds.
  void EvictLocked(std::chrono::steady_clock::time_point now);

  Limits limits_;
  Clock clock_;
  std::mutex mu_;
  Map conversations_;                  // by StorageKey (principal and id)
  std::list<const std::string*> lru_;  // keys of conversations_ (stable); front: most recent
  size_t bytes_ = 0;
};

}  // namespace anima::router
