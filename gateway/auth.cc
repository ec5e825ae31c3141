#include "gateway/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {

namespace {

constexpr size_t kMaxTokenBytes = 8192;

// Debian's absl::string_view is its own type, not std::string_view.
absl::string_view A(std::string_view s) { return absl::string_view(s.data(), s.size()); }
std::string_view S(absl::string_view s) { return std::string_view(s.data(), s.size()); }

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Hmac(std::string_view data, std::string_view secret) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// A NumericDate (seconds since the epoch, possibly fractional).
std::optional<std::chrono::system_clock::time_point> NumericDate(const nlohmann::json& v) {
  if (!v.is_number()) return std::nullopt;
  double seconds = v.get<double>();
  if (!std::isfinite(seconds) || seconds < 0 || seconds > 1e11) return std::nullopt;
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::duration<double>(seconds)));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string PercentDecode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]), lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

}  // namespace

Authenticator::Authenticator(std::set<std::string> tokens, std::string jwt_secret)
    : tokens_(tokens.begin(), tokens.end()), jwt_secret_(std::move(jwt_secret)) {}

absl::StatusOr<Authenticator> Authenticator::Load(const std::string& tokens_file,
                                                  const std::string& jwt_secret_file) {
  std::set<std::string> tokens;
  if (!tokens_file.empty()) {
    auto text = ReadFile(tokens_file, "--auth-tokens-file");
    if (!text.ok()) return text.status();
    for (absl::string_view line : absl::StrSplit(*text, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      if (line.empty() || line[0] == '#') continue;
      tokens.insert(std::string(line));
    }
    if (tokens.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-tokens-file: ", tokens_file, " holds no token"));
    }
  }
  std::string secret;
  if (!jwt_secret_file.empty()) {
    auto text = ReadFile(jwt_secret_file, "--auth-jwt-secret-file");
    if (!text.ok()) return text.status();
    secret = std::string(absl::StripTrailingAsciiWhitespace(*text));
    if (secret.size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-jwt-secret-file: ", jwt_secret_file, " holds fewer than 16 bytes"));
    }
  }
  return Authenticator(std::move(tokens), std::move(secret));
}

absl::StatusOr<Authenticator::Grant> Authenticator::Check(
    std::string_view token, std::chrono::system_clock::time_point now) const {
  if (token.empty()) return absl::UnauthenticatedError("a bearer token is required");
  if (token.size() > kMaxTokenBytes) return absl::UnauthenticatedError("the token is too long");
  for (const auto& t : tokens_) {
    if (ConstantTimeEqual(t, token)) return Grant{};
  }
  if (!jwt_secret_.empty() && std::count(token.begin(), token.end(), '.') == 2) {
    return CheckJwt(token, now);
  }
  return absl::UnauthenticatedError("the token is not valid");
}

absl::StatusOr<Authenticator::Grant> Authenticator::CheckJwt(
    std::string_view token, std::chrono::system_clock::time_point now) const {
  std::vector<absl::string_view> parts = absl::StrSplit(A(token), '.');
  std::string header_text, payload_text, signature;
  if (parts.size() != 3 || !absl::WebSafeBase64Unescape(parts[0], &header_text) ||
      !absl::WebSafeBase64Unescape(parts[1], &payload_text) ||
      !absl::WebSafeBase64Unescape(parts[2], &signature)) {
    return absl::UnauthenticatedError("the token is not valid");
  }
  auto header = nlohmann::json::parse(header_text, nullptr, false);
  // The algorithm is fixed: a token cannot choose `none` or another key type.
  if (!header.is_object() || header.value("alg", nlohmann::json()) != "HS256") {
    return absl::UnauthenticatedError("the token is not valid (HS256 only)");
  }
  std::string_view signed_part = token.substr(0, parts[0].size() + 1 + parts[1].size());
  if (!ConstantTimeEqual(Hmac(signed_part, jwt_secret_), signature)) {
    return absl::UnauthenticatedError("the token is not valid");
  }
  auto payload = nlohmann::json::parse(payload_text, nullptr, false);
  if (!payload.is_object()) return absl::UnauthenticatedError("the token is not valid");
  auto exp_it = payload.find("exp");
  auto exp = exp_it == payload.end() ? std::nullopt : NumericDate(*exp_it);
  if (!exp) return absl::UnauthenticatedError("the token has no valid exp");
  if (*exp <= now) return absl::UnauthenticatedError("the token has expired");
  if (auto nbf_it = payload.find("nbf"); nbf_it != payload.end()) {
    auto nbf = NumericDate(*nbf_it);
    if (!nbf || *nbf > now) return absl::UnauthenticatedError("the token is not valid yet");
  }
  return Grant{*exp};
}

std::string Authenticator::TokenOf(std::string_view authorization, std::string_view target) {
  if (authorization.size() > 7 && absl::StartsWithIgnoreCase(A(authorization), "bearer ")) {
    return std::string(absl::StripAsciiWhitespace(A(authorization.substr(7))));
  }
  auto q = target.find('?');
  if (q == std::string_view::npos) return "";
  for (absl::string_view param : absl::StrSplit(A(target.substr(q + 1)), '&')) {
    if (absl::ConsumePrefix(&param, "token=")) return PercentDecode(S(param));
  }
  return "";
}

std::string Authenticator::SignHs256(std::string_view payload_json, std::string_view secret) {
  std::string head = absl::StrCat(absl::WebSafeBase64Escape(R"({"alg":"HS256","typ":"JWT"})"), ".",
                                  absl::WebSafeBase64Escape(A(payload_json)));
  return absl::StrCat(head, ".", absl::WebSafeBase64Escape(Hmac(head, secret)));
}

}  // namespace anima::gateway
