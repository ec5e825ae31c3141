#pragma once

#include <string>

#include "services/router/conversation_store.h"
#include "services/store/redis_client.h"

namespace anima::router {

// Conversation memory in Redis, shared by every router replica: a conversation continues
// whichever router its next turn reaches.
//
// Layout: one list per (principal, conversation) at
//   anima:conv:{<principal>}:<id>
// with both parts escaped (EscapeKeyPart) so that no principal or id can spell another's key,
// and the principal as the hash tag so one principal's conversations share a Redis Cluster slot.
// Each element is one turn, "<user bytes>:<user message><answer>". Append is one Lua script (one
// round trip): RPUSH, drop the oldest turns beyond max_turns and while the turns' sizes add up to
// more than max_conversation_bytes, PEXPIRE max_age (the idle age). History is one LRANGE of
// the last max_turns. max_conversations and max_bytes do not apply: the global bound is Redis's
// maxmemory with an eviction policy (docs/operations.md).
//
// Redis unreachable or slow: History and Append fail (Unavailable, DeadlineExceeded), the
// caller carries on without memory. Callbacks run on the Redis client's I/O threads.
class RedisConversationStore final : public ConversationStore {
 public:
  // `client` outlives the store.
  RedisConversationStore(store::RedisClient* client, MemoryLimits limits);

  void History(const ConversationKey& key, HistoryCallback done) override;
  void Append(const ConversationKey& key, std::string_view user, std::string_view assistant,
              AppendCallback done) override;
  store::BackendStatus status() const override;

  static std::string KeyOf(const ConversationKey& key);
  // Bytes outside [A-Za-z0-9._@-] become %XX, so the result holds no ':' '{' '}' and decodes
  // to one input only. Parts longer than 128 bytes are named by their SHA-256 instead
  // ("#<hex>"; no escaped part starts with '#'), so a hostile id cannot make keys huge.
  static std::string EscapeKeyPart(std::string_view part);

 private:
  store::RedisClient* client_;
  MemoryLimits limits_;
  store::RedisScript append_;
};

}  // namespace anima::router
