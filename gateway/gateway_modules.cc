#include "gateway/gateway_modules.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "gateway/admission.h"
#include "gateway/gateway_context.h"
#include "services/common/harmony.h"
#include "services/common/process.h"

namespace anima::gateway {

namespace {

anima::v1::ModuleStatus Module(const char* name, const char* kind) {
  anima::v1::ModuleStatus m;
  m.set_name(name);
  m.set_service("gateway");
  m.set_kind(kind);
  m.set_health(anima::v1::MODULE_HEALTH_HEALTHY);
  return m;
}

void Degrade(anima::v1::ModuleStatus& m, std::string why) {
  m.set_health(anima::v1::MODULE_HEALTH_DEGRADED);
  m.set_detail(std::move(why));
}

}  // namespace

GatewayModules::GatewayModules(Sources sources) : sources_(std::move(sources)) {}

void GatewayModules::NoteBroadcast(size_t sessions) {
  std::lock_guard lock(mu_);
  ++broadcasts_;
  last_broadcast_sessions_ = sessions;
  last_broadcast_ = common::Rfc3339Now();
}

void GatewayModules::AddTo(anima::v1::ConsciousnessState& state) {
  auto now = sources_.clock();
  *state.add_modules() = Gateway();
  *state.add_modules() = AdmissionModule(now);
  *state.add_modules() = Broadcaster();
  SetHarmony(state);
}

anima::v1::ModuleStatus GatewayModules::Gateway() const {
  const GatewayContext& context = *sources_.context;
  auto m = Module("gateway", "service");
  int64_t tcp = context.connections.load();
  int64_t max = context.settings.max_connections;
  m.set_in_flight(context.in_flight.load());
  (*m.mutable_counters())["connections"] = static_cast<double>(context.open_connections.load());
  (*m.mutable_counters())["tcp_connections"] = static_cast<double>(tcp);
  (*m.mutable_counters())["max_connections"] = static_cast<double>(max);
  if (context.draining.load()) {
    Degrade(m, "draining: new connections are refused");
  } else if (max > 0 && tcp * 10 >= max * 9) {
    Degrade(m, absl::StrCat(tcp, " of ", max, " connections open"));
  }
  return m;
}

anima::v1::ModuleStatus GatewayModules::AdmissionModule(Clock::time_point now) {
  auto m = Module("gateway/admission", "queue");
  if (sources_.admission == nullptr) {
    m.set_detail("admission off: requests go straight to the router");
    return m;
  }
  auto& counters = *m.mutable_counters();
  int64_t in_flight = 0;
  uint64_t refused = 0;
  double waiting = 0;
  for (const auto& [type, t] : sources_.admission->Snapshot()) {
    counters["limit." + type] = t.limit;
    counters["in_flight." + type] = t.in_flight;
    counters["waiting." + type] = static_cast<double>(t.waiting);
    counters["refused." + type] = static_cast<double>(t.refused);
    in_flight += t.in_flight;
    refused += t.refused;
    waiting += static_cast<double>(t.waiting);
  }
  counters["waiting"] = waiting;
  counters["refused"] = static_cast<double>(refused);
  m.set_in_flight(in_flight);
  std::lock_guard lock(mu_);
  if (refused > refused_seen_) last_shed_ = now;
  refused_seen_ = refused;
  if (last_shed_ && now - *last_shed_ < kShedWindow) {
    Degrade(m, "shedding load: requests refused as overloaded in the last 10 s");
  }
  return m;
}

anima::v1::ModuleStatus GatewayModules::Broadcaster() const {
  auto m = Module("gateway/broadcaster", "stream");
  std::lock_guard lock(mu_);
  auto& counters = *m.mutable_counters();
  counters["broadcasts"] = static_cast<double>(broadcasts_);
  counters["last_sessions"] = static_cast<double>(last_broadcast_sessions_);
  counters["interval_ms"] = static_cast<double>(sources_.context->settings.state_interval.count());
  m.set_last_active(last_broadcast_);
  if (sources_.state_stream_live && !sources_.state_stream_live()) {
    Degrade(m, "no live state stream from the router: broadcasts paused");
  }
  return m;
}

}  // namespace anima::gateway
