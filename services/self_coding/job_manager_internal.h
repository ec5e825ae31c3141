#pragma once

// What job_manager.cc and job_runs.cc, the two halves of JobManager, share.

#include <chrono>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace anima::selfcoding::internal {

// Jobs ended between two prunes of the store.
inline constexpr int kPruneEvery = 20;

// What another principal's job and an unknown id both get, word for word.
inline absl::Status UnknownJob(const std::string& job_id) {
  return absl::NotFoundError("unknown job " + job_id);
}

// The store could not be reached in time (or a transaction lost a conflict): try again later.
inline bool Transient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) || absl::IsAborted(status);
}

inline absl::Status StoreUnavailable(const absl::Status& status) {
  return absl::UnavailableError(absl::StrCat("job store unavailable: ", status.message()));
}

// The store's NotFound in the words of UnknownJob; its outages as Unavailable.
inline absl::Status FromStore(const absl::Status& status, const std::string& job_id) {
  if (status.code() == absl::StatusCode::kNotFound) return UnknownJob(job_id);
  if (Transient(status)) return StoreUnavailable(status);
  return status;
}

// At most one log line per interval from one place (a store outage must not flood the log).
class LogLimiter {
 public:
  bool Allow() {
    auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    if (now < next_) return false;
    next_ = now + std::chrono::seconds(10);
    return true;
  }

 private:
  std::mutex mu_;
  std::chrono::steady_clock::time_point next_;
};

}  // namespace anima::selfcoding::internal
