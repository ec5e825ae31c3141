#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "gateway/principals.h"

namespace anima::gateway {

struct AuthOptions {
  // The keys file (gateway/principals.h); empty: no keys, only JWTs (if a secret is given).
  std::string keys_file;
  // The HS256 secret, the file's bytes without a trailing newline (at least 16 bytes).
  std::string jwt_secret_file;
  // When set, a JWT's `aud` (a string or an array of strings) must contain it, and its `iss`
  // must equal it.
  std::string jwt_audience;
  std::string jwt_issuer;
  // A JWT whose exp is further than this from now (or from its iat) is refused: a stolen
  // long-lived token is a standing credential.
  std::chrono::seconds jwt_max_lifetime{std::chrono::hours(24)};
};

// Where a request's token came from (a query-string token is allowed on WebSocket upgrades only).
enum class TokenSource { kNone, kBearerHeader, kSubprotocol, kQuery };

struct PresentedToken {
  std::string token;
  TokenSource source = TokenSource::kNone;
};

// Authenticates clients: keys from the keys file (by SHA-256) and HS256 JWTs whose `sub` is the
// principal (optional claims: `tier`, `role`). Thread-safe; Reload swaps the keys file atomically,
// so checks in progress finish against the keys they started with.
class Authenticator {
 public:
  struct Grant {
    std::shared_ptr<const Principal> principal;
    // When the token stops being valid; nullopt for a key.
    std::optional<std::chrono::system_clock::time_point> expires;
    // The SHA-256 (raw) of the key; empty for a JWT.
    std::string key_hash;
  };

  // Errors name the flag or the keys file's field. With neither a keys file nor a secret, the
  // result is null: auth is off.
  static absl::StatusOr<std::shared_ptr<Authenticator>> Load(const AuthOptions& options);
  // For tests: keys and a secret given directly.
  Authenticator(AuthOptions options, std::shared_ptr<const KeyRing> keys, std::string jwt_secret);

  // Unauthenticated (with a reason fit for a client) or the grant. `now` is for tests.
  absl::StatusOr<Grant> Check(std::string_view token, std::chrono::system_clock::time_point now =
                                                          std::chrono::system_clock::now()) const;

  // Re-reads the keys file. On an error the keys in use stay, and the error is returned.
  absl::Status Reload();
  // Bumped by every Reload that changed the keys: sessions re-resolve their principal then.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::shared_ptr<const KeyRing> keys() const;
  const AuthOptions& options() const { return options_; }

  // What a connection granted `principal` (by the key of `key_hash`, or by a JWT when it is
  // empty) acts for after a reload: the key's principal as now configured, null when the key is
  // gone; for a JWT, the principal as now configured or of its tier.
  std::shared_ptr<const Principal> Refresh(const Principal& principal,
                                           std::string_view key_hash) const;

  // The one principal of a gateway without auth: "local", no quotas.
  static std::shared_ptr<const Principal> Local();

  // The token of a request: `Authorization: Bearer T`, else the subprotocol `anima.bearer.T` of
  // `Sec-WebSocket-Protocol`, else (when `allow_query`) the `token` query parameter of `target`
  // (percent-decoded).
  static PresentedToken TokenOf(std::string_view authorization, std::string_view protocols,
                                std::string_view target, bool allow_query);
  // `target` with the value of any `token` query parameter replaced by ***, for logs.
  static std::string RedactTarget(std::string_view target);

  // An HS256 JWT of `payload_json` (for tests and tools).
  static std::string SignHs256(std::string_view payload_json, std::string_view secret);

 private:
  absl::StatusOr<Grant> CheckJwt(std::string_view token,
                                 std::chrono::system_clock::time_point now) const;

  const AuthOptions options_;
  mutable std::mutex mu_;
  std::shared_ptr<const KeyRing> keys_;  // guarded by mu_; never null
  std::atomic<uint64_t> generation_{0};
  const std::string jwt_secret_;
};

}  // namespace anima::gateway
