#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "services/self_coding/broker_client.h"
#include "services/self_coding/job_store.h"
#include "services/self_coding/pipeline.h"
#include "services/self_coding/sandbox.h"

namespace anima::selfcoding::testing {

// Answers with scripted replies in order (the last one repeats); records every prompt. A reply
// of kBlock waits until the call is cancelled; kGate waits until OpenGate() (then answers with
// the next reply) or the call is cancelled.
class FakeBroker : public BrokerClient {
 public:
  static constexpr char kBlock[] = "<block>";
  static constexpr char kGate[] = "<gate>";
  explicit FakeBroker(std::vector<std::string> replies)
      : replies_(replies.begin(), replies.end()) {}

  absl::StatusOr<anima::v1::CompletionResponse> Complete(
      const anima::v1::CompletionRequest& request, CancelToken* cancel) override {
    std::string reply;
    {
      std::lock_guard lock(mu_);
      prompts_.push_back(request.messages(request.messages_size() - 1).content());
      reply = replies_.front();
      if (replies_.size() > 1) replies_.pop_front();
    }
    cv_.notify_all();
    if (reply == kBlock || reply == kGate) {
      bool gate = reply == kGate;
      int id = cancel->OnCancel([this] {
        { std::lock_guard lock(mu_); }
        cv_.notify_all();
      });
      {
        std::unique_lock lock(mu_);
        blocked_++;
        cv_.notify_all();
        cv_.wait_for(lock, std::chrono::seconds(30),
                     [&] { return cancel->cancelled() || (gate && gate_open_); });
        if (gate && gate_open_ && !cancel->cancelled()) {
          reply = replies_.front();
          if (replies_.size() > 1) replies_.pop_front();
        }
      }
      cancel->Remove(id);
      if (reply == kBlock || reply == kGate) return absl::CancelledError("cancelled");
    }
    anima::v1::CompletionResponse response;
    response.set_message(reply);
    response.mutable_usage()->set_prompt_tokens(100);
    response.mutable_usage()->set_completion_tokens(20);
    response.mutable_usage()->set_total_tokens(120);
    return response;
  }

  void OpenGate() {
    {
      std::lock_guard lock(mu_);
      gate_open_ = true;
    }
    cv_.notify_all();
  }

  bool WaitBlocked(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return blocked_ >= n; });
  }
  std::vector<std::string> prompts() {
    std::lock_guard lock(mu_);
    return prompts_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> replies_;
  std::vector<std::string> prompts_;
  int blocked_ = 0;
  bool gate_open_ = false;
};

// The sandbox the tests use: bubblewrap when it works here, else unsandboxed.
inline std::unique_ptr<Sandbox> TestSandbox() {
  auto sandbox = MakeSandbox(SandboxMode::kBubblewrap);
  if (sandbox->Available().ok()) return sandbox;
  return MakeSandbox(SandboxMode::kNone);
}

// A fresh directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("anima-sc-test-" + std::to_string(getpid()) + "-" + std::to_string(++counter));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline constexpr char kGoodPython[] =
    "Plan: write add.\n\n```python title=\"solution.py\"\ndef add(a, b):\n    return a + b\n```\n";
inline constexpr char kBadPython[] =
    "```python title=\"solution.py\"\ndef add(a, b):\n    return a - b\n```\n";
inline constexpr char kPythonTests[] =
    "from solution import add\n\ndef test_add():\n    assert add(2, 3) == 5\n\n"
    "def test_zero():\n    assert add(0, 0) == 0\n";

// A queued job as a store test stores it.
inline JobRecord NewJob(const std::string& id, int64_t created_ms,
                        const std::string& status = kQueued,
                        const std::string& principal = "local") {
  JobRecord job;
  job.job_id = id;
  job.principal = principal;
  job.status = status;
  job.spec.set_task("task of " + id);
  job.spec.set_language("python");
  job.created_at = "2026-11-25T10:00:00.000Z";
  job.created_unix_ms = created_ms;
  return job;
}

// Event `seq` of job `id`, with a percent, message and time that follow from seq.
inline anima::v1::SelfCodingProgress Event(const std::string& id, int64_t seq,
                                           const std::string& stage) {
  anima::v1::SelfCodingProgress e;
  e.set_job_id(id);
  e.set_seq(seq);
  e.set_stage(stage);
  e.set_percent(static_cast<int>(seq * 10));
  e.set_message("message " + std::to_string(seq));
  e.set_ts("2026-11-25T10:00:0" + std::to_string(seq % 10) + ".000Z");
  return e;
}

}  // namespace anima::selfcoding::testing
