#include "gateway/gateway_context.h"

#include <algorithm>

namespace anima::gateway {

ConnectionRateLimiter::ConnectionRateLimiter(int per_second)
    : rate_(per_second), tokens_(per_second), at_(std::chrono::steady_clock::now()) {}

bool ConnectionRateLimiter::Take(std::chrono::milliseconds* retry_after) {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  tokens_ = std::min(rate_, tokens_ + std::chrono::duration<double>(now - at_).count() * rate_);
  at_ = now;
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  *retry_after = std::chrono::milliseconds(
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1.0 - tokens_) * 1000.0 / rate_))));
  return false;
}

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
