// The usage ledger against a real PostgreSQL 15: what several gateways record adds up per
// principal and UTC day, survives the gateway (a fresh ledger reads it) and a PostgreSQL outage
// (kept in memory, written when it is back), and the usage answer reads it.
#include "gateway/usage_ledger.h"

#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/support/postgres_server.h"

namespace anima::gateway {
namespace {

using anima::testing::Eventually;
using std::chrono::milliseconds;
using std::chrono::system_clock;

// 2026-12-02T12:00:00Z
constexpr int64_t kNoonDec2 = 1796212800;

absl::StatusOr<UsageLedger::Totals> ReadNow(UsageLedger& ledger, const std::string& principal) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<UsageLedger::Totals>>>();
  ledger.Read(principal, [promise](absl::StatusOr<UsageLedger::Totals> t) {
    promise->set_value(std::move(t));
  });
  return promise->get_future().get();
}

class UsageLedgerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pg_ = anima::testing::PostgresServer::Start(); }
  static void TearDownTestSuite() { pg_.reset(); }

  void SetUp() override {
    ASSERT_NE(pg_, nullptr);
    if (!pg_->running()) {
      ASSERT_TRUE(pg_->Restart());
    }
    static int n = 0;
    url_ = pg_->CreateDatabase("ledger_" + std::to_string(++n));
    ASSERT_FALSE(url_.empty());
  }

  // A gateway's ledger: its own client; the clock is the test's.
  std::unique_ptr<UsageLedger> Ledger(milliseconds flush_interval = milliseconds(3600000)) {
    store::PostgresOptions options;
    options.url = url_;
    options.connections = 2;
    options.backoff_min = milliseconds(20);
    options.backoff_max = milliseconds(200);
    auto client = store::PostgresClient::Create(options, nullptr);
    EXPECT_TRUE(client.ok()) << client.status();
    UsageLedger::Options ledger;
    ledger.flush_interval = flush_interval;
    return std::make_unique<UsageLedger>(std::move(*client), ledger,
                                         [this] { return system_clock::from_time_t(now_.load()); });
  }

  static inline std::unique_ptr<anima::testing::PostgresServer> pg_;
  std::string url_;
  std::atomic<int64_t> now_{kNoonDec2};
};

TEST_F(UsageLedgerTest, WhatGatewaysRecordAddsUpAndOutlivesThem) {
  auto a = Ledger();
  auto b = Ledger();
  a->Add("alice", 1, 10, 0.5);
  a->Add("alice", 1, 0, 0);
  b->Add("alice", 1, 5, 0.25);
  b->Add("bob", 1, 7, 0);
  ASSERT_TRUE(a->Flush().ok());
  ASSERT_TRUE(b->Flush().ok());
  a.reset();
  b.reset();

  auto c = Ledger();
  auto alice = ReadNow(*c, "alice");
  ASSERT_TRUE(alice.ok()) << alice.status();
  EXPECT_EQ(alice->day.requests, 3);
  EXPECT_EQ(alice->day.tokens, 15);
  EXPECT_NEAR(alice->day.cost_usd, 0.75, 1e-12);
  EXPECT_EQ(alice->month.requests, 3);
  EXPECT_EQ(alice->month.tokens, 15);
  auto bob = ReadNow(*c, "bob");
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->day.tokens, 7);
  auto nobody = ReadNow(*c, "carol");
  ASSERT_TRUE(nobody.ok());
  EXPECT_EQ(nobody->month.requests, 0);
}

TEST_F(UsageLedgerTest, ALedgerReadsWhatItHasNotWrittenYet) {
  auto a = Ledger();
  auto other = Ledger();
  a->Add("alice", 2, 20, 0.1);
  auto own = ReadNow(*a, "alice");
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(own->day.requests, 2);
  EXPECT_EQ(own->day.tokens, 20);
  EXPECT_EQ(ReadNow(*other, "alice")->day.requests, 0);  // not written yet
  ASSERT_TRUE(a->Flush().ok());
  EXPECT_EQ(ReadNow(*other, "alice")->day.requests, 2);
  EXPECT_EQ(ReadNow(*a, "alice")->day.requests, 2);  // written once, counted once
}

TEST_F(UsageLedgerTest, SumsAreWrittenEveryFlushInterval) {
  auto a = Ledger(milliseconds(50));
  auto reader = Ledger();
  a->Add("alice", 1, 3, 0);
  EXPECT_TRUE(Eventually([&] {
    auto t = ReadNow(*reader, "alice");
    return t.ok() && t->day.tokens == 3;
  }));
}

TEST_F(UsageLedgerTest, DaysAndMonthsAreUtcCalendarWindows) {
  auto a = Ledger();
  a->Add("alice", 1, 1, 0);  // December 2nd
  now_ = kNoonDec2 + 86400;
  a->Add("alice", 1, 10, 0);  // December 3rd
  now_ = kNoonDec2 + 30 * 86400;
  a->Add("alice", 1, 100, 0);  // January 1st
  ASSERT_TRUE(a->Flush().ok());

  auto reader = Ledger();
  now_ = kNoonDec2 + 86400;
  auto dec3 = ReadNow(*reader, "alice");
  ASSERT_TRUE(dec3.ok()) << dec3.status();
  EXPECT_EQ(dec3->day.tokens, 10);
  EXPECT_EQ(dec3->month.tokens, 11);
  now_ = kNoonDec2 + 30 * 86400;
  auto jan1 = ReadNow(*reader, "alice");
  EXPECT_EQ(jan1->day.tokens, 100);
  EXPECT_EQ(jan1->month.tokens, 100);
}

TEST_F(UsageLedgerTest, AnyPrincipalIdIsItsOwnRow) {
  auto a = Ledger();
  std::vector<std::string> ids = {"", "a", "A", std::string("a\0b", 3), "\xff\xfe", "'; DROP"};
  for (size_t i = 0; i < ids.size(); ++i) a->Add(ids[i], 1, static_cast<int64_t>(i) + 1, 0);
  ASSERT_TRUE(a->Flush().ok());
  auto reader = Ledger();
  for (size_t i = 0; i < ids.size(); ++i) {
    auto t = ReadNow(*reader, ids[i]);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->day.tokens, static_cast<int64_t>(i) + 1) << "id " << i;
  }
}

TEST_F(UsageLedgerTest, SumsWaitForPostgresAndAreWrittenOnce) {
  auto a = Ledger();
  ASSERT_TRUE(ReadNow(*a, "alice").ok());  // connected and migrated
  ASSERT_TRUE(pg_->Stop());
  a->Add("alice", 1, 42, 0.5);
  EXPECT_FALSE(a->Flush().ok());
  EXPECT_FALSE(ReadNow(*a, "alice").ok());
  a->Add("alice", 1, 8, 0);
  ASSERT_TRUE(pg_->Restart());
  EXPECT_TRUE(Eventually([&] { return a->Flush().ok(); }));
  auto reader = Ledger();
  auto t = ReadNow(*reader, "alice");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->day.requests, 2);
  EXPECT_EQ(t->day.tokens, 50);
  EXPECT_NEAR(t->day.cost_usd, 0.5, 1e-12);
}

TEST_F(UsageLedgerTest, ReplicasStartingTogetherMigrateOnce) {
  std::vector<std::unique_ptr<UsageLedger>> ledgers;
  for (int i = 0; i < 4; ++i) ledgers.push_back(Ledger());
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (auto& l : ledgers) {
    threads.emplace_back([&ok, &l] { ok += ReadNow(*l, "x").ok(); });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
}

// Two gateways, each with its own in-process quotas and the shared ledger: the usage answer of
// either gives the day's totals of both.
TEST_F(UsageLedgerTest, TheUsageAnswerReadsTheLedger) {
  auto ledger_a = Ledger();
  auto ledger_b = Ledger();
  UsageLedger* raw_a = ledger_a.get();
  UsageLedger* raw_b = ledger_b.get();
  LedgerQuotaStore a(std::make_shared<LocalQuotaStore>(), std::move(ledger_a));
  LedgerQuotaStore b(std::make_shared<LocalQuotaStore>(), std::move(ledger_b));
  Principal p;
  p.id = "alice";
  p.limits.requests_per_minute = 2;
  int admitted = 0;
  for (int i = 0; i < 3; ++i) {
    a.Admit(p, true, [&](QuotaDecision d) { admitted += d.admitted(); });  // inline
  }
  EXPECT_EQ(admitted, 2);  // the third was refused, and is not in the ledger
  a.Charge(p, 100, 0.2);
  b.Admit(p, true, [&](QuotaDecision d) { admitted += d.admitted(); });
  ASSERT_TRUE(raw_a->Flush().ok());
  ASSERT_TRUE(raw_b->Flush().ok());
  auto promise = std::make_shared<std::promise<UsageReport>>();
  b.Usage(p, [promise](UsageReport r) { promise->set_value(std::move(r)); });
  UsageReport r = promise->get_future().get();
  EXPECT_EQ(r.day.requests, 3);
  EXPECT_EQ(r.day.tokens, 100);
  EXPECT_NEAR(r.month.cost_usd, 0.2, 1e-12);
  ASSERT_FALSE(r.limits.empty());  // the limits are still the quota store's
  EXPECT_EQ(r.limits[0].limit, "requests_per_minute");
}

}  // namespace
}  // namespace anima::gateway
