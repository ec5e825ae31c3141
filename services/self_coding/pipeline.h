#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "anima/v1/self_coding.pb.h"
#include "services/self_coding/broker_client.h"
#include "services/self_coding/cancel_token.h"
#include "services/self_coding/prompts.h"
#include "services/self_coding/sandbox.h"

namespace anima::selfcoding {

// Stage names as sent in progress events (PROTOCOL.md §3).
inline constexpr char kStageQueued[] = "queued";
inline constexpr char kStagePlanning[] = "planning";
inline constexpr char kStageGenerating[] = "generating";
inline constexpr char kStageWriting[] = "writing";
inline constexpr char kStageBuilding[] = "building";
inline constexpr char kStageTesting[] = "testing";
inline constexpr char kStageRetrying[] = "retrying";

// Where a job continues when it is run again after its worker was lost or gave it back: the
// attempt to run, and what the attempt before it left (its failure for the retry prompt, its
// files, the tokens spent so far). Stored with the job (JobUpdate::checkpoint) in the same
// transaction as the `retrying` event, so a re-run asks the model what the lost run would have.
struct Checkpoint {
  int next_attempt = 1;
  std::optional<Feedback> feedback;
  anima::v1::Usage usage;
};
std::string EncodeCheckpoint(const Checkpoint& checkpoint);
// nullopt for an empty or unreadable one (the job then re-runs its attempt without feedback).
std::optional<Checkpoint> DecodeCheckpoint(const std::string& bytes);

// Receives the pipeline's progress. Called on the job's worker thread.
class ProgressSink {
 public:
  virtual ~ProgressSink() = default;
  virtual void Progress(const std::string& stage, int attempt, int percent,
                        const std::string& message) = 0;
  // How long a stage took (for metrics).
  virtual void StageDone(const std::string& stage, double seconds) {}
  // Called just before the `retrying` Progress, which should store it with its event.
  virtual void Checkpointed(const Checkpoint& checkpoint) {}
};

struct PipelineOptions {
  SandboxLimits build_limits{.cpu_seconds = 60,
                             .memory_bytes = 2LL << 30,
                             .max_processes = 64,
                             .file_size_bytes = 64LL << 20,
                             .output_bytes = 1LL << 20,
                             .wall_time = std::chrono::seconds(120)};
  SandboxLimits test_limits;
  // Per attempt: the files written into the workspace and what the build and tests write.
  WorkspaceLimits workspace_limits;
  std::string model;                   // empty: the broker's default
  size_t output_tail_bytes = 4096;     // per event and in the result
  size_t max_files_bytes = 24 * 1024;  // model-written files per attempt
};

// Cuts `text` to its last `max_bytes`, at a line start when one is near, never inside a UTF-8
// sequence, marking the cut.
std::string Tail(const std::string& text, size_t max_bytes);

// Runs one job: attempts of plan, generate, write, build, test; retries with the failure fed
// back. Stateless between jobs, so one instance serves every worker.
class JobPipeline {
 public:
  JobPipeline(BrokerClient* broker, Sandbox* sandbox, PipelineOptions options)
      : broker_(broker), sandbox_(sandbox), options_(std::move(options)) {}

  // `work_dir` is a directory this job owns (a sandbox that keeps workspaces on disk makes each
  // attempt's there; bubblewrap keeps them in memory). The result has status succeeded, failed
  // (with reason) or cancelled; job_id is left to the caller.
  // `resume`: run from that checkpoint's attempt (a job run again), else from attempt 1.
  anima::v1::SelfCodingResult Run(const anima::v1::SubmitRequest& spec, const std::string& job_id,
                                  const std::string& work_dir, ProgressSink* sink,
                                  CancelToken* cancel, const Checkpoint* resume = nullptr);

 private:
  BrokerClient* broker_;
  Sandbox* sandbox_;
  PipelineOptions options_;
};

}  // namespace anima::selfcoding
