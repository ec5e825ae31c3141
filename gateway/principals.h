#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/common/identity.h"

namespace anima::gateway {

// A principal's quotas (docs/security.md). Zero means no limit. Names are the protocol's
// `limit` values (PROTOCOL.md §3, quota_exceeded).
struct QuotaLimits {
  int64_t requests_per_second = 0;
  int64_t requests_per_minute = 0;
  int64_t requests_in_flight = 0;
  int64_t tokens_per_minute = 0;
  int64_t tokens_per_day = 0;
  double cost_per_day = 0;     // US dollars
  double cost_per_month = 0;   // US dollars
  int64_t jobs_in_flight = 0;  // enforced by self-coding (x-anima-job-limits)
  int64_t jobs_per_day = 0;    // enforced by self-coding
  bool operator==(const QuotaLimits&) const = default;
};

enum class Role { kUser, kAdmin };

// Who a client is, once authenticated. Immutable; shared by the connections that use it.
struct Principal {
  std::string id;
  std::string tier;  // a tier of the keys file, "" when none applies
  Role role = Role::kUser;
  QuotaLimits limits;
};

// What the services downstream are told of `principal` (gRPC metadata).
common::Identity IdentityFor(const Principal& principal);

// The keys file (docs/security.md): tiers of limits, principals, and the SHA-256 of each key.
//
//   {"default_tier": "free",
//    "tiers": {"free": {"requests_per_minute": 60, "tokens_per_day": 100000}},
//    "principals": {"acme": {"tier": "free", "role": "admin", "limits": {"cost_per_month": 50}}},
//    "keys": [{"principal": "acme", "sha256": "<64 hex digits>", "name": "laptop"}]}
//
// A principal's limits are its tier's, then its own `limits` on top. Keys are never stored:
// only their SHA-256, so the file can be read without revealing a key. Immutable after Parse;
// reloads build a new KeyRing.
class KeyRing {
 public:
  // Errors name the field ("keys[2].sha256: expected 64 hex digits").
  static absl::StatusOr<std::shared_ptr<const KeyRing>> Parse(const nlohmann::json& document);
  // A file ending in .yaml or .yml is read as YAML (the same document), any other as JSON.
  static absl::StatusOr<std::shared_ptr<const KeyRing>> Load(const std::string& path);

  // The principal whose key has the SHA-256 (raw, 32 bytes) `hash`, or null. Keys are looked up
  // by their hash, so no comparison with a secret can leak timing.
  std::shared_ptr<const Principal> FindByKeyHash(std::string_view hash) const;
  // The principal `id` as configured, or null.
  std::shared_ptr<const Principal> FindById(std::string_view id) const;
  // A principal named by a JWT: the configured one when `id` is listed, else one of `tier` (or
  // the default tier when `tier` is empty). Null when the tier is unknown.
  std::shared_ptr<const Principal> ForToken(std::string_view id, std::string_view tier,
                                            Role role) const;

  size_t principal_count() const { return principals_.size(); }
  size_t key_count() const { return keys_.size(); }
  const std::map<std::string, QuotaLimits, std::less<>>& tiers() const { return tiers_; }

  // The SHA-256 of `key`: raw, and as 64 lower-case hex digits.
  static std::string Sha256(std::string_view key);
  static std::string Sha256Hex(std::string_view key);

 private:
  std::map<std::string, QuotaLimits, std::less<>> tiers_;
  std::string default_tier_;
  std::unordered_map<std::string, std::shared_ptr<const Principal>> principals_;
  std::unordered_map<std::string, std::shared_ptr<const Principal>> keys_;  // by SHA-256 (raw)
};

// The limits object of a tier or principal, read with ConfigReader (unknown keys refused).
absl::StatusOr<QuotaLimits> ParseQuotaLimits(const nlohmann::json& object, const std::string& path,
                                             QuotaLimits base = {});

}  // namespace anima::gateway
