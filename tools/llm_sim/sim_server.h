#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"
#include "tools/llm_sim/provider_api.h"

namespace anima::sim {

struct SimServerOptions {
  std::string bind = "127.0.0.1";
  int port = 0;  // 0 picks a free port; see SimServer::port()
  int threads = 2;
  int idle_close_seconds = 0;  // close a connection idle this long between requests; 0 = never
  size_t max_body_bytes = 4 * 1024 * 1024;  // larger bodies get 413
};

// The simulator's HTTP/1.1 server (Boost.Beast, a small thread pool, a strand per connection).
// It parses requests, asks each ProviderApi in turn for a ResponsePlan, and plays the plan out
// byte for byte: delays, write boundaries, chunked framing, truncation and closes. Keep-alive is
// honoured, as is "Connection: close". GET /healthz is answered here for every provider.
//
// Metrics (registered in `registry`, which must outlive the server):
//   anima_sim_requests_total{route,scenario,status}, anima_sim_streams_cancelled_total,
//   anima_sim_active_streams.
//
// Thread safety: Start and Stop from one thread; the APIs are called concurrently.
class SimServer {
 public:
  static absl::StatusOr<std::unique_ptr<SimServer>> Start(
      const SimServerOptions& options, std::vector<std::unique_ptr<ProviderApi>> apis,
      std::shared_ptr<prometheus::Registry> registry);

  ~SimServer();
  SimServer(const SimServer&) = delete;
  SimServer& operator=(const SimServer&) = delete;

  int port() const { return port_; }

  // Stops accepting, drops every connection and joins the threads. Idempotent.
  void Stop();

 private:
  struct Impl;
  explicit SimServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  int port_ = 0;
};

}  // namespace anima::sim
