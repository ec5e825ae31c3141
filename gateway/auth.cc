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
#include "services/common/identity.h"

namespace anima::gateway {

namespace {

constexpr size_t kMaxTokenBytes = 8192;
constexpr std::string_view kBearerProtocol = "anima.bearer.";

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

bool AudienceMatches(const nlohmann::json& aud, const std::string& want) {
  if (aud.is_string()) return aud.get_ref<const std::string&>() == want;
  if (!aud.is_array()) return false;
  return std::any_of(aud.begin(), aud.end(), [&](const nlohmann::json& a) {
    return a.is_string() && a.get_ref<const std::string&>() == want;
  });
}

}  // namespace

Authenticator::Authenticator(AuthOptions options, std::shared_ptr<const KeyRing> keys,
                             std::string jwt_secret)
    : options_(std::move(options)),
      keys_(keys ? std::move(keys) : KeyRing::Parse(nlohmann::json::object()).value()),
      jwt_secret_(std::move(jwt_secret)) {}

absl::StatusOr<std::shared_ptr<Authenticator>> Authenticator::Load(const AuthOptions& options) {
  if (options.keys_file.empty() && options.jwt_secret_file.empty()) return nullptr;
  std::shared_ptr<const KeyRing> keys;
  if (!options.keys_file.empty()) {
    auto loaded = KeyRing::Load(options.keys_file);
    if (!loaded.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--auth-keys-file: ", loaded.status().message()));
    }
    keys = *loaded;
    if (keys->key_count() == 0 && options.jwt_secret_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--auth-keys-file: ", options.keys_file,
                                                     " lists no key (and no JWT secret is given)"));
    }
  }
  std::string secret;
  if (!options.jwt_secret_file.empty()) {
    auto text = ReadFile(options.jwt_secret_file, "--auth-jwt-secret-file");
    if (!text.ok()) return text.status();
    secret = std::string(absl::StripTrailingAsciiWhitespace(*text));
    if (secret.size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--auth-jwt-secret-file: ", options.jwt_secret_file, " holds fewer than 16 bytes"));
    }
  }
  if (options.jwt_max_lifetime.count() < 1) {
    return absl::InvalidArgumentError("--auth-jwt-max-lifetime-s: expected at least 1");
  }
  return std::make_shared<Authenticator>(options, std::move(keys), std::move(secret));
}

absl::Status Authenticator::Reload() {
  if (options_.keys_file.empty()) return absl::OkStatus();
  auto loaded = KeyRing::Load(options_.keys_file);
  if (!loaded.ok()) return loaded.status();
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys_ = *loaded;
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return absl::OkStatus();
}

std::shared_ptr<const KeyRing> Authenticator::keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_;
}

std::shared_ptr<const Principal> Authenticator::Local() {
  static const std::shared_ptr<const Principal> kLocal = [] {
    auto p = std::make_shared<Principal>();
    p->id = common::kLocalPrincipal;
    p->role = Role::kAdmin;  // the only principal there is may see everything
    return p;
  }();
  return kLocal;
}

std::shared_ptr<const Principal> Authenticator::Refresh(const Principal& principal,
                                                        std::string_view key_hash) const {
  auto ring = keys();
  if (!key_hash.empty()) return ring->FindByKeyHash(key_hash);
  return ring->ForToken(principal.id, principal.tier, principal.role);
}

absl::StatusOr<Authenticator::Grant> Authenticator::Check(
    std::string_view token, std::chrono::system_clock::time_point now) const {
  if (token.empty()) return absl::UnauthenticatedError("a bearer token is required");
  if (token.size() > kMaxTokenBytes) return absl::UnauthenticatedError("the token is too long");
  std::string hash = KeyRing::Sha256(token);
  if (auto principal = keys()->FindByKeyHash(hash)) {
    return Grant{std::move(principal), std::nullopt, std::move(hash)};
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
  std::chrono::system_clock::time_point issued = now;
  if (auto iat_it = payload.find("iat"); iat_it != payload.end()) {
    auto iat = NumericDate(*iat_it);
    if (!iat) return absl::UnauthenticatedError("the token has an invalid iat");
    issued = std::min(*iat, now);
  }
  if (*exp - issued > options_.jwt_max_lifetime) {
    return absl::UnauthenticatedError(absl::StrCat("the token lives longer than the allowed ",
                                                   options_.jwt_max_lifetime.count(), " s"));
  }
  if (!options_.jwt_issuer.empty()) {
    auto iss = payload.find("iss");
    if (iss == payload.end() || !iss->is_string() || *iss != options_.jwt_issuer) {
      return absl::UnauthenticatedError("the token's issuer is not accepted");
    }
  }
  if (!options_.jwt_audience.empty()) {
    auto aud = payload.find("aud");
    if (aud == payload.end() || !AudienceMatches(*aud, options_.jwt_audience)) {
      return absl::UnauthenticatedError("the token is not meant for this audience");
    }
  }
  auto sub = payload.find("sub");
  if (sub == payload.end() || !sub->is_string() ||
      !common::PrincipalIdValid(sub->get_ref<const std::string&>())) {
    return absl::UnauthenticatedError(
        "the token's sub must name the principal (1 to 128 of [A-Za-z0-9._@:+-])");
  }
  std::string tier, role = "user";
  if (auto t = payload.find("tier"); t != payload.end()) {
    if (!t->is_string()) return absl::UnauthenticatedError("the token's tier is not a string");
    tier = t->get<std::string>();
  }
  if (auto r = payload.find("role"); r != payload.end()) {
    if (!r->is_string() || (*r != "user" && *r != "admin")) {
      return absl::UnauthenticatedError("the token's role must be \"user\" or \"admin\"");
    }
    role = r->get<std::string>();
  }
  auto principal = keys()->ForToken(sub->get_ref<const std::string&>(), tier,
                                    role == "admin" ? Role::kAdmin : Role::kUser);
  if (!principal) return absl::UnauthenticatedError("the token's tier is not configured");
  return Grant{std::move(principal), *exp, ""};
}

PresentedToken Authenticator::TokenOf(std::string_view authorization, std::string_view protocols,
                                      std::string_view target, bool allow_query) {
  if (authorization.size() > 7 && absl::StartsWithIgnoreCase(A(authorization), "bearer ")) {
    return {std::string(absl::StripAsciiWhitespace(A(authorization.substr(7)))),
            TokenSource::kBearerHeader};
  }
  for (absl::string_view p : absl::StrSplit(A(protocols), ',')) {
    p = absl::StripAsciiWhitespace(p);
    if (absl::ConsumePrefix(&p, A(kBearerProtocol)))
      return {std::string(p), TokenSource::kSubprotocol};
  }
  if (!allow_query) return {};
  auto q = target.find('?');
  if (q == std::string_view::npos) return {};
  for (absl::string_view param : absl::StrSplit(A(target.substr(q + 1)), '&')) {
    if (absl::ConsumePrefix(&param, "token="))
      return {PercentDecode(S(param)), TokenSource::kQuery};
  }
  return {};
}

std::string Authenticator::RedactTarget(std::string_view target) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q + 1));
  bool first = true;
  for (absl::string_view param : absl::StrSplit(A(target.substr(q + 1)), '&')) {
    if (!first) out.push_back('&');
    first = false;
    if (absl::StartsWith(param, "token=")) {
      out += "token=***";
    } else {
      out.append(param.data(), param.size());
    }
  }
  return out;
}

std::string Authenticator::SignHs256(std::string_view payload_json, std::string_view secret) {
  std::string head = absl::StrCat(absl::WebSafeBase64Escape(R"({"alg":"HS256","typ":"JWT"})"), ".",
                                  absl::WebSafeBase64Escape(A(payload_json)));
  return absl::StrCat(head, ".", absl::WebSafeBase64Escape(Hmac(head, secret)));
}

}  // namespace anima::gateway
