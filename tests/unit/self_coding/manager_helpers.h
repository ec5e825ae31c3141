#pragma once

// Driving a JobManager as the RPC edge does: watching a job to its end through Next(), and
// cancelling with a wait for the answer.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

#include "gtest/gtest.h"
#include "services/self_coding/job_manager.h"
#include "tests/unit/self_coding/fakes.h"

namespace anima::selfcoding::testing {

// Every event of a job and its result, read through Next() like a watcher does.
struct Watched {
  std::vector<anima::v1::SelfCodingProgress> events;
  anima::v1::SelfCodingResult result;
  bool ended = false;
};

// The wake-up a manager may call after the watcher has given up, so it is shared.
struct WakeFlag {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
};

inline Watched WatchToEnd(JobManager& manager, const std::string& job_id, int64_t after_seq = 0,
                          const common::Identity& who = {}) {
  Watched out;
  auto flag = std::make_shared<WakeFlag>();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  while (std::chrono::steady_clock::now() < deadline) {
    auto batch = manager.Next(who, job_id, after_seq, [flag] {
      std::lock_guard lock(flag->mu);
      flag->woken = true;
      flag->cv.notify_all();
    });
    EXPECT_TRUE(batch.ok()) << batch.status();
    if (!batch.ok()) return out;
    for (auto& e : batch->events) {
      after_seq = e.seq();
      out.events.push_back(e);
    }
    if (batch->result) {
      out.result = *batch->result;
      out.ended = true;
      return out;
    }
    if (batch->events.empty()) {
      std::unique_lock lock(flag->mu);
      flag->cv.wait_until(lock, deadline, [&] { return flag->woken; });
      flag->woken = false;
    }
  }
  return out;
}

inline absl::StatusOr<anima::v1::SelfCodingResult> CancelAndWait(JobManager& manager,
                                                                 const std::string& job_id,
                                                                 const common::Identity& who = {}) {
  struct Answer {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<absl::StatusOr<anima::v1::SelfCodingResult>> result;
  };
  auto answer = std::make_shared<Answer>();
  manager.Cancel(who, job_id, [answer](absl::StatusOr<anima::v1::SelfCodingResult> r) {
    std::lock_guard lock(answer->mu);
    answer->result = std::move(r);
    answer->cv.notify_all();
  });
  std::unique_lock lock(answer->mu);
  answer->cv.wait_for(lock, std::chrono::seconds(60), [&] { return answer->result.has_value(); });
  if (!answer->result) return absl::DeadlineExceededError("cancel did not answer");
  return *answer->result;
}

inline anima::v1::SubmitRequest PythonSpec(int max_attempts = 3) {
  anima::v1::SubmitRequest spec;
  spec.set_task("Write add(a, b) in solution.py.");
  spec.set_tests(kPythonTests);
  spec.set_max_attempts(max_attempts);
  return spec;
}

}  // namespace anima::selfcoding::testing
