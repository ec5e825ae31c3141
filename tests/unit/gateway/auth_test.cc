#include "gateway/auth.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace anima::gateway {
namespace {

using std::chrono::seconds;
using std::chrono::system_clock;

constexpr char kSecret[] = "0123456789abcdef-secret";

int64_t Epoch(system_clock::time_point t) {
  return std::chrono::duration_cast<seconds>(t.time_since_epoch()).count();
}

std::shared_ptr<const KeyRing> Keys() {
  auto keys = KeyRing::Parse(nlohmann::json::parse(R"({
    "default_tier": "free",
    "tiers": {"free": {"requests_per_minute": 10}, "pro": {"requests_per_minute": 1000}},
    "principals": {"acme": {"tier": "pro", "role": "admin"}, "bob": {}},
    "keys": [{"principal": "acme", "sha256": ")" + KeyRing::Sha256Hex("key-acme") +
                                                   R"("},
             {"principal": "bob", "sha256": ")" + KeyRing::Sha256Hex("key-bob") +
                                                   R"(", "name": "laptop"}]
  })"));
  EXPECT_TRUE(keys.ok()) << keys.status();
  return *keys;
}

class AuthTest : public ::testing::Test {
 protected:
  AuthTest() : auth_(Options(), Keys(), kSecret) {}
  static AuthOptions Options() {
    AuthOptions o;
    o.jwt_max_lifetime = std::chrono::hours(1);
    return o;
  }
  Authenticator auth_;
  system_clock::time_point now_ = system_clock::now();
  std::string Jwt(const std::string& claims) {
    return Authenticator::SignHs256("{" + claims + "}", kSecret);
  }
  std::string Exp(int64_t delta) { return "\"exp\":" + std::to_string(Epoch(now_) + delta); }
};

TEST_F(AuthTest, KeysNameTheirPrincipalAndNeverExpire) {
  auto grant = auth_.Check("key-acme", now_);
  ASSERT_TRUE(grant.ok());
  EXPECT_EQ(grant->principal->id, "acme");
  EXPECT_EQ(grant->principal->role, Role::kAdmin);
  EXPECT_EQ(grant->principal->limits.requests_per_minute, 1000);
  EXPECT_FALSE(grant->expires.has_value());
  EXPECT_EQ(grant->key_hash, KeyRing::Sha256("key-acme"));
  auto bob = auth_.Check("key-bob", now_);
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->principal->id, "bob");
  EXPECT_EQ(bob->principal->tier, "free");  // the default tier
  EXPECT_EQ(bob->principal->role, Role::kUser);
  EXPECT_FALSE(auth_.Check("key-carol", now_).ok());
  EXPECT_FALSE(auth_.Check("key-acm", now_).ok());
  EXPECT_FALSE(auth_.Check("", now_).ok());
  // The hash is not a key.
  EXPECT_FALSE(auth_.Check(KeyRing::Sha256Hex("key-acme"), now_).ok());
}

TEST_F(AuthTest, JwtSubIsThePrincipalWithTierAndRoleClaims) {
  auto grant = auth_.Check(Jwt(R"("sub":"carol",)" + Exp(60)), now_);
  ASSERT_TRUE(grant.ok()) << grant.status();
  EXPECT_EQ(grant->principal->id, "carol");
  EXPECT_EQ(grant->principal->tier, "free");
  EXPECT_EQ(grant->principal->limits.requests_per_minute, 10);
  ASSERT_TRUE(grant->expires.has_value());
  EXPECT_EQ(Epoch(*grant->expires), Epoch(now_) + 60);
  EXPECT_TRUE(grant->key_hash.empty());

  auto pro = auth_.Check(Jwt(R"("sub":"dave","tier":"pro","role":"admin",)" + Exp(60)), now_);
  ASSERT_TRUE(pro.ok());
  EXPECT_EQ(pro->principal->limits.requests_per_minute, 1000);
  EXPECT_EQ(pro->principal->role, Role::kAdmin);
  // A principal of the keys file keeps its configured tier and role, whatever the token says.
  auto acme = auth_.Check(Jwt(R"("sub":"bob","role":"admin","tier":"pro",)" + Exp(60)), now_);
  ASSERT_TRUE(acme.ok());
  EXPECT_EQ(acme->principal->role, Role::kUser);
  EXPECT_EQ(acme->principal->tier, "free");
  // An unknown tier is refused, not given the defaults.
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"x","tier":"gold",)" + Exp(60)), now_).ok());
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"x","role":"root",)" + Exp(60)), now_).ok());
}

TEST_F(AuthTest, HostileJwts) {
  // No sub, a sub that is not a principal id.
  EXPECT_FALSE(auth_.Check(Jwt(Exp(60)), now_).ok());
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"a b",)" + Exp(60)), now_).ok());
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":7,)" + Exp(60)), now_).ok());
  // Expired, no exp, exp not a number, not yet valid.
  EXPECT_NE(auth_.Check(Jwt(R"("sub":"u",)" + Exp(-1)), now_).status().message().find("expired"),
            std::string::npos);
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"u")"), now_).ok());
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"u","exp":"soon")"), now_).ok());
  EXPECT_FALSE(
      auth_
          .Check(Jwt(R"("sub":"u",)" + Exp(60) + ",\"nbf\":" + std::to_string(Epoch(now_) + 30)),
                 now_)
          .ok());
  // A huge exp: over the maximum lifetime (and over any sane date).
  EXPECT_NE(
      auth_.Check(Jwt(R"("sub":"u",)" + Exp(2 * 3600)), now_).status().message().find("longer"),
      std::string::npos);
  EXPECT_FALSE(auth_.Check(Jwt(R"("sub":"u","exp":1e300)"), now_).ok());
  // iat long ago with exp soon is still over the lifetime.
  EXPECT_FALSE(
      auth_
          .Check(Jwt(R"("sub":"u",)" + Exp(60) + ",\"iat\":" + std::to_string(Epoch(now_) - 7200)),
                 now_)
          .ok());

  std::string good = Jwt(R"("sub":"u",)" + Exp(60));
  ASSERT_TRUE(auth_.Check(good, now_).ok());
  auto dot1 = good.find('.'), dot2 = good.rfind('.');
  std::string body = good.substr(dot1 + 1, dot2 - dot1 - 1);
  // Another secret.
  EXPECT_FALSE(
      auth_
          .Check(Authenticator::SignHs256(R"({"sub":"u",)" + Exp(60) + "}", "another-secret-of-16"),
                 now_)
          .ok());
  // A changed payload with the old signature.
  std::string payload = absl::WebSafeBase64Escape(R"({"sub":"admin","exp":99999999999})");
  EXPECT_FALSE(auth_.Check(good.substr(0, dot1 + 1) + payload + good.substr(dot2), now_).ok());
  // alg none, with and without a signature; another algorithm with the same signature.
  std::string none = absl::WebSafeBase64Escape(R"({"alg":"none"})") + "." + body;
  EXPECT_FALSE(auth_.Check(none + ".", now_).ok());
  EXPECT_FALSE(auth_.Check(none + good.substr(dot2), now_).ok());
  std::string rs = absl::WebSafeBase64Escape(R"({"alg":"RS256","typ":"JWT"})") + "." + body;
  EXPECT_FALSE(auth_.Check(rs + good.substr(dot2), now_).ok());
  std::string hs384 = absl::WebSafeBase64Escape(R"({"alg":"HS384"})") + "." + body;
  EXPECT_FALSE(auth_.Check(hs384 + good.substr(dot2), now_).ok());
  for (const std::string& bad :
       std::vector<std::string>{"a.b.c", "..", "....", "x", "a.b", "!!.@@.##",
                                std::string(100000, 'a'), std::string("\0.\0.\0", 5)}) {
    EXPECT_FALSE(auth_.Check(bad, now_).ok()) << bad.substr(0, 20);
  }
  // Without a secret, no JWT is accepted.
  Authenticator keys_only(Options(), Keys(), "");
  EXPECT_FALSE(keys_only.Check(good, now_).ok());
}

TEST_F(AuthTest, AudienceAndIssuerWhenConfigured) {
  AuthOptions o = Options();
  o.jwt_audience = "anima";
  o.jwt_issuer = "https://issuer.example";
  Authenticator strict(o, Keys(), kSecret);
  std::string right = R"("sub":"u","iss":"https://issuer.example",)" + Exp(60);
  EXPECT_TRUE(strict.Check(Jwt(right + R"(,"aud":"anima")"), now_).ok());
  EXPECT_TRUE(strict.Check(Jwt(right + R"(,"aud":["other","anima"])"), now_).ok());
  EXPECT_FALSE(strict.Check(Jwt(right + R"(,"aud":"other")"), now_).ok());
  EXPECT_FALSE(strict.Check(Jwt(right), now_).ok());  // no aud
  EXPECT_FALSE(
      strict.Check(Jwt(R"("sub":"u","iss":"https://evil.example","aud":"anima",)" + Exp(60)), now_)
          .ok());
  EXPECT_FALSE(strict.Check(Jwt(R"("sub":"u","aud":"anima",)" + Exp(60)), now_).ok());
}

TEST(TokenOfTest, HeaderThenSubprotocolThenQuery) {
  EXPECT_EQ(Authenticator::TokenOf("Bearer abc", "", "/?token=q", true).token, "abc");
  EXPECT_EQ(Authenticator::TokenOf("bearer  abc ", "", "/", true).token, "abc");
  auto sub = Authenticator::TokenOf("", "anima.v1, anima.bearer.s3cr3t", "/?token=q", true);
  EXPECT_EQ(sub.token, "s3cr3t");
  EXPECT_EQ(sub.source, TokenSource::kSubprotocol);
  auto query = Authenticator::TokenOf("", "", "/ws?x=1&token=a%2Bb%3D", true);
  EXPECT_EQ(query.token, "a+b=");
  EXPECT_EQ(query.source, TokenSource::kQuery);
  // The HTTP API takes no token from the URL.
  EXPECT_EQ(Authenticator::TokenOf("", "", "/v1/models?token=a", false).token, "");
  EXPECT_EQ(Authenticator::TokenOf("Basic Zm9v", "", "/", true).token, "");
  EXPECT_EQ(Authenticator::TokenOf("", "", "/?tokens=x", true).token, "");
  EXPECT_EQ(Authenticator::TokenOf("", "", "/?token=%zz%4", true).token, "%zz%4");
}

TEST(TokenOfTest, TargetsAreRedactedForLogs) {
  EXPECT_EQ(Authenticator::RedactTarget("/ws?x=1&token=secret&y=2"), "/ws?x=1&token=***&y=2");
  EXPECT_EQ(Authenticator::RedactTarget("/?token=secret"), "/?token=***");
  EXPECT_EQ(Authenticator::RedactTarget("/ws"), "/ws");
}

class AuthFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/anima-auth.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  static std::string KeysJson(const std::string& key, const std::string& principal) {
    return R"({"principals": {")" + principal + R"(": {}}, "keys": [{"principal": ")" + principal +
           R"(", "sha256": ")" + KeyRing::Sha256Hex(key) + R"("}]})";
  }
  std::string dir_;
};

TEST_F(AuthFilesTest, LoadReloadAndErrors) {
  AuthOptions o;
  o.keys_file = Write("keys.json", KeysJson("k1", "alice"));
  o.jwt_secret_file = Write("secret", "a-secret-of-more-than-16-bytes\n");
  auto auth = Authenticator::Load(o);
  ASSERT_TRUE(auth.ok()) << auth.status();
  ASSERT_NE(*auth, nullptr);
  EXPECT_EQ((*auth)->Check("k1").value().principal->id, "alice");
  std::string jwt = Authenticator::SignHs256(
      R"({"sub":"z","exp":)" + std::to_string(Epoch(system_clock::now()) + 60) + "}",
      "a-secret-of-more-than-16-bytes");
  EXPECT_TRUE((*auth)->Check(jwt).ok());

  // A reload swaps the keys; a broken file leaves them as they were.
  uint64_t generation = (*auth)->generation();
  Write("keys.json", KeysJson("k2", "alice"));
  ASSERT_TRUE((*auth)->Reload().ok());
  EXPECT_GT((*auth)->generation(), generation);
  EXPECT_FALSE((*auth)->Check("k1").ok());
  EXPECT_TRUE((*auth)->Check("k2").ok());
  Write("keys.json", R"({"keys": [{"principal": "nobody", "sha256": "00"}]})");
  EXPECT_FALSE((*auth)->Reload().ok());
  EXPECT_TRUE((*auth)->Check("k2").ok());

  // Neither file: auth is off.
  EXPECT_EQ(Authenticator::Load(AuthOptions{}).value(), nullptr);
  AuthOptions missing;
  missing.keys_file = dir_ + "/missing.json";
  EXPECT_FALSE(Authenticator::Load(missing).ok());
  AuthOptions empty;
  empty.keys_file = Write("empty.json", "{}");
  auto no_keys = Authenticator::Load(empty);
  ASSERT_FALSE(no_keys.ok());
  EXPECT_NE(no_keys.status().message().find("lists no key"), std::string::npos);
  AuthOptions short_secret;
  short_secret.jwt_secret_file = Write("short", "short");
  auto result = Authenticator::Load(short_secret);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("--auth-jwt-secret-file"), std::string::npos);
}

TEST_F(AuthFilesTest, RefreshFollowsReloads) {
  AuthOptions o;
  o.keys_file = Write("keys.json", R"({"tiers": {"t": {"requests_per_minute": 5}},
    "principals": {"alice": {"tier": "t"}},
    "keys": [{"principal": "alice", "sha256": ")" +
                                       KeyRing::Sha256Hex("k1") + R"("}]})");
  auto auth = Authenticator::Load(o).value();
  auto grant = auth->Check("k1").value();
  Write("keys.json", R"({"tiers": {"t": {"requests_per_minute": 50}},
    "principals": {"alice": {"tier": "t"}},
    "keys": [{"principal": "alice", "sha256": ")" +
                         KeyRing::Sha256Hex("k1") + R"("}]})");
  ASSERT_TRUE(auth->Reload().ok());
  auto refreshed = auth->Refresh(*grant.principal, grant.key_hash);
  ASSERT_NE(refreshed, nullptr);
  EXPECT_EQ(refreshed->limits.requests_per_minute, 50);
  Write("keys.json", KeysJson("k9", "alice"));
  ASSERT_TRUE(auth->Reload().ok());
  EXPECT_EQ(auth->Refresh(*grant.principal, grant.key_hash), nullptr);  // the key is gone
}

}  // namespace
}  // namespace anima::gateway
