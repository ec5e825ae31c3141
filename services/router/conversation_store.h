#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/store/redis_client.h"

namespace anima::router {

// Whose conversation a turn belongs to: the same conversation id used by two principals names
// two unrelated conversations (PROTOCOL.md §1).
struct ConversationKey {
  std::string_view principal;
  std::string_view id;  // empty: no conversation, nothing is read or stored
};

// The bounds every conversation store keeps. A turn is one user message and one answer; its
// size is the bytes of both (after the cut to max_message_bytes).
struct MemoryLimits {
  size_t max_turns = 10;                        // per conversation; 0 disables memory
  size_t max_conversations = 10000;             // in-process only (Redis: maxmemory)
  size_t max_bytes = size_t{64} << 20;          // in-process only, everything stored
  size_t max_message_bytes = size_t{16} << 10;  // one user message, one answer
  // The turns of one conversation: the oldest go first while their sizes add up to more.
  size_t max_conversation_bytes = size_t{256} << 10;
  std::chrono::milliseconds max_age{std::chrono::hours(1)};  // idle: since the last new turn
};

using ChatHistory = google::protobuf::RepeatedPtrField<anima::v1::ChatMessage>;

// Where the router remembers conversations: in the process (ConversationMemory, the default) or
// in Redis shared by every router replica (RedisConversationStore). The dispatch path does not
// know which it has.
//
// Contract for both: History answers the stored turns oldest first, as alternating user and
// assistant messages; reading does not refresh a conversation's age, only a new turn does. A
// message longer than max_message_bytes is cut, ending with kTruncatedMarker. An empty
// conversation id stores nothing and reads nothing. Callbacks run exactly once, either inline
// (in-process) or on the store's I/O thread (Redis); they must not block. An error means the
// memory is not reachable now: callers carry on without it (docs/operations.md).
class ConversationStore {
 public:
  using HistoryCallback = std::function<void(absl::StatusOr<ChatHistory>)>;
  using AppendCallback = std::function<void(absl::Status)>;

  // Ends a message that was cut to max_message_bytes.
  static constexpr std::string_view kTruncatedMarker = "\n[truncated]";

  virtual ~ConversationStore() = default;

  virtual void History(const ConversationKey& key, HistoryCallback done) = 0;
  // Stores one turn; `done` (may be null) runs once it is stored or failed.
  virtual void Append(const ConversationKey& key, std::string_view user, std::string_view assistant,
                      AppendCallback done) = 0;
  // For consciousness_state: healthy, degraded (slow answers), down (unreachable); the detail
  // names the backend ("in-process", "redis host:port ...").
  virtual store::BackendStatus status() const = 0;
  // Conversations held, when the store can tell cheaply (in-process); nullopt otherwise.
  virtual std::optional<size_t> conversations() { return std::nullopt; }
};

// `text`, or its first max_bytes bytes ending with kTruncatedMarker, never cut inside a UTF-8
// character.
std::string CapMessage(std::string_view text, size_t max_bytes);

}  // namespace anima::router
