#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gateway/quota_store.h"
#include "services/store/postgres_client.h"

namespace anima::gateway {

// The usage ledger (docs/security.md, "The usage ledger"): requests, tokens and dollars per
// principal per UTC day, in PostgreSQL, so that they add up over every gateway replica and
// outlive Redis and the gateways. What a gateway records is summed in memory and written every
// flush_interval, one upsert per (principal, day) in one transaction; a flush that fails keeps
// its sums for the next one. Reads add what this gateway has not written yet.
//
//   anima_usage_daily(principal bytea, day date, requests bigint, tokens bigint,
//                     cost_usd double precision, PRIMARY KEY (principal, day))
//
// The principal is bytea because an id is any bytes (a JWT subject need not be UTF-8). The
// schema is versioned in schema_migrations (component "gateway_usage") and migrated under the
// advisory lock every Anima component's migrations take, so replicas may start together.
//
// Threading: Add never blocks on the network; flushes and reads run on the ledger's own thread,
// where Totals' callback runs too. If the ledger is destroyed with sums it could not write, they
// are lost (logged).
class UsageLedger {
 public:
  using WallClock = std::function<std::chrono::system_clock::time_point()>;
  struct Totals {
    UsageTotals day, month;
  };
  struct Options {
    std::chrono::milliseconds flush_interval{5000};
    // (principal, day) sums held at most; past it a flush is due at once, and Adds for new rows
    // are dropped (and logged) while PostgreSQL cannot take them.
    size_t max_rows = 100000;
  };

  UsageLedger(std::unique_ptr<store::PostgresClient> client, Options options,
              WallClock wall = std::chrono::system_clock::now);
  ~UsageLedger();  // one last flush, then the thread stops
  UsageLedger(const UsageLedger&) = delete;
  UsageLedger& operator=(const UsageLedger&) = delete;

  // Adds to the principal's current UTC day. Thread-safe, never blocks on the network.
  void Add(const std::string& principal, int64_t requests, int64_t tokens, double cost_usd);
  // The principal's current UTC day and month: what PostgreSQL holds plus what waits here.
  // `done` runs on the ledger's thread.
  void Read(const std::string& principal, std::function<void(absl::StatusOr<Totals>)> done);
  // Writes what waits now (blocking; on the ledger's thread). For tests.
  absl::Status Flush();
  // Blocks until no Read callback is still to come.
  void Quiesce();

 private:
  struct Row {
    int64_t requests = 0, tokens = 0;
    double cost_usd = 0;
  };
  using Key = std::pair<std::string, int64_t>;  // principal, day (days since epoch)

  void Run();
  // On the ledger's thread.
  absl::Status Migrate();
  absl::Status FlushNow();
  absl::StatusOr<Totals> ReadNow(const std::string& principal);

  std::unique_ptr<store::PostgresClient> client_;
  const Options options_;
  const WallClock wall_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, Row> pending_;  // not written yet (a flush under way has taken its rows)
  std::deque<std::function<void()>> tasks_;
  int64_t busy_ = 0;  // tasks taken and not finished
  bool stopping_ = false;
  bool flush_due_ = false;
  bool migrated_ = false;  // on the ledger's thread only
  bool warned_full_ = false;
  std::thread thread_;
};

// A QuotaStore that also keeps the ledger: what `inner` admits counts a request, charges add
// tokens and dollars, and the usage answer's day and month totals are the ledger's (so every
// replica, and every restart, tells the same). Limits are still enforced by `inner` alone.
class LedgerQuotaStore : public QuotaStore {
 public:
  LedgerQuotaStore(std::shared_ptr<QuotaStore> inner, std::unique_ptr<UsageLedger> ledger)
      : ledger_(std::move(ledger)), inner_(std::move(inner)) {}

  void Admit(const Principal& principal, bool spends, AdmitCallback done) override;
  void Release(const Principal& principal, const QuotaTicket& ticket) override;
  void Charge(const Principal& principal, int64_t tokens, double cost_usd) override;
  void Usage(const Principal& principal, UsageCallback done) override;
  void Quiesce() override;

 private:
  // In this order: `inner` goes first, so answers it still gives find the ledger.
  std::unique_ptr<UsageLedger> ledger_;
  std::shared_ptr<QuotaStore> inner_;
};

}  // namespace anima::gateway
