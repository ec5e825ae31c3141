#pragma once

#include <memory>
#include <thread>
#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded
#include <vector>

#include "absl/status/statusor.h"
#include "boost/asio/io_context.hpp"
#include "boost/asio/steady_timer.hpp"
#include "gateway/gateway_context.h"
#include "gateway/gateway_modules.h"
#include "gateway/http_session.h"
#include "gateway/state_watcher.h"
#include "prometheus/registry.h"

namespace anima::gateway {

// The whole gateway: the router channel and its readiness probe, the listener, and the io
// threads that run every connection.
class GatewayServer {
 public:
  // Binds settings.bind:settings.port and starts settings.threads io threads.
  static absl::StatusOr<std::unique_ptr<GatewayServer>> Start(GatewaySettings settings,
                                                              prometheus::Registry& registry);
  ~GatewayServer();  // Shutdown() if it has not run

  int port() const { return listener_->port(); }
  size_t connections() { return context_->sessions.size(); }

  // The drain: /readyz fails and the listener closes at once; requests in flight get up to
  // settings.drain_timeout to finish; then every session is closed with 1001 after the frames
  // already queued, with up to settings.shutdown_grace for the close handshakes; then the io
  // threads stop and the router calls still open are cancelled. Call once, from any thread but
  // an io thread.
  void Shutdown();

 private:
  GatewayServer() = default;
  // Every state_interval: the latest state, serialised once, to every session, a batch of
  // sessions at a time so that 10,000 connections do not hold 10,000 writes at once.
  void ScheduleBroadcast();
  void BroadcastState();
  void BroadcastBatch();
  // Every 100 ms: admission limits and probes move on without traffic too.
  void ScheduleAdmissionTick();

  // Declaration order is destruction order reversed: the io_context (and with it every session)
  // goes before what sessions refer to.
  std::unique_ptr<GatewayMetrics> metrics_;
  std::unique_ptr<RouterClient> router_;
  std::unique_ptr<Admission> admission_;
  std::unique_ptr<ReadinessProbe> readiness_;
  std::unique_ptr<StateWatcher> state_watcher_;
  std::unique_ptr<GatewayContext> context_;
  std::unique_ptr<GatewayModules> modules_;  // refers to context_, admission_, state_watcher_
  std::unique_ptr<boost::asio::io_context> ioc_;
  std::shared_ptr<Listener> listener_;
  std::unique_ptr<boost::asio::steady_timer> broadcast_timer_;
  // The broadcast under way (on broadcast_timer_'s strand): its frame, its sessions, the next.
  std::unique_ptr<boost::asio::steady_timer> batch_timer_;
  std::shared_ptr<const std::string> batch_frame_;
  std::vector<std::shared_ptr<WsSession>> batch_sessions_;
  size_t batch_next_ = 0;
  std::unique_ptr<boost::asio::steady_timer> admission_timer_;
  std::vector<std::thread> threads_;
  bool stopped_ = false;
};

}  // namespace anima::gateway
