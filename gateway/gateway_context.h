#pragma once

#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "gateway/access_policy.h"
#include "gateway/admission.h"
#include "gateway/frame_translator.h"
#include "gateway/gateway_metrics.h"
#include "gateway/quota_store.h"
#include "gateway/readiness_probe.h"
#include "gateway/router_client.h"
#include "gateway/settings.h"

namespace anima::gateway {

class GatewayModules;
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

// One connection counted against max_connections while it lives; moved from the HttpSession that
// accepted it to the WsSession it is upgraded to.
class ConnectionSlot {
 public:
  ConnectionSlot() = default;
  explicit ConnectionSlot(std::atomic<int64_t>* count) : count_(count) { count_->fetch_add(1); }
  ConnectionSlot(ConnectionSlot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
  ConnectionSlot& operator=(ConnectionSlot&& other) noexcept {
    std::swap(count_, other.count_);
    return *this;
  }
  ~ConnectionSlot() {
    if (count_) count_->fetch_sub(1);
  }

 private:
  std::atomic<int64_t>* count_ = nullptr;
};

// What every session shares. Owned by GatewayServer, which destroys it only after the io threads
// are joined and every router call has ended, so sessions and handlers may hold plain references.
struct GatewayContext {
  explicit GatewayContext(GatewaySettings s)
      : settings(std::move(s)),
        access(settings.auth, settings.access),
        quotas(settings.quotas ? settings.quotas : std::make_shared<LocalQuotaStore>()),
        new_connections(settings.max_new_connections_per_second) {}

  const GatewaySettings settings;
  FrameTranslator translator;
  GatewayMetrics* metrics = nullptr;
  RouterClient* router = nullptr;
  ReadinessProbe* readiness = nullptr;
  Admission* admission = nullptr;
  GatewayModules* modules = nullptr;  // the gateway's own modules in consciousness_state
  SessionRegistry sessions;
  // Both front doors: who a request acts for, and that principal's quotas (asked
  // asynchronously: a shared store answers over the network).
  AccessPolicy access;
  const std::shared_ptr<QuotaStore> quotas;
  SharedRateLimiter new_connections;
  // TCP connections open (ConnectionSlot), WebSocket and HTTP: max_connections bounds it.
  std::atomic<int64_t> connections{0};
  // WebSocket sessions past their upgrade (load.connections in consciousness_state).
  std::atomic<int64_t> open_connections{0};
  // Requests of every session that have not ended yet (the drain waits for none to be left).
  std::atomic<int64_t> in_flight{0};
  // Of those, the self-coding jobs' event streams (self_coding_request, self_coding_watch): the
  // job goes on without the connection and its client watches it again from after_seq
  // elsewhere, so the drain does not wait for them.
  std::atomic<int64_t> in_flight_resumable{0};
  // Set once shutdown begins: new upgrades are refused.
  std::atomic<bool> draining{false};
};

}  // namespace anima::gateway
