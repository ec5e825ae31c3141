#include "gateway/gateway_metrics.h"

#include <algorithm>

#include "gateway/frame_translator.h"
#include "services/common/metrics.h"

namespace anima::gateway {

GatewayMetrics::GatewayMetrics(prometheus::Registry& registry)
    : connections_(prometheus::BuildGauge()
                       .Name("anima_gateway_connections")
                       .Help("Open WebSocket connections.")
                       .Register(registry)
                       .Add({})),
      connections_total_(prometheus::BuildCounter()
                             .Name("anima_gateway_connections_total")
                             .Help("WebSocket connections accepted.")
                             .Register(registry)
                             .Add({})),
      received_(prometheus::BuildCounter()
                    .Name("anima_gateway_frames_received_total")
                    .Help("Client frames by type and outcome (ok or the error code answered).")
                    .Register(registry)),
      sent_(prometheus::BuildCounter()
                .Name("anima_gateway_frames_sent_total")
                .Help("Server frames by type.")
                .Register(registry)),
      request_seconds_(prometheus::BuildHistogram()
                           .Name("anima_gateway_request_seconds")
                           .Help("From a client frame in to its terminal frame out.")
                           .Register(registry)),
      errors_(prometheus::BuildCounter()
                  .Name("anima_gateway_errors_total")
                  .Help("Error frames sent, by code.")
                  .Register(registry)),
      limit_hits_(prometheus::BuildCounter()
                      .Name("anima_gateway_limit_hits_total")
                      .Help("Times a limit was hit, by limit.")
                      .Register(registry)),
      auth_failures_(prometheus::BuildCounter()
                         .Name("anima_gateway_auth_failures_total")
                         .Help("Upgrades refused for auth, and tokens that expired in a session.")
                         .Register(registry)),
      admission_limit_(prometheus::BuildGauge()
                           .Name("anima_gateway_admission_limit")
                           .Help("Adaptive concurrency limit of a message type.")
                           .Register(registry)),
      admission_waiting_(
          prometheus::BuildGauge()
              .Name("anima_gateway_admission_waiting_sessions")
              .Help("Sessions with requests of the type held in the gateway for a slot.")
              .Register(registry)),
      admission_baseline_(prometheus::BuildGauge()
                              .Name("anima_gateway_admission_baseline_seconds")
                              .Help("The type's round trip at concurrency 1 (last probe).")
                              .Register(registry)),
      admission_wait_(prometheus::BuildHistogram()
                          .Name("anima_gateway_admission_wait_seconds")
                          .Help("How long admitted requests waited for a slot, by priority.")
                          .Register(registry)),
      admission_refused_(prometheus::BuildCounter()
                             .Name("anima_gateway_admission_refused_total")
                             .Help("Requests refused as overloaded by admission, by type and "
                                   "reason (standing_queue, max_wait).")
                             .Register(registry)),
      quota_refusals_(prometheus::BuildCounter()
                          .Name("anima_gateway_quota_refusals_total")
                          .Help("Requests refused by a principal's quota, by tier and limit.")
                          .Register(registry)),
      tokens_charged_(prometheus::BuildCounter()
                          .Name("anima_gateway_tokens_charged_total")
                          .Help("Tokens charged to principals' budgets, by tier.")
                          .Register(registry)),
      cost_(prometheus::BuildCounter()
                .Name("anima_gateway_cost_usd_total")
                .Help("US dollars charged to principals' budgets, by tier.")
                .Register(registry)),
      principal_refusals_(prometheus::BuildCounter()
                              .Name("anima_gateway_principal_quota_refusals_total")
                              .Help("Requests refused by a quota, by principal (bounded keys "
                                    "files only).")
                              .Register(registry)),
      principal_cost_(prometheus::BuildCounter()
                          .Name("anima_gateway_principal_cost_usd_total")
                          .Help("US dollars charged, by principal (bounded keys files only).")
                          .Register(registry)) {}

namespace {
std::string TierLabel(const std::string& tier) { return tier.empty() ? "none" : tier; }
}  // namespace

void GatewayMetrics::QuotaRefused(const std::string& principal, const std::string& tier,
                                  const std::string& limit) {
  quota_refusals_.Add({{"tier", TierLabel(tier)}, {"limit", limit}}).Increment();
  if (principal_labels_) {
    principal_refusals_.Add({{"principal", principal}, {"limit", limit}}).Increment();
  }
}

void GatewayMetrics::Spent(const std::string& principal, const std::string& tier, int64_t tokens,
                           double usd) {
  if (tokens > 0)
    tokens_charged_.Add({{"tier", TierLabel(tier)}}).Increment(static_cast<double>(tokens));
  if (usd > 0) {
    cost_.Add({{"tier", TierLabel(tier)}}).Increment(usd);
    if (principal_labels_) principal_cost_.Add({{"principal", principal}}).Increment(usd);
  }
}

AdmissionGauges GatewayMetrics::AdmissionGaugesFor(const std::string& type) {
  return {&admission_limit_.Add({{"type", type}}), &admission_waiting_.Add({{"type", type}}),
          &admission_baseline_.Add({{"type", type}}),
          &admission_refused_.Add({{"type", type}, {"reason", "standing_queue"}}),
          &admission_refused_.Add({{"type", type}, {"reason", "max_wait"}})};
}

void GatewayMetrics::AdmissionWait(const std::string& priority, double seconds) {
  admission_wait_.Add({{"priority", priority}}, common::LatencyBuckets()).Observe(seconds);
}

void GatewayMetrics::AuthFailed(std::string_view reason) {
  auth_failures_.Add({{"reason", std::string(reason)}}).Increment();
}

void GatewayMetrics::LimitHit(std::string_view limit) {
  limit_hits_.Add({{"limit", std::string(limit)}}).Increment();
}

void GatewayMetrics::ConnectionOpened() {
  connections_.Increment();
  connections_total_.Increment();
}

void GatewayMetrics::ConnectionClosed() { connections_.Decrement(); }

void GatewayMetrics::FrameReceived(std::string_view type, std::string_view outcome) {
  received_.Add({{"type", TypeLabel(type)}, {"outcome", std::string(outcome)}}).Increment();
}

void GatewayMetrics::FrameSent(std::string_view type) {
  sent_.Add({{"type", std::string(type)}}).Increment();
}

void GatewayMetrics::RequestDone(std::string_view type, double seconds) {
  request_seconds_.Add({{"type", TypeLabel(type)}}, common::LatencyBuckets()).Observe(seconds);
}

void GatewayMetrics::ErrorSent(std::string_view code) {
  errors_.Add({{"code", std::string(code)}}).Increment();
}

std::string GatewayMetrics::TypeLabel(std::string_view type) {
  const auto& builtin = FrameTranslator::BuiltinTypes();
  if (std::find(builtin.begin(), builtin.end(), type) != builtin.end()) return std::string(type);
  return "other";
}

}  // namespace anima::gateway
