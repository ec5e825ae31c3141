#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"

namespace anima::common {

// Who a request acts for, as it travels between services in gRPC metadata. The gateway is the
// only place that authenticates clients; it sets these keys on Router.Dispatch and the router
// forwards them to the broker and self-coding. Internal services trust them because only the
// gateway and operators reach their ports (NetworkPolicy in k8s; loopback for `tools/anima up`).
//
//   x-anima-principal   the principal id (PrincipalIdValid); absent: kLocalPrincipal
//   x-anima-role        "admin" for an admin principal; absent otherwise
//   x-anima-job-limits  the principal's self-coding quotas, "in_flight=N;per_day=M" (0 or
//                       absent: no limit)
inline constexpr char kPrincipalKey[] = "x-anima-principal";
inline constexpr char kRoleKey[] = "x-anima-role";
inline constexpr char kJobLimitsKey[] = "x-anima-job-limits";

// The one principal of a deployment without auth.
inline constexpr char kLocalPrincipal[] = "local";

struct JobLimits {
  int64_t in_flight = 0;  // jobs queued or running at once; 0: no limit
  int64_t per_day = 0;    // jobs submitted per UTC day; 0: no limit
  bool operator==(const JobLimits&) const = default;
};

struct Identity {
  std::string principal = kLocalPrincipal;
  bool admin = false;
  JobLimits job_limits;
};

// 1 to 128 characters of [A-Za-z0-9._@:+-]: safe in metadata, logs, label values and keys.
bool PrincipalIdValid(std::string_view id);

// The identity of an incoming call. Missing or malformed keys fall back to the defaults
// (kLocalPrincipal, not admin, no job limits).
Identity IdentityOf(const grpc::ServerContextBase& context);

// Sets the three keys on an outgoing call.
void AttachIdentity(const Identity& identity, grpc::ClientContext* context);

std::string FormatJobLimits(const JobLimits& limits);
std::optional<JobLimits> ParseJobLimits(std::string_view text);

// A fresh identifier for something a client must not be able to guess (sessions, conversations,
// jobs): `prefix` and 32 hex digits of 128 bits from the kernel's CSPRNG (getrandom).
std::string NewSecureId(std::string_view prefix);

// `bytes` random bytes from the kernel's CSPRNG (getrandom), as lowercase hex: nonces, secrets.
std::string RandomHex(size_t bytes);

}  // namespace anima::common
