#pragma once

#include <map>
#include <string>
#include <string_view>

#include "gateway/admission.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace anima::gateway {

// The gateway's own metrics. Label values are bounded: client types are the built-in types or
// "other"; outcomes are "ok" or a protocol error code; sent types are server frame types.
//   anima_gateway_connections                       gauge, open WebSocket sessions
//   anima_gateway_connections_total                 counter, accepted upgrades
//   anima_gateway_frames_received_total{type,outcome}
//   anima_gateway_frames_sent_total{type}
//   anima_gateway_request_seconds{type}             frame in -> terminal frame out
//   anima_gateway_errors_total{code}                error frames sent
//   anima_gateway_auth_failures_total{reason}      refused upgrades, expired tokens
//   anima_gateway_limit_hits_total{limit}           a limit refused or closed something; limit is
//       message_size, messages_per_second, in_flight, send_queue
//   anima_gateway_admission_limit{type}             adaptive concurrency limit of a type
//   anima_gateway_admission_waiting_sessions{type}  sessions with requests of it held now
//   anima_gateway_admission_baseline_seconds{type}  its round trip at concurrency 1
//   anima_gateway_admission_wait_seconds{priority}  how long admitted requests waited
//   anima_gateway_admission_refused_total{type,reason}  refused as `overloaded` before reaching
//       the router; reason standing_queue (at arrival: the queue's oldest waited past the
//       target) or max_wait (waited past --admission-max-queue-wait-ms)
//       (types are routing-table types or "other", so the labels stay bounded)
//   anima_gateway_quota_refusals_total{tier,limit}  requests refused by a principal's quota
//   anima_gateway_tokens_charged_total{tier}        tokens charged to principals' budgets
//   anima_gateway_cost_usd_total{tier}              dollars charged to principals' budgets
//   anima_gateway_principal_quota_refusals_total{principal,limit}, and
//   anima_gateway_principal_cost_usd_total{principal}: only when the principals are bounded by
//       the keys file (EnablePrincipalLabels; docs/metrics.md, "Cardinality").
// Tiers are the keys file's (a JWT naming another tier is refused), "none" without one.
// Thread-safe.
class GatewayMetrics {
 public:
  explicit GatewayMetrics(prometheus::Registry& registry);

  void ConnectionOpened();
  void ConnectionClosed();
  void FrameReceived(std::string_view type, std::string_view outcome);
  void FrameSent(std::string_view type);
  void RequestDone(std::string_view type, double seconds);
  void ErrorSent(std::string_view code);
  void LimitHit(std::string_view limit);
  // reason: missing, invalid, expired (a token that expired during its connection), revoked (a
  // reload removed the connection's key), origin, throttled.
  void AuthFailed(std::string_view reason);
  void QuotaRefused(const std::string& principal, const std::string& tier,
                    const std::string& limit);
  void Spent(const std::string& principal, const std::string& tier, int64_t tokens, double usd);
  // Turns on the per-principal families; call before traffic.
  void EnablePrincipalLabels() { principal_labels_ = true; }
  // The gauges of the admission limiter `type` (a routing-table type or "other").
  AdmissionGauges AdmissionGaugesFor(const std::string& type);
  void AdmissionWait(const std::string& priority, double seconds);

  // The `type` label for a client message type.
  static std::string TypeLabel(std::string_view type);

 private:
  prometheus::Gauge& connections_;
  prometheus::Counter& connections_total_;
  prometheus::Family<prometheus::Counter>& received_;
  prometheus::Family<prometheus::Counter>& sent_;
  prometheus::Family<prometheus::Histogram>& request_seconds_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& limit_hits_;
  prometheus::Family<prometheus::Counter>& auth_failures_;
  prometheus::Family<prometheus::Gauge>& admission_limit_;
  prometheus::Family<prometheus::Gauge>& admission_waiting_;
  prometheus::Family<prometheus::Gauge>& admission_baseline_;
  prometheus::Family<prometheus::Histogram>& admission_wait_;
  prometheus::Family<prometheus::Counter>& admission_refused_;
  prometheus::Family<prometheus::Counter>& quota_refusals_;
  prometheus::Family<prometheus::Counter>& tokens_charged_;
  prometheus::Family<prometheus::Counter>& cost_;
  prometheus::Family<prometheus::Counter>& principal_refusals_;
  prometheus::Family<prometheus::Counter>& principal_cost_;
  bool principal_labels_ = false;
};

}  // namespace anima::gateway
