#include "gateway/principals.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace anima::gateway {
namespace {

absl::Status ParseError(const std::string& text) {
  auto ring = KeyRing::Parse(nlohmann::json::parse(text));
  return ring.ok() ? absl::OkStatus() : ring.status();
}

std::string Hash(const std::string& key) { return KeyRing::Sha256Hex(key); }

TEST(KeyRingTest, TiersPrincipalsAndOverrides) {
  auto ring = KeyRing::Parse(nlohmann::json::parse(R"({
    "tiers": {"free": {"requests_per_minute": 60, "tokens_per_day": 1000, "cost_per_month": 2.5,
                       "jobs_in_flight": 1, "jobs_per_day": 10}},
    "principals": {
      "acme": {"tier": "free", "limits": {"tokens_per_day": 5000}},
      "ops": {"role": "admin"}},
    "keys": [{"principal": "acme", "sha256": ")" + Hash("a1") +
                                                   R"("},
             {"principal": "acme", "sha256": ")" + Hash("a2") +
                                                   R"("},
             {"principal": "ops", "sha256": ")" + Hash("o1") +
                                                   R"("}]})"));
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ((*ring)->principal_count(), 2u);
  EXPECT_EQ((*ring)->key_count(), 3u);
  auto acme = (*ring)->FindByKeyHash(KeyRing::Sha256("a2"));
  ASSERT_NE(acme, nullptr);
  EXPECT_EQ(acme->id, "acme");
  EXPECT_EQ(acme->limits.requests_per_minute, 60);  // from the tier
  EXPECT_EQ(acme->limits.tokens_per_day, 5000);     // its own
  EXPECT_DOUBLE_EQ(acme->limits.cost_per_month, 2.5);
  auto ops = (*ring)->FindById("ops");
  ASSERT_NE(ops, nullptr);
  EXPECT_EQ(ops->role, Role::kAdmin);
  EXPECT_EQ(ops->limits, QuotaLimits{});  // no tier, no limits
  common::Identity identity = IdentityFor(*acme);
  EXPECT_EQ(identity.principal, "acme");
  EXPECT_FALSE(identity.admin);
  EXPECT_EQ(identity.job_limits.in_flight, 1);
  EXPECT_EQ(identity.job_limits.per_day, 10);
}

TEST(KeyRingTest, ErrorsNameTheField) {
  struct Case {
    std::string text;
    std::string field;
  };
  std::string good_hash = Hash("k");
  for (const Case& c : std::vector<Case>{
           {R"({"tier": {}})", "tier"},
           {R"({"tiers": {"free": {"requests_per_minute": -1}}})",
            "tiers.free.requests_per_minute"},
           {R"({"tiers": {"free": {"rpm": 1}}})", "tiers.free.rpm"},
           {R"({"tiers": {"free": {"cost_per_day": "1"}}})", "tiers.free.cost_per_day"},
           {R"({"default_tier": "gold"})", "default_tier"},
           {R"({"principals": {"a b": {}}})", "principals.a b"},
           {R"({"principals": {"a": {"tier": "gold"}}})", "principals.a.tier"},
           {R"({"principals": {"a": {"role": "root"}}})", "principals.a.role"},
           {R"({"principals": {"a": {"limits": {"jobs_in_flight": 1.5}}}})",
            "principals.a.limits.jobs_in_flight"},
           {R"({"principals": {"a": {}}, "keys": [{"principal": "b", "sha256": ")" + good_hash +
                R"("}]})",
            "keys[0].principal"},
           {R"({"principals": {"a": {}}, "keys": [{"principal": "a", "sha256": "abc"}]})",
            "keys[0].sha256"},
           {R"({"principals": {"a": {}}, "keys": [{"principal": "a", "key": "plain"}]})",
            "keys[0]"},
           {R"({"principals": {"a": {}}, "keys": [{"principal": "a", "sha256": ")" + good_hash +
                R"("}, {"principal": "a", "sha256": ")" + good_hash + R"("}]})",
            "keys[1].sha256"},
           {R"({"keys": {}})", "keys"},
       }) {
    absl::Status s = ParseError(c.text);
    ASSERT_FALSE(s.ok()) << c.text;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << s.message() << " / " << c.field;
  }
  EXPECT_FALSE(KeyRing::Parse(nlohmann::json::array()).ok());
  EXPECT_FALSE(KeyRing::Load("/nonexistent/keys.json").ok());
}

TEST(KeyRingTest, AYamlKeysFileIsTheSameDocument) {
  std::string dir = ::testing::TempDir();
  std::string path = dir + "/anima-keys-test.yaml";
  std::ofstream(path) << "default_tier: free\n"
                         "tiers:\n"
                         "  free: {requests_per_minute: 60, cost_per_month: 2.5}\n"
                         "principals:\n"
                         "  acme: {role: admin, limits: {tokens_per_day: 1000}}\n"
                         "  \"bob\": {}\n"
                         "keys:\n"
                         "  - principal: acme\n"
                         "    sha256: \""
                      << Hash("a1")
                      << "\"\n"
                         "    name: laptop # a comment\n";
  auto ring = KeyRing::Load(path);
  ASSERT_TRUE(ring.ok()) << ring.status();
  auto acme = (*ring)->FindByKeyHash(KeyRing::Sha256("a1"));
  ASSERT_NE(acme, nullptr);
  EXPECT_EQ(acme->role, Role::kAdmin);
  EXPECT_EQ(acme->limits.requests_per_minute, 60);
  EXPECT_DOUBLE_EQ(acme->limits.cost_per_month, 2.5);
  EXPECT_EQ(acme->limits.tokens_per_day, 1000);
  EXPECT_NE((*ring)->FindById("bob"), nullptr);

  // Errors name the field, as for JSON; a quoted number is a string, not a number.
  std::ofstream(path) << "tiers:\n  free: {requests_per_minute: \"60\"}\n";
  auto quoted = KeyRing::Load(path);
  ASSERT_FALSE(quoted.ok());
  EXPECT_NE(quoted.status().message().find("tiers.free.requests_per_minute"), std::string::npos)
      << quoted.status();
  std::ofstream(path) << "tiers: {free: [}\n";
  auto broken = KeyRing::Load(path);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("line 1"), std::string::npos) << broken.status();
  EXPECT_FALSE(KeyRing::Load(dir + "/missing.yml").ok());
  std::remove(path.c_str());
}

TEST(KeyRingTest, TenThousandPrincipals) {
  nlohmann::json doc;
  doc["tiers"]["t"]["requests_per_second"] = 5;
  for (int i = 0; i < 10000; ++i) {
    std::string id = "p" + std::to_string(i);
    doc["principals"][id]["tier"] = "t";
    doc["keys"].push_back({{"principal", id}, {"sha256", Hash("key-" + std::to_string(i))}});
  }
  auto ring = KeyRing::Parse(doc);
  ASSERT_TRUE(ring.ok());
  EXPECT_EQ((*ring)->principal_count(), 10000u);
  auto p = (*ring)->FindByKeyHash(KeyRing::Sha256("key-9876"));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->id, "p9876");
}

}  // namespace
}  // namespace anima::gateway
