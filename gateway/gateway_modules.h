#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "anima/v1/introspection.pb.h"

namespace anima::gateway {

class Admission;
struct GatewayContext;

// The gateway's own modules in consciousness_state (PROTOCOL.md §3). The router's state covers
// the back ends it polls; only the gateway knows its connections, its admission and its state
// broadcaster. It adds them to every state it sends (broadcast or query reply) and computes
// harmony again over all modules, so a client sees the whole system:
//
//   gateway              service  degraded while draining or at 90 % of max_connections
//   gateway/admission    queue    degraded while it sheds load (a refusal in the last 10 s)
//   gateway/broadcaster  stream   degraded while it has no live WatchState stream from the router
//
// Thread-safe.
class GatewayModules {
 public:
  using Clock = std::chrono::steady_clock;
  struct Sources {
    const GatewayContext* context = nullptr;  // connections, in-flight, draining, settings
    Admission* admission = nullptr;           // null: admission is off
    std::function<bool()> state_stream_live;  // the router's WatchState stream is current
    std::function<Clock::time_point()> clock = [] { return Clock::now(); };
  };
  // How long after its last refusal admission still reads as shedding.
  static constexpr std::chrono::seconds kShedWindow{10};

  explicit GatewayModules(Sources sources);

  // A state broadcast went out to `sessions` sessions.
  void NoteBroadcast(size_t sessions);
  // Appends the gateway's modules to `state` and sets its harmony and status again.
  void AddTo(anima::v1::ConsciousnessState& state);

 private:
  anima::v1::ModuleStatus Gateway() const;
  anima::v1::ModuleStatus AdmissionModule(Clock::time_point now);
  anima::v1::ModuleStatus Broadcaster() const;

  const Sources sources_;
  mutable std::mutex mu_;
  uint64_t refused_seen_ = 0;                   // admission refusals, all types, last looked at
  std::optional<Clock::time_point> last_shed_;  // when that total was last seen growing
  uint64_t broadcasts_ = 0;
  size_t last_broadcast_sessions_ = 0;
  std::string last_broadcast_;  // RFC 3339
};

}  // namespace anima::gateway
