#pragma once

#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>

#include "services/self_coding/postgres_job_store.h"
#include "services/store/postgres_client.h"
#include "tests/support/postgres_server.h"

namespace anima::selfcoding::testing {

// One real PostgreSQL for the whole test binary, started on first use and stopped at exit; null
// when it cannot start (the reason is on stderr).
inline ::anima::testing::PostgresServer* SharedPostgres() {
  static std::unique_ptr<::anima::testing::PostgresServer> server =
      ::anima::testing::PostgresServer::Start();
  return server.get();
}

// A fresh database of the shared server, so tests never see each other's rows; "" if none.
inline std::string FreshDatabase() {
  static std::atomic<int> counter{0};
  auto* server = SharedPostgres();
  if (server == nullptr) return "";
  return server->CreateDatabase("t" + std::to_string(getpid()) + "_" + std::to_string(++counter));
}

// Short timeouts, so that tests of outages do not wait for production ones.
inline store::PostgresOptions TestOptions(const std::string& url) {
  store::PostgresOptions options;
  options.url = url;
  options.connections = 4;
  options.connect_timeout = std::chrono::milliseconds(2000);
  options.statement_timeout = std::chrono::milliseconds(2000);
  options.call_timeout = std::chrono::milliseconds(3000);
  options.acquire_timeout = std::chrono::milliseconds(3000);
  options.backoff_min = std::chrono::milliseconds(20);
  options.backoff_max = std::chrono::milliseconds(200);
  return options;
}

inline absl::StatusOr<std::unique_ptr<PostgresJobStore>> OpenPostgresStore(
    const std::string& url, prometheus::Registry* registry = nullptr) {
  auto client = store::PostgresClient::Create(TestOptions(url), registry);
  if (!client.ok()) return client.status();
  return PostgresJobStore::Open(std::move(*client));
}

}  // namespace anima::selfcoding::testing
