#include "gateway/quota.h"

#include <chrono>

#include "gateway/access_policy.h"
#include "gateway/openai_api.h"
#include "gtest/gtest.h"

namespace anima::gateway {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

// 2026-12-02T23:59:00Z
const system_clock::time_point kLateInDay = system_clock::from_time_t(1796255940);

class QuotaTest : public ::testing::Test {
 protected:
  QuotaTracker tracker_{[this] { return steady_; }, [this] { return wall_; }};
  steady_clock::time_point steady_ = steady_clock::time_point(seconds(1000));
  system_clock::time_point wall_ = kLateInDay;
  void Advance(milliseconds d) {
    steady_ += d;
    wall_ += d;
  }
  static Principal With(QuotaLimits limits, std::string id = "p") {
    Principal p;
    p.id = std::move(id);
    p.tier = "t";
    p.limits = limits;
    return p;
  }
};

TEST_F(QuotaTest, RequestsPerSecondAndPerMinute) {
  Principal p = With({.requests_per_second = 2, .requests_per_minute = 3});
  EXPECT_FALSE(tracker_.Admit(p, false));
  EXPECT_FALSE(tracker_.Admit(p, false));
  auto refused = tracker_.Admit(p, false);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "requests_per_second");
  EXPECT_FALSE(refused->budget);
  EXPECT_EQ(refused->retry_after, milliseconds(500));
  Advance(milliseconds(500));
  EXPECT_FALSE(tracker_.Admit(p, false));  // third of the minute
  Advance(seconds(1));
  refused = tracker_.Admit(p, false);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "requests_per_minute");
  // A refusal takes no token: the per-second bucket is still full after it.
  EXPECT_EQ(tracker_.Headers(p).requests->remaining, 0);
  Advance(seconds(20));  // one request's worth of the minute refills
  EXPECT_FALSE(tracker_.Admit(p, false));
}

TEST_F(QuotaTest, InFlightIsHeldUntilRelease) {
  Principal p = With({.requests_in_flight = 1});
  EXPECT_FALSE(tracker_.Admit(p, true));
  auto refused = tracker_.Admit(p, false);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "requests_in_flight");
  tracker_.Release(p);
  EXPECT_FALSE(tracker_.Admit(p, false));
}

TEST_F(QuotaTest, PrincipalsAreIndependent) {
  QuotaLimits l{.requests_per_minute = 1};
  EXPECT_FALSE(tracker_.Admit(With(l, "a"), false));
  EXPECT_TRUE(tracker_.Admit(With(l, "a"), false));
  EXPECT_FALSE(tracker_.Admit(With(l, "b"), false));
}

TEST_F(QuotaTest, TokenAndCostBudgetsChargedAfterTheFact) {
  Principal p = With({.tokens_per_day = 100, .cost_per_day = 1.0});
  EXPECT_FALSE(tracker_.Admit(p, true));
  tracker_.Release(p);
  tracker_.Charge(p, 150, 0.25);  // one answer may go over; the next request is refused
  auto refused = tracker_.Admit(p, true);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "tokens_per_day");
  EXPECT_TRUE(refused->budget);
  EXPECT_EQ(refused->retry_after, milliseconds(60000));  // until midnight UTC
  // Budgets do not stop requests that spend nothing (a job watch, a state query).
  EXPECT_FALSE(tracker_.Admit(p, false));
  tracker_.Release(p);
  Advance(seconds(61));  // a new day
  EXPECT_FALSE(tracker_.Admit(p, true));
  tracker_.Release(p);
  tracker_.Charge(p, 10, 1.5);
  refused = tracker_.Admit(p, true);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "cost_per_day");
}

TEST_F(QuotaTest, CostPerMonthAndTokensPerMinute) {
  Principal p = With({.tokens_per_minute = 600, .cost_per_month = 5});
  tracker_.Charge(p, 900, 0);
  auto refused = tracker_.Admit(p, true);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "tokens_per_minute");
  EXPECT_EQ(refused->retry_after, milliseconds(30100));  // 301 tokens at 10 a second
  Advance(seconds(31));
  EXPECT_FALSE(tracker_.Admit(p, true));
  tracker_.Charge(p, 0, 5.0);
  refused = tracker_.Admit(p, true);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->limit, "cost_per_month");
  EXPECT_GT(refused->retry_after, milliseconds(0));
}

TEST_F(QuotaTest, UsageReportsEveryConfiguredLimit) {
  Principal p = With({.requests_per_minute = 10,
                      .requests_in_flight = 4,
                      .tokens_per_day = 1000,
                      .cost_per_month = 3});
  EXPECT_FALSE(tracker_.Admit(p, true));
  tracker_.Charge(p, 120, 0.5);
  UsageReport r = tracker_.Usage(p);
  EXPECT_EQ(r.principal, "p");
  EXPECT_EQ(r.tier, "t");
  ASSERT_EQ(r.limits.size(), 4u);
  EXPECT_EQ(r.limits[0].limit, "requests_per_minute");
  EXPECT_DOUBLE_EQ(r.limits[0].used, 1);
  EXPECT_DOUBLE_EQ(r.limits[0].remaining, 9);
  EXPECT_EQ(r.limits[1].limit, "requests_in_flight");
  EXPECT_DOUBLE_EQ(r.limits[1].used, 1);
  EXPECT_FALSE(r.limits[1].resets_at.has_value());
  EXPECT_EQ(r.limits[2].limit, "tokens_per_day");
  EXPECT_DOUBLE_EQ(r.limits[2].remaining, 880);
  EXPECT_EQ(r.limits[2].resets_at, system_clock::from_time_t(1796256000));
  EXPECT_EQ(r.limits[3].limit, "cost_per_month");
  EXPECT_DOUBLE_EQ(r.limits[3].used, 0.5);
  EXPECT_EQ(r.day.requests, 1);
  EXPECT_EQ(r.month.tokens, 120);
  EXPECT_EQ(r.month_resets_at, system_clock::from_time_t(1798761600));  // 2027-01-01
}

TEST_F(QuotaTest, HeadersAsOpenAiSendsThem) {
  Principal none = With({});
  EXPECT_FALSE(tracker_.Headers(none).requests.has_value());
  Principal p = With({.requests_per_minute = 60, .tokens_per_minute = 1000});
  EXPECT_FALSE(tracker_.Admit(p, true));
  tracker_.Charge(p, 100, 0);
  RateLimitHeaders h = tracker_.Headers(p);
  ASSERT_TRUE(h.requests && h.tokens);
  EXPECT_EQ(h.requests->limit, 60);
  EXPECT_EQ(h.requests->remaining, 59);
  EXPECT_EQ(h.requests->reset, milliseconds(1000));
  EXPECT_EQ(h.tokens->remaining, 900);
  EXPECT_EQ(h.tokens->reset, milliseconds(6000));
  EXPECT_EQ(OpenAiApi::ResetDuration(milliseconds(20)), "20ms");
  EXPECT_EQ(OpenAiApi::ResetDuration(milliseconds(1500)), "1.5s");
  EXPECT_EQ(OpenAiApi::ResetDuration(milliseconds(6000)), "6s");
  EXPECT_EQ(OpenAiApi::ResetDuration(milliseconds(360000)), "6m0s");
}

TEST_F(QuotaTest, CalendarWindows) {
  EXPECT_EQ(QuotaTracker::NextDay(kLateInDay), system_clock::from_time_t(1796256000));
  EXPECT_EQ(QuotaTracker::NextMonth(system_clock::from_time_t(1796255940)),
            system_clock::from_time_t(1798761600));
  // 2027-01-15 -> 2027-02-01.
  EXPECT_EQ(QuotaTracker::NextMonth(system_clock::from_time_t(1800000000)),
            system_clock::from_time_t(1801440000));
}

TEST(AccessPolicyTest, OriginsAndFailedAuthThrottle) {
  auto keys = KeyRing::Parse(
      nlohmann::json::parse(R"({"principals": {"a": {}}, "keys": [{"principal": "a", "sha256": ")" +
                            KeyRing::Sha256Hex("good") + R"("}]})"));
  ASSERT_TRUE(keys.ok());
  auto auth = std::make_shared<Authenticator>(AuthOptions{}, *keys, "");
  steady_clock::time_point now{seconds(5)};
  AccessPolicy::Options options;
  options.allowed_origins = {"https://app.example"};
  options.auth_failure_burst = 3;
  options.auth_failures_per_second = 1;
  AccessPolicy policy(auth, options, [&] { return now; });

  AccessRequest r{.host = "gw:3002", .authorization = "Bearer good", .client_address = "10.0.0.1"};
  EXPECT_TRUE(policy.Check(r).ok());
  r.origin = "http://gw:3002";  // same origin
  EXPECT_TRUE(policy.Check(r).ok());
  r.origin = "https://app.example";
  EXPECT_TRUE(policy.Check(r).ok());
  r.origin = "https://evil.example";
  AccessDecision d = policy.Check(r);
  EXPECT_FALSE(d.ok());
  EXPECT_EQ(d.http_status, 403);
  r.origin = "null";
  EXPECT_EQ(policy.Check(r).http_status, 403);
  r.origin = "";

  r.authorization = "Bearer wrong";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(policy.Check(r).http_status, 401);
  d = policy.Check(r);
  EXPECT_EQ(d.http_status, 429);  // throttled: not even checked
  EXPECT_EQ(d.retry_after, milliseconds(1000));
  r.authorization = "Bearer good";
  EXPECT_EQ(policy.Check(r).http_status, 429);  // the address, not the token, is throttled
  r.client_address = "10.0.0.2";
  EXPECT_TRUE(policy.Check(r).ok());
  now += seconds(1);
  r.client_address = "10.0.0.1";
  EXPECT_TRUE(policy.Check(r).ok());

  // Subprotocol tokens; the query string only on upgrades.
  AccessRequest ws{.protocols = "anima.v1, anima.bearer.good", .websocket = true};
  d = policy.Check(ws);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d.via_subprotocol);
  EXPECT_EQ(d.principal->id, "a");
  EXPECT_TRUE(policy.Check(AccessRequest{.target = "/?token=good", .websocket = true}).ok());
  EXPECT_EQ(policy.Check(AccessRequest{.target = "/v1/models?token=good"}).http_status, 401);

  // Behind Google's load balancer: "<client>, <load balancer>", whatever the client prepended.
  AccessPolicy::Options proxied;
  proxied.forwarded_hops = 2;
  AccessPolicy behind(auth, proxied);
  EXPECT_EQ(behind.ClientAddress("10.0.0.9", "1.2.3.4, 130.211.0.1"), "1.2.3.4");
  EXPECT_EQ(behind.ClientAddress("10.0.0.9", "6.6.6.6, 1.2.3.4, 130.211.0.1"), "1.2.3.4");
  EXPECT_EQ(behind.ClientAddress("10.0.0.9", "130.211.0.1"), "10.0.0.9");
  EXPECT_EQ(behind.ClientAddress("10.0.0.9", ""), "10.0.0.9");
  EXPECT_EQ(policy.ClientAddress("10.0.0.9", "1.2.3.4, 5.6.7.8"), "10.0.0.9");  // hops 0

  AccessPolicy open(nullptr, {});
  d = open.Check(AccessRequest{});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.principal->id, "local");
}

}  // namespace
}  // namespace anima::gateway
