// What only the Redis store does: one quota for several gateways, the local fallback while Redis
// is down or hangs, and leases that outlive neither their gateway nor their request. Against a
// real redis-server.
#include "gateway/redis_quota_store.h"

#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "tests/integration/harness/harness.h"
#include "tests/support/redis_server.h"

namespace anima::gateway {
namespace {

using anima::testing::Eventually;
using std::chrono::milliseconds;
using store::RedisReply;

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

Principal With(QuotaLimits limits, std::string id) {
  Principal p;
  p.id = std::move(id);
  p.tier = "t";
  p.limits = limits;
  return p;
}

// The value of a metric family's series with `labels`, 0 when absent.
double Metric(prometheus::Registry& registry, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  for (const auto& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const auto& m : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& l : m.label) have[l.name] = l.value;
      if (have == labels) {
        return family.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      }
    }
  }
  return 0;
}

class RedisQuotaStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    redis_ = anima::testing::RedisServer::Start();
    ASSERT_NE(redis_, nullptr);
    admin_ = Client(milliseconds(2000));
    ASSERT_TRUE(Eventually([&] { return Call({"PING"}).ok(); }));
  }

  std::unique_ptr<store::RedisClient> Client(milliseconds call_timeout) {
    store::RedisOptions options;
    options.url = redis_->url();
    options.call_timeout = call_timeout;
    options.backoff_min = milliseconds(20);
    options.backoff_max = milliseconds(200);
    auto client = store::RedisClient::Create(options, nullptr);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(*client);
  }

  // A gateway's store: its own client, its own metrics.
  std::unique_ptr<RedisQuotaStore> Gateway(RedisQuotaOptions options = {},
                                           prometheus::Registry* registry = nullptr,
                                           milliseconds call_timeout = milliseconds(2000)) {
    auto client = Client(call_timeout);
    store::RedisClient* raw = client.get();
    EXPECT_TRUE(Eventually([&] {
      auto promise = std::make_shared<std::promise<bool>>();
      raw->Command("test", {"PING"}, [promise](auto r) { promise->set_value(r.ok()); });
      return promise->get_future().get();
    }));
    return std::make_unique<RedisQuotaStore>(std::move(client), options, registry);
  }

  absl::StatusOr<RedisReply> Call(std::vector<std::string> argv) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<RedisReply>>>();
    admin_->Command("test", std::move(argv),
                    [promise](absl::StatusOr<RedisReply> r) { promise->set_value(std::move(r)); });
    return promise->get_future().get();
  }

  std::unique_ptr<anima::testing::RedisServer> redis_;
  std::unique_ptr<store::RedisClient> admin_;
};

TEST_F(RedisQuotaStoreTest, TwoGatewaysShareOneLimit) {
  auto a = Gateway();
  auto b = Gateway();
  Principal p = With({.requests_per_minute = 4}, "carol");
  int admitted = 0;
  for (int i = 0; i < 8; ++i) admitted += AdmitNow(i % 2 ? *b : *a, p).admitted();
  EXPECT_EQ(admitted, 4);

  Principal q = With({.requests_in_flight = 1}, "dave");
  QuotaDecision held = AdmitNow(*a, q);
  ASSERT_TRUE(held.admitted());
  QuotaDecision refused = AdmitNow(*b, q);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "requests_in_flight");
  a->Release(q, held.ticket);
  EXPECT_TRUE(Eventually([&] { return AdmitNow(*b, q).admitted(); }));

  // Budgets too: what one gateway charged, the other refuses.
  Principal r = With({.tokens_per_day = 10}, "erin");
  a->Charge(r, 20, 0);
  EXPECT_TRUE(Eventually([&] { return !AdmitNow(*b, r, true).admitted(); }));
}

TEST_F(RedisQuotaStoreTest, RedisDownFallsBackToTheLocalLimitThenSharesAgain) {
  prometheus::Registry registry;
  RedisQuotaOptions options;
  options.retry_interval = milliseconds(50);
  auto a = Gateway(options, &registry);
  auto b = Gateway(options);
  EXPECT_EQ(Metric(registry, "anima_gateway_quota_backend_up"), 1);
  ASSERT_TRUE(AdmitNow(*a, With({}, "warm")).admitted());

  redis_->Stop();
  Principal p = With({.requests_per_minute = 2}, "carol");
  // Chat stays available, within the principal's limit on this gateway: not unlimited.
  EXPECT_TRUE(AdmitNow(*a, p).admitted());
  EXPECT_TRUE(AdmitNow(*a, p).admitted());
  QuotaDecision refused = AdmitNow(*a, p);
  ASSERT_FALSE(refused.admitted());
  EXPECT_EQ(refused.refusal->limit, "requests_per_minute");
  EXPECT_FALSE(a->backend_up());
  EXPECT_EQ(Metric(registry, "anima_gateway_quota_backend_up"), 0);
  EXPECT_GE(Metric(registry, "anima_gateway_quota_fallback_total", {{"reason", "unavailable"}}), 3);
  // Charges and usage go to the fallback too.
  a->Charge(p, 5, 0.01);
  EXPECT_TRUE(Eventually([&] {
    auto promise = std::make_shared<std::promise<UsageReport>>();
    a->Usage(p, [promise](UsageReport r) { promise->set_value(std::move(r)); });
    UsageReport r = promise->get_future().get();
    return r.day.requests == 2 && r.day.tokens == 5;
  }));

  ASSERT_TRUE(redis_->Restart());
  ASSERT_TRUE(
      Eventually([&] { return AdmitNow(*a, With({}, "probe")).admitted() && a->backend_up(); }));
  ASSERT_TRUE(
      Eventually([&] { return AdmitNow(*b, With({}, "probe")).admitted() && b->backend_up(); }));
  EXPECT_EQ(Metric(registry, "anima_gateway_quota_backend_up"), 1);
  Principal q = With({.requests_per_minute = 1}, "after");
  EXPECT_TRUE(AdmitNow(*a, q).admitted());
  EXPECT_FALSE(AdmitNow(*b, q).admitted()) << "the gateways do not share the limit again";
}

TEST_F(RedisQuotaStoreTest, ARedisThatHangsTimesOutToTheFallback) {
  prometheus::Registry registry;
  RedisQuotaOptions options;
  options.retry_interval = milliseconds(50);
  auto a = Gateway(options, &registry, milliseconds(100));
  ASSERT_TRUE(AdmitNow(*a, With({}, "warm")).admitted());

  redis_->Pause();
  Principal p = With({.requests_per_minute = 1}, "carol");
  EXPECT_TRUE(AdmitNow(*a, p).admitted());
  EXPECT_FALSE(AdmitNow(*a, p).admitted());  // the local limit holds
  EXPECT_GE(Metric(registry, "anima_gateway_quota_fallback_total", {{"reason", "timeout"}}), 1);
  EXPECT_FALSE(a->backend_up());

  redis_->Resume();
  EXPECT_TRUE(
      Eventually([&] { return AdmitNow(*a, With({}, "probe")).admitted() && a->backend_up(); }));
}

TEST_F(RedisQuotaStoreTest, TheSlotsOfAGatewayThatDiedExpire) {
  RedisQuotaOptions options;
  options.lease_ttl = milliseconds(2000);
  Principal p = With({.requests_in_flight = 1}, "carol");
  auto dying = Gateway(options);
  ASSERT_TRUE(AdmitNow(*dying, p).admitted());
  dying.reset();  // gone without releasing, as after kill -9

  auto survivor = Gateway(options);
  EXPECT_FALSE(AdmitNow(*survivor, p).admitted());
  EXPECT_TRUE(Eventually([&] { return AdmitNow(*survivor, p).admitted(); }));
}

TEST_F(RedisQuotaStoreTest, ALiveGatewayRenewsItsSlots) {
  RedisQuotaOptions options;
  options.lease_ttl = milliseconds(600);
  auto a = Gateway(options);
  Principal p = With({.requests_in_flight = 1}, "carol");
  ASSERT_TRUE(AdmitNow(*a, p).admitted());
  std::string key = RedisQuotaStore::KeyPrefix("carol") + "inflight";
  auto expiry = [&] {
    auto r = Call({"ZRANGE", key, "0", "-1", "WITHSCORES"});
    if (!r.ok() || r->elements.size() != 2) return -1.0;
    return std::stod(r->elements[1].str);
  };
  double first = expiry();
  ASSERT_GT(first, 0);
  EXPECT_TRUE(Eventually([&] { return expiry() > first + 100; }));
}

TEST_F(RedisQuotaStoreTest, APrincipalsKeysShareOneHashSlotAndExpire) {
  auto a = Gateway();
  std::string id = "we{ird}:id*";
  Principal p = With({.requests_per_second = 5,
                      .requests_per_minute = 5,
                      .requests_in_flight = 5,
                      .tokens_per_minute = 100,
                      .tokens_per_day = 100,
                      .cost_per_day = 1,
                      .cost_per_month = 1},
                     id);
  ASSERT_TRUE(AdmitNow(*a, p, true).admitted());
  a->Charge(p, 10, 0.1);
  std::string prefix = RedisQuotaStore::KeyPrefix(id);
  EXPECT_EQ(prefix, "anima:quota:{we%7Bird%7D%3Aid%2A}:");
  absl::StatusOr<RedisReply> keys;
  ASSERT_TRUE(Eventually([&] {
    keys = Call({"KEYS", "anima:quota:*"});
    return keys.ok() && keys->elements.size() == 4;  // rate, inflight, day, month
  }));
  for (const auto& k : keys->elements) {
    EXPECT_EQ(k.str.rfind(prefix, 0), 0u) << k.str;
    // Redis Cluster hashes what is between the first '{' and the next '}'.
    size_t open = k.str.find('{');
    EXPECT_EQ(k.str.substr(open + 1, k.str.find('}', open) - open - 1),
              RedisQuotaStore::EscapePrincipal(id));
    auto ttl = Call({"PTTL", k.str});
    ASSERT_TRUE(ttl.ok());
    EXPECT_GT(ttl->integer, 0) << k.str << " would live forever";
  }
}

TEST(RedisQuotaKeysTest, EscapingIsInjectiveAndStaysInsideTheTag) {
  EXPECT_EQ(RedisQuotaStore::EscapePrincipal("alice@example.com"), "alice@example.com");
  EXPECT_EQ(RedisQuotaStore::EscapePrincipal(""), "%");
  EXPECT_EQ(RedisQuotaStore::EscapePrincipal("%"), "%25");
  EXPECT_EQ(RedisQuotaStore::EscapePrincipal(std::string("a\0b", 3)), "a%00b");
  EXPECT_EQ(RedisQuotaStore::EscapePrincipal("a:b}{"), "a%3Ab%7D%7B");
  EXPECT_NE(RedisQuotaStore::EscapePrincipal("A"), RedisQuotaStore::EscapePrincipal("%41"));
}

}  // namespace
}  // namespace anima::gateway
