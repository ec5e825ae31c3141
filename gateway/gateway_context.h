#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

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

// What every session shares. Owned by GatewayServer, which destroys it only after the io threads
// are joined and every router call has ended, so sessions and handlers may hold plain references.
struct GatewayContext {
  explicit GatewayContext(GatewaySettings s)
      : settings(std::move(s)), translator(settings.extra_types) {}

  const GatewaySettings settings;
  FrameTranslator translator;
  GatewayMetrics* metrics = nullptr;
  RouterClient* router = nullptr;
  ReadinessProbe* readiness = nullptr;
  SessionRegistry sessions;
  // Set once shutdown begins: new upgrades are refused.
  std::atomic<bool> draining{false};
};

}  // namespace anima::gateway
