#include "services/router/conversation_memory.h"

namespace anima::router {

ConversationMemory::ConversationMemory(Limits limits, Clock clock)
    : limits_(limits), clock_(std::move(clock)) {}

void ConversationMemory::EvictExpiredLocked(std::chrono::steady_clock::time_point now) {
  while (!lru_.empty()) {
    auto it = conversations_.find(lru_.back());
    if (now - it->second.last_used <= limits_.max_age &&
        conversations_.size() <= limits_.max_conversations) {
      break;
    }
    conversations_.erase(it);
    lru_.pop_back();
  }
}

google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> ConversationMemory::History(
    const std::string& id) {
  google::protobuf::RepeatedPtrField<anima::v1::ChatMessage> out;
  if (id.empty()) return out;
  std::lock_guard lock(mu_);
  EvictExpiredLocked(clock_());
  auto it = conversations_.find(id);
  if (it == conversations_.end()) return out;
  for (const auto& [user, assistant] : it->second.turns) {
    auto* u = out.Add();
    u->set_role("user");
    u->set_content(user);
    auto* a = out.Add();
    a->set_role("assistant");
    a->set_content(assistant);
  }
  return out;
}

void ConversationMemory::Append(const std::string& id, const std::string& user,
                                const std::string& assistant) {
  if (id.empty() || limits_.max_turns == 0 || limits_.max_conversations == 0) return;
  std::lock_guard lock(mu_);
  auto now = clock_();
  auto [it, inserted] = conversations_.try_emplace(id);
  Conversation& c = it->second;
  if (inserted) {
    lru_.push_front(id);
  } else {
    lru_.splice(lru_.begin(), lru_, c.lru_position);
  }
  c.lru_position = lru_.begin();
  c.last_used = now;
  c.turns.emplace_back(user, assistant);
  while (c.turns.size() > limits_.max_turns) c.turns.pop_front();
  EvictExpiredLocked(now);
}

size_t ConversationMemory::size() {
  std::lock_guard lock(mu_);
  return conversations_.size();
}

}  // namespace anima::router
