#include "services/common/identity.h"

#include <sys/random.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::common {

namespace {

std::string_view Value(const grpc::ServerContextBase& context, const char* key) {
  const auto& md = context.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

std::optional<int64_t> ParseCount(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

}  // namespace

bool PrincipalIdValid(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == ':' || c == '+' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Identity IdentityOf(const grpc::ServerContextBase& context) {
  Identity identity;
  std::string_view principal = Value(context, kPrincipalKey);
  if (PrincipalIdValid(principal)) identity.principal = std::string(principal);
  identity.admin = Value(context, kRoleKey) == "admin";
  if (auto limits = ParseJobLimits(Value(context, kJobLimitsKey))) identity.job_limits = *limits;
  return identity;
}

void AttachIdentity(const Identity& identity, grpc::ClientContext* context) {
  context->AddMetadata(kPrincipalKey, identity.principal);
  if (identity.admin) context->AddMetadata(kRoleKey, "admin");
  if (identity.job_limits != JobLimits{}) {
    context->AddMetadata(kJobLimitsKey, FormatJobLimits(identity.job_limits));
  }
}

std::string FormatJobLimits(const JobLimits& limits) {
  return absl::StrCat("in_flight=", limits.in_flight, ";per_day=", limits.per_day);
}

std::optional<JobLimits> ParseJobLimits(std::string_view text) {
  if (text.empty()) return std::nullopt;
  JobLimits limits;
  for (absl::string_view part : absl::StrSplit(absl::string_view(text.data(), text.size()), ';')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(part, '=');
    auto value = ParseCount(std::string_view(kv.second.data(), kv.second.size()));
    if (!value) return std::nullopt;
    if (kv.first == "in_flight") {
      limits.in_flight = *value;
    } else if (kv.first == "per_day") {
      limits.per_day = *value;
    } else {
      return std::nullopt;
    }
  }
  return limits;
}

std::string RandomHex(size_t count) {
  std::string bytes(count, '\0');
  size_t got = 0;
  while (got < count) {
    ssize_t n = getrandom(bytes.data() + got, count - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::abort();  // no entropy source: never hand out a guessable value
    }
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(count * 2);
  for (unsigned char b : bytes) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 15]);
  }
  return hex;
}

std::string NewSecureId(std::string_view prefix) { return std::string(prefix) + RandomHex(16); }

}  // namespace anima::common
