#pragma once

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "anima/v1/self_coding.pb.h"
#include "services/common/identity.h"
#include "services/self_coding/job_store.h"

namespace anima::selfcoding {

// What a Submit must pass before its job is stored: the request itself, then the limits, decided
// on counts the store read in the transaction that stores the job. No I/O.

// A Submit refused by a quota or a full queue carries an anima.v1.BrokerFailure (serialized)
// under this payload URL: the protocol's code (quota_exceeded or overloaded), `limit` for a quota
// (jobs_in_flight, jobs_per_day) and retry_after_ms. The RPC edge sends it as the status details.
inline constexpr char kFailurePayloadUrl[] = "type.googleapis.com/anima.v1.BrokerFailure";
// The retry hint when a job has to end before another fits (in-flight quota, queue full): jobs
// take seconds to minutes and nothing predicts which ends first, so this is a polling interval,
// not a promise.
inline constexpr std::chrono::milliseconds kRetryWhenBusy{1000};

struct AdmissionLimits {
  int64_t queue_size = 16;               // queued jobs, every principal's and replica's
  int64_t max_queued_per_principal = 8;  // queued jobs of one principal
};

// InvalidArgument naming the field for a bad request; fills in the defaults (language,
// max_attempts).
absl::Status ValidateRequest(anima::v1::SubmitRequest& spec);

// OK, or the ResourceExhausted refusal (with a kFailurePayloadUrl payload) of a job of `who`
// given `counts`: who's quotas (jobs_in_flight, jobs_per_day, retry at the next UTC midnight of
// now_unix_ms), then its share of the queue and the queue's size (overloaded).
absl::Status Admit(const common::Identity& who, const AdmissionCounts& counts,
                   const AdmissionLimits& limits, int64_t now_unix_ms);

}  // namespace anima::selfcoding
