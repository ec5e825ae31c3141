#include "gateway/auth.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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

class AuthTest : public ::testing::Test {
 protected:
  Authenticator auth_{{"static-token-1", "static-token-2"}, kSecret};
  system_clock::time_point now_ = system_clock::now();
  std::string Jwt(int64_t exp) {
    return Authenticator::SignHs256(R"({"sub":"u","exp":)" + std::to_string(exp) + "}", kSecret);
  }
};

TEST_F(AuthTest, StaticTokensNeverExpire) {
  auto grant = auth_.Check("static-token-2", now_);
  ASSERT_TRUE(grant.ok());
  EXPECT_FALSE(grant->expires.has_value());
  EXPECT_FALSE(auth_.Check("static-token-3", now_).ok());
  EXPECT_FALSE(auth_.Check("static-token", now_).ok());
  EXPECT_FALSE(auth_.Check("", now_).ok());
}

TEST_F(AuthTest, Hs256JwtWithExp) {
  int64_t exp = Epoch(now_) + 60;
  auto grant = auth_.Check(Jwt(exp), now_);
  ASSERT_TRUE(grant.ok()) << grant.status();
  ASSERT_TRUE(grant->expires.has_value());
  EXPECT_EQ(Epoch(*grant->expires), exp);
}

TEST_F(AuthTest, ExpiredMissingExpAndNotYetValid) {
  EXPECT_NE(auth_.Check(Jwt(Epoch(now_) - 1), now_).status().message().find("expired"),
            std::string::npos);
  EXPECT_FALSE(auth_.Check(Authenticator::SignHs256(R"({"sub":"u"})", kSecret), now_).ok());
  EXPECT_FALSE(auth_.Check(Authenticator::SignHs256(R"({"exp":"soon"})", kSecret), now_).ok());
  std::string future = R"({"exp":)" + std::to_string(Epoch(now_) + 60) + R"(,"nbf":)" +
                       std::to_string(Epoch(now_) + 30) + "}";
  EXPECT_FALSE(auth_.Check(Authenticator::SignHs256(future, kSecret), now_).ok());
}

TEST_F(AuthTest, ForgedAndHostileTokens) {
  std::string good = Jwt(Epoch(now_) + 60);
  // Another secret.
  EXPECT_FALSE(
      auth_
          .Check(Authenticator::SignHs256(R"({"exp":)" + std::to_string(Epoch(now_) + 60) + "}",
                                          "another-secret-of-16"),
                 now_)
          .ok());
  // A changed payload with the old signature.
  auto dot1 = good.find('.'), dot2 = good.rfind('.');
  std::string payload = absl::WebSafeBase64Escape(R"({"exp":99999999999})");
  EXPECT_FALSE(auth_.Check(good.substr(0, dot1 + 1) + payload + good.substr(dot2), now_).ok());
  // alg none, with and without a signature.
  std::string none =
      absl::WebSafeBase64Escape(R"({"alg":"none"})") + "." + good.substr(dot1 + 1, dot2 - dot1 - 1);
  EXPECT_FALSE(auth_.Check(none + ".", now_).ok());
  EXPECT_FALSE(auth_.Check(none + good.substr(dot2), now_).ok());
  for (const std::string& bad :
       std::vector<std::string>{"a.b.c", "..", "....", "x", "a.b", "!!.@@.##",
                                std::string(100000, 'a'), std::string("\0.\0.\0", 5)}) {
    EXPECT_FALSE(auth_.Check(bad, now_).ok()) << bad.substr(0, 20);
  }
  // Without a secret, no JWT is accepted.
  Authenticator tokens_only({"t"}, "");
  EXPECT_FALSE(tokens_only.Check(good, now_).ok());
  EXPECT_FALSE(Authenticator().enabled());
  EXPECT_TRUE(tokens_only.enabled());
}

TEST(TokenOfTest, HeaderThenQuery) {
  EXPECT_EQ(Authenticator::TokenOf("Bearer abc", "/?token=q"), "abc");
  EXPECT_EQ(Authenticator::TokenOf("bearer  abc ", "/"), "abc");
  EXPECT_EQ(Authenticator::TokenOf("", "/ws?x=1&token=a%2Bb%3D"), "a+b=");
  EXPECT_EQ(Authenticator::TokenOf("Basic Zm9v", "/"), "");
  EXPECT_EQ(Authenticator::TokenOf("", "/?tokens=x"), "");
  EXPECT_EQ(Authenticator::TokenOf("", "/?token=%zz%4"), "%zz%4");
}

TEST(AuthLoadTest, FilesAndTheirErrors) {
  char dir[] = "/tmp/anima-auth.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string tokens = std::string(dir) + "/tokens", secret = std::string(dir) + "/secret",
              empty = std::string(dir) + "/empty", short_secret = std::string(dir) + "/short";
  FILE* f = fopen(tokens.c_str(), "w");
  fputs("# clients\n\n  tok-a  \ntok-b\n", f);
  fclose(f);
  f = fopen(secret.c_str(), "w");
  fputs("a-secret-of-more-than-16-bytes\n", f);
  fclose(f);
  f = fopen(empty.c_str(), "w");
  fputs("# nothing\n", f);
  fclose(f);
  f = fopen(short_secret.c_str(), "w");
  fputs("short", f);
  fclose(f);
  auto auth = Authenticator::Load(tokens, secret);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_TRUE(auth->Check("tok-a").ok());
  EXPECT_FALSE(auth->Check("# clients").ok());
  std::string jwt =
      Authenticator::SignHs256(R"({"exp":)" + std::to_string(Epoch(system_clock::now()) + 60) + "}",
                               "a-secret-of-more-than-16-bytes");
  EXPECT_TRUE(auth->Check(jwt).ok());
  EXPECT_FALSE(Authenticator::Load(dir + std::string("/missing"), "").ok());
  EXPECT_FALSE(Authenticator::Load(empty, "").ok());
  auto short_result = Authenticator::Load("", short_secret);
  ASSERT_FALSE(short_result.ok());
  EXPECT_NE(short_result.status().message().find("--auth-jwt-secret-file"), std::string::npos);
  EXPECT_FALSE(Authenticator::Load("", "").value().enabled());
  for (const auto& p : {tokens, secret, empty, short_secret}) std::remove(p.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace anima::gateway
