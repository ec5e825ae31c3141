#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "gateway/admission.h"
#include "gateway/frame_translator.h"
#include "gateway/gateway_metrics.h"
#include "gateway/readiness_probe.h"
#include "gateway/router_client.h"
#include "gateway/settings.h"

namespace anima::gateway {

class WsSession;

// The open WebSocket sessions, so shutdown can close each of them. Thread-safe.
class SessionRegistry {
 public:
  void Add(const std::shared_ptr<WsSession>& session);
  void Remove(WsSession* session);
  std::vector<std::shared_ptr<WsSession>> Snapshot();
  size_t size();

 private:
  std::mutex mu_;
  std::unordered_map<WsSession*, std::weak_ptr<WsSession>> sessions_;
};

// A token bucket shared by every connection (new connections per second). Thread-safe.
class ConnectionRateLimiter {
 public:
  explicit ConnectionRateLimiter(int per_second);
  // True and a token taken, or false with the wait until the next token in `retry_after`.
  bool Take(std::chrono::milliseconds* retry_after);

 private:
  const double rate_;
  std::mutex mu_;
  double tokens_;
  std::chrono::steady_clock::time_point at_;
};

// What every session shares. Owned by GatewayServer, which destroys it only after the io threads
// are joined and every router call has ended, so sessions and handlers may hold plain references.
struct GatewayContext {
  explicit GatewayContext(GatewaySettings s)
      : settings(std::move(s)), new_connections(settings.max_new_connections_per_second) {}

  const GatewaySettings settings;
  FrameTranslator translator;
  GatewayMetrics* metrics = nullptr;
  RouterClient* router = nullptr;
  ReadinessProbe* readiness = nullptr;
  Admission* admission = nullptr;
  SessionRegistry sessions;
  ConnectionRateLimiter new_connections;
  // WebSocket sessions past their upgrade (load.connections in consciousness_state).
  std::atomic<int64_t> open_connections{0};
  // Requests of every session that have not ended yet (the drain waits for none to be left).
  std::atomic<int64_t> in_flight{0};
  // Set once shutdown begins: new upgrades are refused.
  std::atomic<bool> draining{false};
};

}  // namespace anima::gateway
