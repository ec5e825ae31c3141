#include "gateway/principals.h"

#include <openssl/sha.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/common/config.h"
#include "services/common/identity.h"
#include "yaml-cpp/yaml.h"

namespace anima::gateway {

namespace {

constexpr int64_t kMaxCount = int64_t{1} << 50;
constexpr double kMaxUsd = 1e12;

std::string Sha256Raw(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<char*>(digest), sizeof(digest));
}

std::optional<std::string> FromHex(std::string_view hex) {
  if (hex.size() != 2 * SHA256_DIGEST_LENGTH) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = value(hex[i]), lo = value(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

}  // namespace

common::Identity IdentityFor(const Principal& principal) {
  common::Identity identity;
  identity.principal = principal.id;
  identity.admin = principal.role == Role::kAdmin;
  identity.job_limits.in_flight = principal.limits.jobs_in_flight;
  identity.job_limits.per_day = principal.limits.jobs_per_day;
  return identity;
}

absl::StatusOr<QuotaLimits> ParseQuotaLimits(const nlohmann::json& object, const std::string& path,
                                             QuotaLimits base) {
  if (!object.is_object()) return absl::InvalidArgumentError(path + ": expected an object");
  common::ConfigReader r(object, path);
  QuotaLimits l = base;
  l.requests_per_second = r.Int("requests_per_second", l.requests_per_second, 0, kMaxCount);
  l.requests_per_minute = r.Int("requests_per_minute", l.requests_per_minute, 0, kMaxCount);
  l.requests_in_flight = r.Int("requests_in_flight", l.requests_in_flight, 0, kMaxCount);
  l.tokens_per_minute = r.Int("tokens_per_minute", l.tokens_per_minute, 0, kMaxCount);
  l.tokens_per_day = r.Int("tokens_per_day", l.tokens_per_day, 0, kMaxCount);
  l.cost_per_day = r.Number("cost_per_day", l.cost_per_day, 0, kMaxUsd);
  l.cost_per_month = r.Number("cost_per_month", l.cost_per_month, 0, kMaxUsd);
  l.jobs_in_flight = r.Int("jobs_in_flight", l.jobs_in_flight, 0, kMaxCount);
  l.jobs_per_day = r.Int("jobs_per_day", l.jobs_per_day, 0, kMaxCount);
  r.RejectUnknown();
  if (!r.ok()) return r.status();
  return l;
}

std::string KeyRing::Sha256(std::string_view key) { return Sha256Raw(key); }

std::string KeyRing::Sha256Hex(std::string_view key) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw = Sha256Raw(key), out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

namespace {

// A YAML document as the JSON it stands for: quoted scalars are strings; plain ones are null,
// booleans or numbers when they read as such (YAML 1.2's core schema), else strings.
nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& kv : node) out[kv.first.as<std::string>()] = YamlToJson(kv.second);
      return out;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& item : node) out.push_back(YamlToJson(item));
      return out;
    }
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      if (node.Tag() == "!") return text;  // quoted
      if (text == "~" || text == "null" || text == "Null" || text == "NULL") return nullptr;
      if (text == "true" || text == "True" || text == "TRUE") return true;
      if (text == "false" || text == "False" || text == "FALSE") return false;
      auto number = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (number.is_number()) return number;
      return text;
    }
    default:
      return nullptr;
  }
}

absl::StatusOr<nlohmann::json> LoadKeysDocument(const std::string& path) {
  bool yaml = absl::EndsWith(path, ".yaml") || absl::EndsWith(path, ".yml");
  if (!yaml) return common::LoadJsonFile(path);
  try {
    return YamlToJson(YAML::LoadFile(path));
  } catch (const YAML::BadFile&) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not valid YAML at line ", e.mark.line + 1, ": ", e.msg));
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<const KeyRing>> KeyRing::Load(const std::string& path) {
  auto document = LoadKeysDocument(path);
  if (!document.ok()) return document.status();
  auto ring = Parse(*document);
  if (!ring.ok())
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", ring.status().message()));
  return ring;
}

absl::StatusOr<std::shared_ptr<const KeyRing>> KeyRing::Parse(const nlohmann::json& document) {
  if (!document.is_object()) return absl::InvalidArgumentError("expected a JSON object");
  auto ring = std::make_shared<KeyRing>();
  common::ConfigReader top(document, "");
  ring->default_tier_ = top.String("default_tier");
  const nlohmann::json* tiers = top.Object("tiers");
  const nlohmann::json* principals = top.Object("principals");
  const nlohmann::json* keys = top.Array("keys");
  top.RejectUnknown();
  if (!top.ok()) return top.status();

  if (tiers) {
    for (const auto& [name, limits] : tiers->items()) {
      std::string path = absl::StrCat("tiers.", name);
      if (!common::PrincipalIdValid(name)) {
        return absl::InvalidArgumentError(path + ": a tier name is 1 to 128 of [A-Za-z0-9._@:+-]");
      }
      auto parsed = ParseQuotaLimits(limits, path);
      if (!parsed.ok()) return parsed.status();
      ring->tiers_.emplace(name, *parsed);
    }
  }
  if (!ring->default_tier_.empty() && !ring->tiers_.count(ring->default_tier_)) {
    return absl::InvalidArgumentError(
        absl::StrCat("default_tier: \"", ring->default_tier_, "\" is not in tiers"));
  }
  if (principals) {
    for (const auto& [id, spec] : principals->items()) {
      std::string path = absl::StrCat("principals.", id);
      if (!common::PrincipalIdValid(id)) {
        return absl::InvalidArgumentError(path +
                                          ": a principal id is 1 to 128 of [A-Za-z0-9._@:+-]");
      }
      if (!spec.is_object()) return absl::InvalidArgumentError(path + ": expected an object");
      common::ConfigReader r(spec, path);
      auto principal = std::make_shared<Principal>();
      principal->id = id;
      principal->tier = r.String("tier", ring->default_tier_);
      std::string role = r.String("role", "user");
      const nlohmann::json* limits = r.Object("limits");
      r.RejectUnknown();
      if (!r.ok()) return r.status();
      if (role == "admin") {
        principal->role = Role::kAdmin;
      } else if (role != "user") {
        return absl::InvalidArgumentError(path + ".role: expected \"user\" or \"admin\"");
      }
      QuotaLimits base;
      if (!principal->tier.empty()) {
        auto tier = ring->tiers_.find(principal->tier);
        if (tier == ring->tiers_.end()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ".tier: \"", principal->tier, "\" is not in tiers"));
        }
        base = tier->second;
      }
      if (limits) {
        auto parsed = ParseQuotaLimits(*limits, path + ".limits", base);
        if (!parsed.ok()) return parsed.status();
        base = *parsed;
      }
      principal->limits = base;
      ring->principals_.emplace(id, std::move(principal));
    }
  }
  if (keys) {
    for (size_t i = 0; i < keys->size(); ++i) {
      std::string path = absl::StrCat("keys[", i, "]");
      const nlohmann::json& spec = (*keys)[i];
      if (!spec.is_object()) return absl::InvalidArgumentError(path + ": expected an object");
      common::ConfigReader r(spec, path);
      std::string principal = r.String("principal", "", /*required=*/true);
      std::string hex = r.String("sha256", "", /*required=*/true);
      r.String("name");  // a label for people; never used
      r.RejectUnknown();
      if (!r.ok()) return r.status();
      auto found = ring->principals_.find(principal);
      if (found == ring->principals_.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ".principal: \"", principal, "\" is not in principals"));
      }
      auto raw = FromHex(hex);
      if (!raw) {
        return absl::InvalidArgumentError(
            path + ".sha256: expected 64 hex digits (the SHA-256 of the key, never the key)");
      }
      if (!ring->keys_.emplace(*raw, found->second).second) {
        return absl::InvalidArgumentError(path + ".sha256: the same key is listed twice");
      }
    }
  }
  return std::shared_ptr<const KeyRing>(std::move(ring));
}

std::shared_ptr<const Principal> KeyRing::FindByKeyHash(std::string_view hash) const {
  auto it = keys_.find(std::string(hash));
  return it == keys_.end() ? nullptr : it->second;
}

std::shared_ptr<const Principal> KeyRing::FindById(std::string_view id) const {
  auto it = principals_.find(std::string(id));
  return it == principals_.end() ? nullptr : it->second;
}

std::shared_ptr<const Principal> KeyRing::ForToken(std::string_view id, std::string_view tier,
                                                   Role role) const {
  if (auto configured = FindById(id)) return configured;
  auto principal = std::make_shared<Principal>();
  principal->id = std::string(id);
  principal->role = role;
  principal->tier = std::string(tier.empty() ? std::string_view(default_tier_) : tier);
  if (!principal->tier.empty()) {
    auto it = tiers_.find(principal->tier);
    if (it == tiers_.end()) return nullptr;
    principal->limits = it->second;
  }
  return principal;
}

}  // namespace anima::gateway
