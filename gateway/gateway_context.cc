#include "gateway/gateway_context.h"

#include <algorithm>

namespace anima::gateway {

void SessionRegistry::Add(const std::shared_ptr<WsSession>& session) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.emplace(session.get(), session);
}

void SessionRegistry::Remove(WsSession* session) {
  std::lock_guard<std::mutex> lock(mu_);
  sessions_.erase(session);
}

std::vector<std::shared_ptr<WsSession>> SessionRegistry::Snapshot() {
  std::vector<std::shared_ptr<WsSession>> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(sessions_.size());
  for (auto& [ptr, weak] : sessions_) {
    if (auto session = weak.lock()) out.push_back(std::move(session));
  }
  return out;
}

size_t SessionRegistry::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return sessions_.size();
}

}  // namespace anima::gateway
