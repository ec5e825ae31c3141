#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace anima::gateway {

// Everything the gateway's listeners and sessions are configured with; filled from flags by
// main.cc. Limits are per connection.
struct GatewaySettings {
  std::string bind = "127.0.0.1";
  int port = 3002;  // 0 picks a free port
  int threads = 2;  // io_context threads
  std::string router = "127.0.0.1:50051";
  // A text frame over this many bytes is answered with `too_large` and the connection is closed
  // with 1009.
  size_t max_message_bytes = 65536;
  int max_in_flight = 32;
  // Advertised in `welcome`. Not enforced yet: rate limiting comes with the auth/limits issue.
  int messages_per_second = 50;
  // Types routed to external modules (Envelope.raw_json) besides the built-in ones.
  std::vector<std::string> extra_types;
  // How often /readyz's view of the router's grpc.health.v1 status is refreshed.
  std::chrono::milliseconds readiness_interval{500};
  // On shutdown: how long sessions get to finish their close handshake (1001).
  std::chrono::milliseconds shutdown_grace{3000};
};

}  // namespace anima::gateway
