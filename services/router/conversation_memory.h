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
#include "services/router/conversation_store.h"

namespace anima::router {

// The in-process conversation store (the default): the last turns of each conversation, sent to
// the broker as context with the next message. Bounded five ways: turns per conversation, bytes
// per conversation, number of conversations, total bytes (the least recently used conversation
// is forgotten first, whole) and age since the last turn. A stored user message or answer longer
// than max_message_bytes is cut, ending with kTruncatedMarker, so one turn cannot hold much of
// the budget. Thread-safe; the ConversationStore callbacks run inline.
class ConversationMemory final : public ConversationStore {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  using Limits = MemoryLimits;

  explicit ConversationMemory(Limits limits, Clock clock = std::chrono::steady_clock::now);

  // The stored turns, oldest first, as alternating user/assistant messages. Reading does not
  // make a conversation recently used; only a new turn does.
  ChatHistory History(const ConversationKey& key);
  void Append(const ConversationKey& key, std::string_view user, std::string_view assistant);

  // ConversationStore: the same, answered inline; never fails.
  void History(const ConversationKey& key, HistoryCallback done) override;
  void Append(const ConversationKey& key, std::string_view user, std::string_view assistant,
              AppendCallback done) override;
  store::BackendStatus status() const override;
  std::optional<size_t> conversations() override { return size(); }

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
    size_t bytes = 0;       // with overheads, counted in bytes_
    size_t text_bytes = 0;  // the turns' text, bounded by max_conversation_bytes
  };
  using Map = std::unordered_map<std::string, Conversation>;

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
