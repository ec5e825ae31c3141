#include "gateway/usage_ledger.h"

#include <algorithm>
#include <ctime>
#include <future>
#include <iterator>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/store/postgres_migrations.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace {

using std::chrono::system_clock;
using store::PgParam;
using store::PgSession;

constexpr char kComponent[] = "gateway_usage";
// kMigrations[i] takes the schema from version i to i + 1. Append only.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE anima_usage_daily (
  principal bytea NOT NULL,
  day date NOT NULL,
  requests bigint NOT NULL DEFAULT 0,
  tokens bigint NOT NULL DEFAULT 0,
  cost_usd double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (principal, day)
);
)sql",
};

// "YYYY-MM-DD" of UTC day `day` (days since the epoch).
std::string DateOf(int64_t day) {
  std::time_t secs = static_cast<std::time_t>(day * 86400);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return absl::StrFormat("%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

// The first UTC day of the month of `t`.
int64_t FirstDayOfMonth(system_clock::time_point t) {
  std::time_t secs = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return QuotaTracker::DayOf(t) - (tm.tm_mday - 1);
}

}  // namespace

UsageLedger::UsageLedger(std::unique_ptr<store::PostgresClient> client, Options options,
                         WallClock wall)
    : client_(std::move(client)), options_(options), wall_(std::move(wall)) {
  thread_ = std::thread([this] { Run(); });
}

UsageLedger::~UsageLedger() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void UsageLedger::Add(const std::string& principal, int64_t requests, int64_t tokens,
                      double cost_usd) {
  if (requests <= 0 && tokens <= 0 && cost_usd <= 0) return;
  Key key{principal, QuotaTracker::DayOf(wall_())};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(key);
  if (it == pending_.end()) {
    if (pending_.size() >= options_.max_rows) {
      flush_due_ = true;
      cv_.notify_all();
      if (!warned_full_) {
        warned_full_ = true;
        spdlog::warn("usage ledger: {} rows wait for PostgreSQL; usage of new rows is not recorded",
                     pending_.size());
      }
      return;
    }
    it = pending_.emplace(std::move(key), Row{}).first;
    if (pending_.size() * 2 >= options_.max_rows) {
      flush_due_ = true;
      cv_.notify_all();
    }
  }
  it->second.requests += std::max<int64_t>(0, requests);
  it->second.tokens += std::max<int64_t>(0, tokens);
  it->second.cost_usd += std::max(0.0, cost_usd);
}

void UsageLedger::Read(const std::string& principal,
                       std::function<void(absl::StatusOr<Totals>)> done) {
  std::lock_guard<std::mutex> lock(mu_);
  tasks_.push_back([this, principal, done = std::move(done)] { done(ReadNow(principal)); });
  cv_.notify_all();
}

absl::Status UsageLedger::Flush() {
  auto promise = std::make_shared<std::promise<absl::Status>>();
  auto result = promise->get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    tasks_.push_back([this, promise] { promise->set_value(FlushNow()); });
  }
  cv_.notify_all();
  return result.get();
}

void UsageLedger::Quiesce() {
  std::unique_lock<std::mutex> lock(mu_);
  // Every statement has a deadline (the client's call_timeout); the bound is a guard.
  cv_.wait_for(lock, std::chrono::seconds(30), [this] { return tasks_.empty() && busy_ == 0; });
}

void UsageLedger::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  auto next_flush = std::chrono::steady_clock::now() + options_.flush_interval;
  for (;;) {
    cv_.wait_until(lock, next_flush, [this] { return stopping_ || flush_due_ || !tasks_.empty(); });
    if (!tasks_.empty()) {
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      ++busy_;
      lock.unlock();
      task();
      lock.lock();
      --busy_;
      cv_.notify_all();
      continue;
    }
    if (stopping_) break;
    if (flush_due_ || std::chrono::steady_clock::now() >= next_flush) {
      flush_due_ = false;
      lock.unlock();
      FlushNow().IgnoreError();  // logged, and its rows kept for the next flush
      lock.lock();
      next_flush = std::chrono::steady_clock::now() + options_.flush_interval;
    }
  }
  lock.unlock();
  if (auto s = FlushNow(); !s.ok()) {
    std::lock_guard<std::mutex> relock(mu_);
    spdlog::error("usage ledger: {} rows could not be written before shutdown: {}", pending_.size(),
                  s.ToString());
  }
}

absl::Status UsageLedger::Migrate() {
  if (migrated_) return absl::OkStatus();
  static const store::Schema kSchema{
      kComponent, "the usage ledger", "anima-gateway",
      std::vector<const char*>(std::begin(kMigrations), std::end(kMigrations))};
  absl::Status s = store::ApplyMigrations(*client_, kSchema);
  migrated_ = s.ok();
  return s;
}

absl::Status UsageLedger::FlushNow() {
  std::map<Key, Row> rows;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.empty()) return absl::OkStatus();
    rows.swap(pending_);
  }
  absl::Status s = Migrate();
  if (s.ok()) {
    // Rows in key order, the same on every gateway, so concurrent flushes cannot deadlock.
    s = client_->Transaction("usage_flush", [&rows](PgSession& tx) -> absl::Status {
      for (const auto& [key, row] : rows) {
        auto done = tx.Query(
            "INSERT INTO anima_usage_daily AS u (principal, day, requests, tokens, cost_usd) "
            "VALUES ($1, $2::date, $3::bigint, $4::bigint, $5::double precision) "
            "ON CONFLICT (principal, day) DO UPDATE SET requests = u.requests + "
            "EXCLUDED.requests, tokens = u.tokens + EXCLUDED.tokens, "
            "cost_usd = u.cost_usd + EXCLUDED.cost_usd",
            {PgParam::Bytes(key.first), PgParam::Text(DateOf(key.second)),
             PgParam::Int(row.requests), PgParam::Int(row.tokens),
             PgParam::Text(absl::StrFormat("%.17g", row.cost_usd))});
        if (!done.ok()) return done.status();
      }
      return absl::OkStatus();
    });
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (s.ok()) {
    warned_full_ = false;
    return s;
  }
  // Kept for the next flush. A COMMIT whose outcome is unknown may count these twice; losing
  // them would be worse for a ledger that budgets are audited against.
  for (auto& [key, row] : rows) {
    Row& r = pending_[key];
    r.requests += row.requests;
    r.tokens += row.tokens;
    r.cost_usd += row.cost_usd;
  }
  spdlog::warn("usage ledger: could not write {} rows, kept for the next flush: {}",
               pending_.size(), s.ToString());
  return s;
}

absl::StatusOr<UsageLedger::Totals> UsageLedger::ReadNow(const std::string& principal) {
  if (auto s = Migrate(); !s.ok()) return s;
  system_clock::time_point wall = wall_();
  int64_t today = QuotaTracker::DayOf(wall);
  int64_t first = FirstDayOfMonth(wall);
  auto rows = client_->Query(
      "usage_read",
      "SELECT COALESCE(SUM(requests) FILTER (WHERE day = $2::date), 0)::bigint, "
      "COALESCE(SUM(tokens) FILTER (WHERE day = $2::date), 0)::bigint, "
      "COALESCE(SUM(cost_usd) FILTER (WHERE day = $2::date), 0)::text, "
      "COALESCE(SUM(requests), 0)::bigint, COALESCE(SUM(tokens), 0)::bigint, "
      "COALESCE(SUM(cost_usd), 0)::text "
      "FROM anima_usage_daily WHERE principal = $1 AND day BETWEEN $3::date AND $2::date",
      {PgParam::Bytes(principal), PgParam::Text(DateOf(today)), PgParam::Text(DateOf(first))});
  if (!rows.ok()) return rows.status();
  if (rows->size() != 1) return absl::InternalError("usage ledger: no row from an aggregate");
  auto number = [&](int col) {
    double v = 0;
    return absl::SimpleAtod(rows->Bytes(0, col), &v) ? v : 0.0;
  };
  Totals t;
  t.day = {rows->Int(0, 0), rows->Int(0, 1), number(2)};
  t.month = {rows->Int(0, 3), rows->Int(0, 4), number(5)};
  // What this gateway has not written yet (a failed flush's rows included).
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = pending_.lower_bound(Key{principal, first});
       it != pending_.end() && it->first.first == principal && it->first.second <= today; ++it) {
    const Row& r = it->second;
    if (it->first.second == today) {
      t.day.requests += r.requests;
      t.day.tokens += r.tokens;
      t.day.cost_usd += r.cost_usd;
    }
    t.month.requests += r.requests;
    t.month.tokens += r.tokens;
    t.month.cost_usd += r.cost_usd;
  }
  return t;
}

void LedgerQuotaStore::Admit(const Principal& principal, bool spends, AdmitCallback done) {
  inner_->Admit(
      principal, spends,
      [ledger = ledger_.get(), id = principal.id, done = std::move(done)](QuotaDecision decision) {
        if (decision.admitted()) ledger->Add(id, 1, 0, 0);
        done(std::move(decision));
      });
}

void LedgerQuotaStore::Release(const Principal& principal, const QuotaTicket& ticket) {
  inner_->Release(principal, ticket);
}

void LedgerQuotaStore::Charge(const Principal& principal, int64_t tokens, double cost_usd) {
  inner_->Charge(principal, tokens, cost_usd);
  ledger_->Add(principal.id, 0, tokens, cost_usd);
}

void LedgerQuotaStore::Usage(const Principal& principal, UsageCallback done) {
  inner_->Usage(principal, [ledger = ledger_.get(), id = principal.id,
                            done = std::move(done)](UsageReport report) mutable {
    ledger->Read(id, [report = std::move(report),
                      done = std::move(done)](absl::StatusOr<UsageLedger::Totals> totals) mutable {
      // PostgreSQL unreachable: the quota store's own counts, rather than no answer.
      if (totals.ok()) {
        report.day = totals->day;
        report.month = totals->month;
      }
      done(std::move(report));
    });
  });
}

void LedgerQuotaStore::Quiesce() {
  inner_->Quiesce();
  ledger_->Quiesce();
}

}  // namespace anima::gateway
