#include "services/router/conversation_memory.h"

#include <string>

namespace anima::router {

namespace {

// What the containers allocate around the text, roughly: the map node with its key and bucket,
// the LRU list node, and per turn the vector slot and the string's heap header.
constexpr size_t kConversationOverhead = 160;
constexpr size_t kTurnOverhead = 48;

// Length-prefixed, so no principal and id can be read as another pair.
std::string StorageKey(const ConversationKey& key) {
  std::string out = std::to_string(key.principal.size());
  out.reserve(out.size() + 1 + key.principal.size() + key.id.size());
  out += ':';
  out += key.principal;
  out += key.id;
  return out;
}

}  // namespace

std::string CapMessage(std::string_view text, size_t max_bytes) {
  constexpr std::string_view kMarker = ConversationStore::kTruncatedMarker;
  if (text.size() <= max_bytes) return std::string(text);
  size_t keep = max_bytes > kMarker.size() ? max_bytes - kMarker.size() : 0;
  // Never cut inside a UTF-8 sequence: back up to the start of the character.
  while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  std::string out(text.substr(0, keep));
  if (max_bytes >= kMarker.size()) out.append(kMarker);
  return out;
}

ConversationMemory::ConversationMemory(Limits limits, Clock clock)
    : limits_(limits), clock_(std::move(clock)) {}

ConversationMemory::Turn::Turn(std::string_view user, std::string_view assistant,
                               const allocator_type& alloc)
    : text(alloc), user_size(static_cast<uint32_t>(user.size())) {
  text.reserve(user.size() + assistant.size());
  text.append(user).append(assistant);
}

void ConversationMemory::EvictLocked(std::chrono::steady_clock::time_point now) {
  // The LRU order is also the order of last_used: the expired are all at the back.
  bool evicted = false;
  while (!lru_.empty()) {
    auto it = conversations_.find(std::string_view(*lru_.back()));
    if (now - it->second.last_used <= limits_.max_age &&
        conversations_.size() <= limits_.max_conversations && bytes_ <= limits_.max_bytes) {
      break;
    }
    bytes_ -= it->second.bytes;
    lru_.pop_back();
    conversations_.erase(it);
    evicted = true;
  }
  if (evicted && conversations_.empty()) {
    // The pool keeps freed blocks for reuse; with nothing stored they are only held memory. The
    // bucket array, the last thing allocated from it, goes with the swapped-out temporary.
    Map(&pool_).swap(conversations_);
    pool_.release();
  }
}

ChatHistory ConversationMemory::History(const ConversationKey& key) {
  ChatHistory out;
  if (key.id.empty()) return out;
  std::string storage_key = StorageKey(key);
  std::lock_guard lock(mu_);
  EvictLocked(clock_());
  auto it = conversations_.find(std::string_view(storage_key));
  if (it == conversations_.end()) return out;
  for (const Turn& turn : it->second.turns) {
    std::string_view text = turn.text;
    auto* user = out.Add();
    user->set_role("user");
    user->set_content(std::string(text.substr(0, turn.user_size)));
    auto* assistant = out.Add();
    assistant->set_role("assistant");
    assistant->set_content(std::string(text.substr(turn.user_size)));
  }
  return out;
}

void ConversationMemory::Append(const ConversationKey& key, std::string_view user,
                                std::string_view assistant) {
  if (key.id.empty() || limits_.max_turns == 0 || limits_.max_conversations == 0) return;
  // Cut outside the lock; only the copies into the pool happen under it.
  const std::string user_kept = CapMessage(user, limits_.max_message_bytes);
  const std::string assistant_kept = CapMessage(assistant, limits_.max_message_bytes);
  const std::string storage_key = StorageKey(key);

  std::lock_guard lock(mu_);
  auto now = clock_();
  // The expired go first: when that empties the store, this conversation starts a fresh pool.
  EvictLocked(now);
  auto it = conversations_.find(std::string_view(storage_key));
  if (it == conversations_.end()) {
    it = conversations_.try_emplace(std::pmr::string(storage_key, &pool_)).first;
    lru_.push_front(&it->first);
    it->second.bytes = it->first.size() + kConversationOverhead;
    bytes_ += it->second.bytes;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru_position);
  }
  Conversation& c = it->second;
  c.lru_position = lru_.begin();
  c.last_used = now;
  const size_t text_size = c.turns.emplace_back(user_kept, assistant_kept).text.size();
  const size_t turn_bytes = text_size + kTurnOverhead;
  c.text_bytes += text_size;
  c.bytes += turn_bytes;
  bytes_ += turn_bytes;
  // The oldest turns go while there are too many or they take too much (possibly all of them:
  // a turn larger than the bound is not kept).
  size_t excess = 0, dropped = 0;
  while (excess < c.turns.size() && (c.turns.size() - excess > limits_.max_turns ||
                                     c.text_bytes > limits_.max_conversation_bytes)) {
    c.text_bytes -= c.turns[excess].text.size();
    dropped += c.turns[excess].text.size() + kTurnOverhead;
    ++excess;
  }
  if (excess > 0) {
    c.turns.erase(c.turns.begin(), c.turns.begin() + static_cast<std::ptrdiff_t>(excess));
    c.bytes -= dropped;
    bytes_ -= dropped;
  }
  if (c.turns.empty()) {
    bytes_ -= c.bytes;
    lru_.erase(c.lru_position);
    conversations_.erase(it);
  }
  EvictLocked(now);
}

void ConversationMemory::History(const ConversationKey& key, HistoryCallback done) {
  done(History(key));
}

void ConversationMemory::Append(const ConversationKey& key, std::string_view user,
                                std::string_view assistant, AppendCallback done) {
  Append(key, user, assistant);
  if (done) done(absl::OkStatus());
}

store::BackendStatus ConversationMemory::status() const {
  return {store::BackendHealth::kHealthy, "in-process"};
}

size_t ConversationMemory::size() {
  std::lock_guard lock(mu_);
  return conversations_.size();
}

size_t ConversationMemory::bytes() {
  std::lock_guard lock(mu_);
  return bytes_;
}

}  // namespace anima::router
