#include "services/self_coding/admission.h"

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "anima/v1/llm_broker.pb.h"
#include "services/self_coding/file_blocks.h"
#include "services/self_coding/prompts.h"

namespace anima::selfcoding {
namespace {

constexpr size_t kMaxTaskBytes = 16 * 1024;
constexpr size_t kMaxTestsBytes = 32 * 1024;
constexpr size_t kMaxSeedBytes = 48 * 1024;

// A refused Submit: ResourceExhausted carrying the BrokerFailure the client is to see.
absl::Status Refusal(const std::string& code, const std::string& limit, const std::string& message,
                     int64_t retry_after_ms) {
  anima::v1::BrokerFailure failure;
  failure.set_code(code);
  failure.set_message(message);
  failure.set_limit(limit);
  failure.set_retry_after_ms(retry_after_ms);
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kFailurePayloadUrl, absl::Cord(failure.SerializeAsString()));
  return status;
}

}  // namespace

absl::Status ValidateRequest(anima::v1::SubmitRequest& spec) {
  if (spec.task().empty()) return absl::InvalidArgumentError("task is required");
  if (spec.task().size() > kMaxTaskBytes) {
    return absl::InvalidArgumentError(absl::StrCat("task is over ", kMaxTaskBytes, " bytes"));
  }
  const LanguageProfile* lang = FindLanguage(spec.language());
  if (lang == nullptr) {
    return absl::InvalidArgumentError("language must be python or cpp, not \"" +
                                      spec.language().substr(0, 40) + "\"");
  }
  spec.set_language(lang->name);
  if (spec.max_attempts() == 0) spec.set_max_attempts(3);
  if (spec.max_attempts() < 1 || spec.max_attempts() > 5) {
    return absl::InvalidArgumentError("max_attempts must be from 1 to 5");
  }
  if (spec.tests().size() > kMaxTestsBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tests are over ", kMaxTestsBytes, " bytes"));
  }
  size_t seed = 0;
  for (const auto& [path, content] : spec.files()) {
    if (!FileBlockParser::IsSafePath(path) || path == "_anima_run_tests.py") {
      return absl::InvalidArgumentError("files: \"" + path.substr(0, 100) +
                                        "\" is not a safe relative path");
    }
    seed += content.size();
  }
  if (seed > kMaxSeedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("files are over ", kMaxSeedBytes, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status Admit(const common::Identity& who, const AdmissionCounts& counts,
                   const AdmissionLimits& limits, int64_t now_unix_ms) {
  const common::JobLimits& quota = who.job_limits;
  if (quota.in_flight > 0 && counts.principal_in_flight >= quota.in_flight) {
    return Refusal("quota_exceeded", "jobs_in_flight",
                   absl::StrCat("you have ", counts.principal_in_flight,
                                " self-coding jobs queued or running, the most your quota "
                                "allows; submit again when one has ended"),
                   kRetryWhenBusy.count());
  }
  if (quota.per_day > 0 && counts.principal_today >= quota.per_day) {
    return Refusal("quota_exceeded", "jobs_per_day",
                   absl::StrCat("you have submitted ", counts.principal_today,
                                " self-coding jobs today (UTC), the most your quota allows"),
                   kDayMs - now_unix_ms % kDayMs);
  }
  if (counts.principal_queued >= limits.max_queued_per_principal) {
    return Refusal("overloaded", "",
                   absl::StrCat("you have ", counts.principal_queued,
                                " self-coding jobs waiting, the most one principal may hold in "
                                "this queue of ",
                                limits.queue_size),
                   kRetryWhenBusy.count());
  }
  if (counts.queued >= limits.queue_size) {
    return Refusal(
        "overloaded", "",
        absl::StrCat("the self-coding queue is full (", limits.queue_size, " jobs waiting)"),
        kRetryWhenBusy.count());
  }
  return absl::OkStatus();
}

}  // namespace anima::selfcoding
