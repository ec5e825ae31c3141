#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory_resource>
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
//
// Everything stored lives in one memory pool of its own (docs/BENCHMARKS.md, "Memory"): allocated
// with malloc, each turn landed in the arena of whichever gRPC thread stored it, between the
// short-lived allocations of the requests around it, and after a burst the few stored bytes on
// each page kept the whole page resident (10,000 one-turn conversations held 18 MB of RSS for
// about 4 MB of data even after malloc_trim). The pool packs them into blocks of their own and
// gives its blocks back once nothing is stored.
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
  using Allocator = std::pmr::polymorphic_allocator<>;
  // One allocation per turn: the user message followed by the answer. Allocator-aware, so that
  // the vector of turns builds it in the pool.
  struct Turn {
    using allocator_type = Allocator;
    Turn(std::string_view user, std::string_view assistant, const allocator_type& alloc);
    Turn(Turn&& other, const allocator_type& alloc)
        : text(std::move(other.text), alloc), user_size(other.user_size) {}
    Turn(Turn&&) noexcept = default;
    Turn& operator=(Turn&&) noexcept = default;

    std::pmr::string text;
    uint32_t user_size;
  };
  using Lru = std::pmr::list<const std::pmr::string*>;  // keys of conversations_ (stable)
  struct Conversation {
    using allocator_type = Allocator;
    explicit Conversation(const allocator_type& alloc) : turns(alloc) {}

    std::pmr::vector<Turn> turns;
    std::chrono::steady_clock::time_point last_used;
    Lru::iterator lru_position;
    size_t bytes = 0;       // with overheads, counted in bytes_
    size_t text_bytes = 0;  // the turns' text, bounded by max_conversation_bytes
  };
  // Looked up by std::string_view, so that a lookup allocates nothing in the pool.
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  using Map = std::pmr::unordered_map<std::pmr::string, Conversation, KeyHash, std::equal_to<>>;

  // Forgets conversations from the least recently used end until every limit holds; when that
  // leaves nothing stored, gives the pool's blocks back to the system allocator.
  void EvictLocked(std::chrono::steady_clock::time_point now);

  Limits limits_;
  Clock clock_;
  std::mutex mu_;
  // Guarded by mu_, like everything allocated from it; declared before the containers, which
  // must be destroyed first. By default each size's chunks double without bound, and 10,000
  // one-turn conversations left a third of the last chunks unused (685 bytes each in use against
  // 485): 256 blocks a chunk bound that waste and still make chunks of kilobytes.
  std::pmr::unsynchronized_pool_resource pool_{std::pmr::pool_options{.max_blocks_per_chunk = 256}};
  Map conversations_{&pool_};  // by StorageKey (principal and id)
  Lru lru_{&pool_};            // front: most recently used
  size_t bytes_ = 0;
};

}  // namespace anima::router
