#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "gateway/access_policy.h"
#include "gateway/admission.h"
#include "gateway/auth.h"
#include "gateway/quota_store.h"

namespace anima::gateway {

// Everything the gateway's listeners and sessions are configured with; filled from flags by
// main.cc. Limits are per connection unless they say otherwise; the principal's quotas come from
// the keys file (gateway/principals.h).
struct GatewaySettings {
  std::string bind = "127.0.0.1";
  int port = 3002;  // 0 picks a free port
  int threads = 2;  // io_context threads
  std::string router = "127.0.0.1:50051";
  // A text frame over this many bytes is answered with `too_large` and the connection is closed
  // with 1009.
  size_t max_message_bytes = 65536;
  int max_in_flight = 32;
  // Token bucket per connection: refills at this rate, holds at most this many tokens (a burst
  // of one second). A frame without a token is answered `rate_limited` with retry_after_ms.
  int messages_per_second = 50;
  // Connections open at once, WebSocket and HTTP (idle keep-alive ones included); a connection
  // accepted over it is answered HTTP 503 (but /healthz and /readyz) and closed.
  int max_connections = 10000;
  // New connections per second over the whole gateway, WebSocket and HTTP (token bucket, burst
  // of one second); a connection over it is answered HTTP 429 with Retry-After and closed.
  int max_new_connections_per_second = 500;
  // From TCP accept to a complete HTTP request (the upgrade or an API call), and for the
  // WebSocket handshake itself.
  std::chrono::milliseconds handshake_timeout{10000};
  // A WebSocket connection that sends nothing for half of this gets a ping; one that has sent
  // nothing, not even a pong, for all of it is closed.
  std::chrono::milliseconds idle_timeout{60000};
  // How often subscribed connections get the latest consciousness_state.
  std::chrono::milliseconds state_interval{5000};
  // Bytes of frames queued for one connection (the one being written included). A connection
  // that stays over it for slow_reader_timeout, or goes over twice it, is closed with 1008.
  size_t max_send_queue_bytes = 1 << 20;
  std::chrono::milliseconds slow_reader_timeout{5000};
  // How often /readyz's view of the router's grpc.health.v1 status is refreshed.
  std::chrono::milliseconds readiness_interval{500};
  // On shutdown, after /readyz fails and the listener closes: how long requests in flight get to
  // finish before every connection is closed with 1001.
  std::chrono::milliseconds drain_timeout{10000};
  // Null: auth is off, every client is the principal `local` (and main refuses a non-loopback
  // bind unless --allow-unauthenticated). Otherwise every upgrade and API request needs a key
  // or a JWT.
  std::shared_ptr<Authenticator> auth;
  // Browser origins, failed-auth throttling (gateway/access_policy.h).
  AccessPolicy::Options access;
  // anima_gateway_principal_* metrics (set when the keys file bounds the principals).
  bool metrics_per_principal = false;
  // Every request held to an adaptive concurrency limit per type, and refused when it would
  // wait too long, before it goes to the router (gateway/admission.h); off: every frame is
  // dispatched as it arrives.
  bool admission = true;
  // GET / (without an upgrade) and /console/* serve the web console (gateway/console/).
  bool console = true;
  AdaptiveLimitOptions admission_limit;
  double admission_high_tolerance = 4.0;  // Admission::Options::high_tolerance
  // How long requests may wait for admission (Admission::Options): a new one is refused
  // `overloaded` once the oldest has waited past the target; none waits past the maximum.
  std::chrono::milliseconds admission_queue_target{10};
  std::chrono::milliseconds admission_max_queue_wait{50};
  // Where principals' quotas are kept (gateway/quota_store.h): main.cc sets a RedisQuotaStore
  // for --redis; null: a LocalQuotaStore (this gateway's own counts).
  std::shared_ptr<QuotaStore> quotas;
  // On shutdown: how long sessions get to finish their close handshake (1001).
  std::chrono::milliseconds shutdown_grace{3000};
};

}  // namespace anima::gateway
