// The QuotaStore contract, one suite run against both stores: the in-process one and the one
// shared on a real redis-server. Time is real (Redis's clock keeps the rates), so the limits are
// chosen so that no bucket refills noticeably while a test runs: a test never waits for a clock.
#include "gateway/quota_store.h"

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "gateway/redis_quota_store.h"
#include "gtest/gtest.h"
#include "services/store/redis_client.h"
#include "tests/integration/harness/harness.h"
#include "tests/support/redis_server.h"

namespace anima::gateway {
namespace {

using anima::testing::Eventually;
using std::chrono::milliseconds;
using std::chrono::system_clock;

enum class Backend { kInProcess, kRedis };

QuotaDecision AdmitNow(QuotaStore& store, const Principal& p, bool spends = false) {
  auto promise = std::make_shared<std::promise<QuotaDecision>>();
  auto answer = promise->get_future();
  store.Admit(p, spends, [promise](QuotaDecision d) { promise->set_value(std::move(d)); });
  if (answer.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "Admit never answered";
    return {};
  }
  return answer.get();
}

UsageReport UsageNow(QuotaStore& store, const Principal& p) {
  auto promise = std::make_shared<std::promise<UsageReport>>();
  auto answer = promise->get_future();
  store.Usage(p, [promise](UsageReport r) { promise->set_value(std::move(r)); });
  if (answer.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "Usage never answered";
    return {};
  }
  return answer.get();
}

// Points into `r`: keep the report alive while using the entry.
const UsageEntry* Entry(const UsageReport& r, const std::string& limit) {
  for (const auto& e : r.limits) {
    if (e.limit == limit) return &e;
  }
  return nullptr;
}

Principal With(QuotaLimits limits, std::string id) {
  Principal p;
  p.id = std::move(id);
  p.tier = "t";
  p.limits = limits;
  return p;
}

std::unique_ptr<store::RedisClient> ClientFor(const std::string& url) {
  store::RedisOptions options;
  options.url = url;
  options.call_timeout = milliseconds(2000);  // generous: these tests are about answers
  auto client = store::RedisClient::Create(options, nullptr);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(*client) : nullptr;
}

// Redis answers PING on this client (its connections are up).
bool Connected(store::RedisClient& client) {
  auto promise = std::make_shared<std::promise<bool>>();
  auto answer = promise->get_future();
  client.Command("test", {"PING"},
                 [promise](absl::StatusOr<store::RedisReply> r) { promise->set_value(r.ok()); });
  return answer.get();
}

class QuotaStoreContractTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() { redis_ = anima::testing::RedisServer::Start(); }
  static void TearDownTestSuite() { redis_.reset(); }

  void SetUp() override {
    if (GetParam() == Backend::kInProcess) {
      store_ = std::make_unique<LocalQuotaStore>();
      return;
    }
    ASSERT_NE(redis_, nullptr);
    admin_ = ClientFor(redis_->url());
    ASSERT_TRUE(Eventually([&] { return Connected(*admin_); }));
    // Waited for: a FLUSHALL still queued when the test's first calls land would wipe them.
    std::promise<absl::StatusOr<store::RedisReply>> flushed;
    admin_->Command("test", {"FLUSHALL"}, [&flushed](auto r) { flushed.set_value(std::move(r)); });
    ASSERT_TRUE(flushed.get_future().get().ok());
    auto client = ClientFor(redis_->url());
    ASSERT_TRUE(Eventually([&] { return Connected(*client); }));
    store_ = std::make_unique<RedisQuotaStore>(std::move(client), RedisQuotaOptions{}, nullptr);
  }

  // Charges are fire and forget: the usage report says when one has landed.
  void ChargeAndWait(const Principal& p, int64_t tokens, double cost) {
    int64_t before_tokens = UsageNow(*store_, p).day.tokens;
    double before_cost = UsageNow(*store_, p).day.cost_usd;
    store_->Charge(p, tokens, cost);
    ASSERT_TRUE(Eventually([&] {
      UsageReport r = UsageNow(*store_, p);
      return r.day.tokens == before_tokens + tokens &&
             std::abs(r.day.cost_usd - (before_cost + cost)) < 1e-9;
    }));
  }

  static inline std::unique_ptr<anima::testing::RedisServer> redis_;
  std::unique_ptr<store::RedisClient> admin_;
  std::unique_ptr<QuotaStore> store_;
};

TEST_P(QuotaStoreContractTest, RequestsPerMinuteRefusesAtTheLimit) {
  Principal p = With({.requests_per_minute = 3}, "alice");
  for (int i = 0; i < 3; ++i) {
    QuotaDecision d = AdmitNow(*store_, p);
    ASSERT_TRUE(d.admitted()) << i;
    ASSERT_TRUE(d.headers.requests);
    EXPECT_EQ(d.headers.requests->limit, 3);
    EXPECT_EQ(d.headers.requests->remaining, 2 - i);
    EXPECT_GT(d.headers.requests->reset, milliseconds(0));
    EXPECT_LE(d.headers.requests->reset, milliseconds(60000));
    store_->Release(p, d.ticket);
  }
  QuotaDecision refused = AdmitNow(*store_, p);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "requests_per_minute");
  EXPECT_FALSE(refused.refusal->budget);
  EXPECT_EQ(refused.refusal->message, "over requests_per_minute (3)");
  // One request's worth of the minute: 20 s, less what passed since the first.
  EXPECT_GT(refused.refusal->retry_after, milliseconds(15000));
  EXPECT_LE(refused.refusal->retry_after, milliseconds(20000));
  ASSERT_TRUE(refused.headers.requests);
  EXPECT_EQ(refused.headers.requests->remaining, 0);
  EXPECT_FALSE(refused.headers.tokens);
}

TEST_P(QuotaStoreContractTest, RequestsPerSecondRefusesAtTheLimit) {
  Principal p = With({.requests_per_second = 1}, "alice");
  QuotaDecision first = AdmitNow(*store_, p);
  ASSERT_TRUE(first.admitted());
  ASSERT_TRUE(first.headers.requests);  // from the per-second rate without a per-minute one
  EXPECT_EQ(first.headers.requests->limit, 1);
  QuotaDecision refused = AdmitNow(*store_, p);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "requests_per_second");
  EXPECT_GE(refused.refusal->retry_after, milliseconds(1));
  EXPECT_LE(refused.refusal->retry_after, milliseconds(1000));
}

TEST_P(QuotaStoreContractTest, ARefusalCountsNothing) {
  Principal p = With({.requests_per_minute = 1}, "alice");
  ASSERT_TRUE(AdmitNow(*store_, p).admitted());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(AdmitNow(*store_, p).admitted());
  UsageReport r = UsageNow(*store_, p);
  EXPECT_EQ(r.day.requests, 1);
  EXPECT_EQ(r.month.requests, 1);
}

TEST_P(QuotaStoreContractTest, InFlightIsCountedAndReleased) {
  Principal p = With({.requests_in_flight = 2}, "alice");
  QuotaDecision a = AdmitNow(*store_, p);
  QuotaDecision b = AdmitNow(*store_, p);
  ASSERT_TRUE(a.admitted());
  ASSERT_TRUE(b.admitted());
  QuotaDecision refused = AdmitNow(*store_, p);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "requests_in_flight");
  EXPECT_GT(refused.refusal->retry_after, milliseconds(0));
  UsageReport usage = UsageNow(*store_, p);  // kept: Entry points into it
  const UsageEntry* in_flight = Entry(usage, "requests_in_flight");
  ASSERT_NE(in_flight, nullptr);
  EXPECT_EQ(in_flight->used, 2);
  EXPECT_EQ(in_flight->remaining, 0);

  store_->Release(p, a.ticket);
  QuotaDecision c;
  ASSERT_TRUE(Eventually([&] {
    c = AdmitNow(*store_, p);
    return c.admitted();
  }));
  store_->Release(p, b.ticket);
  store_->Release(p, c.ticket);
  EXPECT_TRUE(Eventually([&] {
    UsageReport now = UsageNow(*store_, p);
    const UsageEntry* e = Entry(now, "requests_in_flight");
    return e && e->used == 0;
  }));
}

TEST_P(QuotaStoreContractTest, TokensPerDayAreChargedAndRefuseSpending) {
  Principal p = With({.tokens_per_day = 100}, "alice");
  ASSERT_TRUE(AdmitNow(*store_, p, /*spends=*/true).admitted());
  ChargeAndWait(p, 60, 0);
  ASSERT_TRUE(AdmitNow(*store_, p, true).admitted());  // 60 of 100: still under
  ChargeAndWait(p, 60, 0);
  QuotaDecision refused = AdmitNow(*store_, p, true);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "tokens_per_day");
  EXPECT_TRUE(refused.refusal->budget);
  EXPECT_GT(refused.refusal->retry_after, milliseconds(0));
  EXPECT_LE(refused.refusal->retry_after, milliseconds(86400000));
  // What spends nothing is held to the rates only.
  EXPECT_TRUE(AdmitNow(*store_, p, /*spends=*/false).admitted());
  UsageReport r = UsageNow(*store_, p);
  EXPECT_EQ(r.day.tokens, 120);
  EXPECT_EQ(r.month.tokens, 120);
  const UsageEntry* e = Entry(r, "tokens_per_day");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->used, 120);
  EXPECT_EQ(e->remaining, 0);
}

TEST_P(QuotaStoreContractTest, CostPerDayAndPerMonth) {
  Principal daily = With({.cost_per_day = 1.0}, "daily");
  ChargeAndWait(daily, 0, 0.6);
  EXPECT_TRUE(AdmitNow(*store_, daily, true).admitted());
  ChargeAndWait(daily, 0, 0.6);
  QuotaDecision refused = AdmitNow(*store_, daily, true);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "cost_per_day");
  EXPECT_TRUE(refused.refusal->budget);
  EXPECT_EQ(refused.refusal->message, "cost_per_day ($1.0000) used up");

  Principal monthly = With({.cost_per_month = 0.5}, "monthly");
  ChargeAndWait(monthly, 10, 0.5);
  refused = AdmitNow(*store_, monthly, true);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "cost_per_month");
  EXPECT_GT(refused.refusal->retry_after, milliseconds(0));
  EXPECT_LE(refused.refusal->retry_after, milliseconds(31LL * 86400000));
  UsageReport r = UsageNow(*store_, monthly);
  EXPECT_NEAR(r.month.cost_usd, 0.5, 1e-9);
  EXPECT_NEAR(r.day.cost_usd, 0.5, 1e-9);
}

TEST_P(QuotaStoreContractTest, TokensPerMinuteAreChargedAfterTheFact) {
  Principal p = With({.tokens_per_minute = 100}, "alice");
  QuotaDecision first = AdmitNow(*store_, p, true);
  ASSERT_TRUE(first.admitted());
  ASSERT_TRUE(first.headers.tokens);
  EXPECT_EQ(first.headers.tokens->limit, 100);
  EXPECT_EQ(first.headers.tokens->remaining, 100);  // nothing charged yet
  ChargeAndWait(p, 150, 0);                         // one answer may go over: the bucket owes 50
  QuotaDecision refused = AdmitNow(*store_, p, true);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "tokens_per_minute");
  EXPECT_FALSE(refused.refusal->budget);
  // 51 tokens at 100 a minute: about 30.6 s.
  EXPECT_GT(refused.refusal->retry_after, milliseconds(25000));
  EXPECT_LE(refused.refusal->retry_after, milliseconds(30600));
  ASSERT_TRUE(refused.headers.tokens);
  EXPECT_EQ(refused.headers.tokens->remaining, 0);
  EXPECT_GT(refused.headers.tokens->reset, milliseconds(60000));  // full again after the debt
}

TEST_P(QuotaStoreContractTest, PrincipalsAreIsolated) {
  QuotaLimits limits{.requests_per_minute = 1, .requests_in_flight = 1, .tokens_per_day = 10};
  Principal alice = With(limits, "alice");
  Principal bob = With(limits, "bob");
  ASSERT_TRUE(AdmitNow(*store_, alice, true).admitted());
  ChargeAndWait(alice, 50, 1);
  EXPECT_FALSE(AdmitNow(*store_, alice, true).admitted());
  EXPECT_TRUE(AdmitNow(*store_, bob, true).admitted());
  UsageReport r = UsageNow(*store_, bob);
  EXPECT_EQ(r.day.requests, 1);
  EXPECT_EQ(r.day.tokens, 0);
  EXPECT_EQ(r.principal, "bob");
}

// Ids that would collide or break out of a naive key scheme each get a quota of their own.
TEST_P(QuotaStoreContractTest, HostilePrincipalIdsCannotCollide) {
  std::vector<std::string> ids = {"a",
                                  "A",
                                  "a:b",
                                  "a:b}:rate",
                                  "{a}",
                                  "a}",
                                  "}{",
                                  "*",
                                  "%41",
                                  "%",
                                  "",
                                  std::string("x\0y", 3),
                                  std::string("x\0z", 3),
                                  "\xff\xfe",
                                  "day:1",
                                  std::string(5000, 'p')};
  for (const auto& id : ids) {
    Principal p = With({.requests_per_minute = 1, .tokens_per_day = 5}, id);
    QuotaDecision d = AdmitNow(*store_, p, true);
    EXPECT_TRUE(d.admitted()) << "id of " << id.size()
                              << " bytes shares a quota: " << (d.refusal ? d.refusal->limit : "");
  }
  for (const auto& id : ids) {
    Principal p = With({.requests_per_minute = 1, .tokens_per_day = 5}, id);
    EXPECT_FALSE(AdmitNow(*store_, p, true).admitted());
    EXPECT_EQ(UsageNow(*store_, p).day.requests, 1) << "id of " << id.size() << " bytes";
  }
}

TEST_P(QuotaStoreContractTest, UsageReportsTheNumbers) {
  Principal p = With({.requests_per_minute = 10,
                      .requests_in_flight = 5,
                      .tokens_per_minute = 1000,
                      .tokens_per_day = 1000,
                      .cost_per_day = 2,
                      .cost_per_month = 10},
                     "alice");
  p.tier = "pro";
  auto before = system_clock::now();
  QuotaDecision a = AdmitNow(*store_, p, true);
  QuotaDecision b = AdmitNow(*store_, p, true);
  ASSERT_TRUE(a.admitted() && b.admitted());
  store_->Release(p, b.ticket);
  ChargeAndWait(p, 100, 0.5);
  UsageReport r;
  ASSERT_TRUE(Eventually([&] {
    r = UsageNow(*store_, p);
    const UsageEntry* e = Entry(r, "requests_in_flight");
    return e && e->used == 1;
  }));
  EXPECT_EQ(r.principal, "alice");
  EXPECT_EQ(r.tier, "pro");
  EXPECT_EQ(r.day.requests, 2);
  EXPECT_EQ(r.day.tokens, 100);
  EXPECT_NEAR(r.day.cost_usd, 0.5, 1e-9);
  EXPECT_EQ(r.month.requests, 2);
  EXPECT_GT(r.day_resets_at, before);
  EXPECT_LE(r.day_resets_at, before + std::chrono::hours(24));
  EXPECT_GE(r.month_resets_at, r.day_resets_at);
  std::vector<std::string> names;
  for (const auto& e : r.limits) names.push_back(e.limit);
  EXPECT_EQ(names, (std::vector<std::string>{"requests_per_minute", "requests_in_flight",
                                             "tokens_per_minute", "tokens_per_day", "cost_per_day",
                                             "cost_per_month"}));
  const UsageEntry* rpm = Entry(r, "requests_per_minute");
  EXPECT_EQ(rpm->window, "minute");
  EXPECT_EQ(rpm->limit_value, 10);
  EXPECT_NEAR(rpm->used, 2, 0.1);
  EXPECT_EQ(rpm->remaining, 8);
  ASSERT_TRUE(rpm->resets_at);
  EXPECT_GT(*rpm->resets_at, r.at);
  EXPECT_LE(*rpm->resets_at, r.at + std::chrono::seconds(12));
  const UsageEntry* tpm = Entry(r, "tokens_per_minute");
  EXPECT_NEAR(tpm->used, 100, 2);
  EXPECT_EQ(tpm->remaining, 900);
  const UsageEntry* cpd = Entry(r, "cost_per_day");
  EXPECT_NEAR(cpd->used, 0.5, 1e-9);
  EXPECT_NEAR(cpd->remaining, 1.5, 1e-9);
  EXPECT_EQ(cpd->window, "day");
  EXPECT_EQ(Entry(r, "cost_per_month")->window, "month");
  // The HTTP door's headers for an answer that admitted nothing come from this report.
  RateLimitHeaders h = HeadersFromUsage(r);
  ASSERT_TRUE(h.requests && h.tokens);
  EXPECT_EQ(h.requests->limit, 10);
  EXPECT_EQ(h.requests->remaining, 8);
  EXPECT_EQ(h.tokens->remaining, 900);
}

TEST_P(QuotaStoreContractTest, APrincipalWithoutLimitsIsStillCounted) {
  Principal p = With({}, "local");
  for (int i = 0; i < 3; ++i) {
    QuotaDecision d = AdmitNow(*store_, p, true);
    ASSERT_TRUE(d.admitted());
    EXPECT_FALSE(d.headers.requests);
    EXPECT_FALSE(d.headers.tokens);
    store_->Release(p, d.ticket);
  }
  ChargeAndWait(p, 7, 0.25);
  UsageReport r = UsageNow(*store_, p);
  EXPECT_TRUE(r.limits.empty());
  EXPECT_EQ(r.day.requests, 3);
  EXPECT_EQ(r.day.tokens, 7);
}

INSTANTIATE_TEST_SUITE_P(Stores, QuotaStoreContractTest,
                         ::testing::Values(Backend::kInProcess, Backend::kRedis),
                         [](const ::testing::TestParamInfo<Backend>& info) {
                           return info.param == Backend::kRedis ? "Redis" : "InProcess";
                         });

}  // namespace
}  // namespace anima::gateway
