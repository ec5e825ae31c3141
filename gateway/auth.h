#pragma once

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace anima::gateway {

// Checks bearer tokens: static tokens from a file, and HS256 JWTs signed with a shared secret
// that must carry `exp` (and may carry `nbf`). No I/O after construction; thread-safe.
class Authenticator {
 public:
  struct Grant {
    // When the token stops being valid; nullopt for a static token.
    std::optional<std::chrono::system_clock::time_point> expires;
  };

  // `tokens_file`: one token a line; blank lines and lines starting with '#' are skipped.
  // `jwt_secret_file`: the HS256 secret, the file's bytes without a trailing newline. Either may
  // be empty; with both empty, auth is off. Errors name the file.
  static absl::StatusOr<Authenticator> Load(const std::string& tokens_file,
                                            const std::string& jwt_secret_file);
  Authenticator(std::set<std::string> tokens, std::string jwt_secret);
  Authenticator() = default;

  bool enabled() const { return !tokens_.empty() || !jwt_secret_.empty(); }

  // Unauthenticated (with a reason fit for a client) or the grant. `now` is for tests.
  absl::StatusOr<Grant> Check(std::string_view token, std::chrono::system_clock::time_point now =
                                                          std::chrono::system_clock::now()) const;

  // The token of a request: `Authorization: Bearer T`, else the `token` query parameter of
  // `target` (percent-decoded). Empty when there is neither.
  static std::string TokenOf(std::string_view authorization, std::string_view target);

  // An HS256 JWT of `payload_json` (for tests and tools).
  static std::string SignHs256(std::string_view payload_json, std::string_view secret);

 private:
  absl::StatusOr<Grant> CheckJwt(std::string_view token,
                                 std::chrono::system_clock::time_point now) const;

  std::set<std::string, std::less<>> tokens_;
  std::string jwt_secret_;
};

}  // namespace anima::gateway
