#include "services/self_coding/pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "services/self_coding/file_blocks.h"
#include "services/self_coding/prompts.h"
#include "services/self_coding/test_harness.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMessageTailBytes = 2048;

struct AttemptOutcome {
  bool success = false;
  bool cancelled = false;
  std::string stage;   // where it failed
  std::string reason;  // one line
  std::string output;  // tool output, already cut to a tail
  anima::v1::TestOutcome tests;
  std::map<std::string, std::string> files;  // what the model wrote
};

// Percent for a stage of an attempt: attempts share 5..95 evenly; the job's sink keeps the
// sequence monotonic across retries.
int PercentAt(int attempt, int max_attempts, double fraction) {
  double span = 90.0 / max_attempts;
  return static_cast<int>(5 + (attempt - 1) * span + fraction * span);
}

// The counts a C++ test program printed itself: shown, never trusted for success.
bool ParseTestCounts(const std::string& output, int* passed, int* failed) {
  size_t at = output.rfind("ANIMA_TESTS passed=");
  if (at == std::string::npos) return false;
  return std::sscanf(output.c_str() + at, "ANIMA_TESTS passed=%d failed=%d", passed, failed) == 2;
}

class Timer {
 public:
  Timer(ProgressSink* sink, std::string stage)
      : sink_(sink), stage_(std::move(stage)), start_(std::chrono::steady_clock::now()) {}
  ~Timer() {
    sink_->StageDone(
        stage_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }

 private:
  ProgressSink* sink_;
  std::string stage_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

std::string Tail(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  static constexpr char kMark[] = "[... cut ...]\n";
  size_t keep = max_bytes > sizeof(kMark) ? max_bytes - (sizeof(kMark) - 1) : 0;
  size_t start = text.size() - keep;
  // Prefer a line start within the first quarter of what is kept.
  size_t newline = text.find('\n', start);
  if (newline != std::string::npos && newline + 1 - start < keep / 4) start = newline + 1;
  // Never start inside a UTF-8 sequence.
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) start++;
  return kMark + text.substr(start);
}

// The checkpoint travels as a SelfCodingResult, a message that already holds each of its parts:
// status = the failed stage, reason, tests.output_tail = the output, files, usage, attempts =
// the next attempt. A Feedback without a stage is absent.
std::string EncodeCheckpoint(const Checkpoint& checkpoint) {
  anima::v1::SelfCodingResult carrier;
  carrier.set_attempts(checkpoint.next_attempt);
  *carrier.mutable_usage() = checkpoint.usage;
  if (checkpoint.feedback) {
    carrier.set_status(checkpoint.feedback->stage);
    carrier.set_reason(checkpoint.feedback->reason);
    carrier.mutable_tests()->set_output_tail(checkpoint.feedback->output);
    *carrier.mutable_files() = {checkpoint.feedback->files.begin(),
                                checkpoint.feedback->files.end()};
  }
  return carrier.SerializeAsString();
}

std::optional<Checkpoint> DecodeCheckpoint(const std::string& bytes) {
  anima::v1::SelfCodingResult carrier;
  if (bytes.empty() || !carrier.ParseFromString(bytes) || carrier.attempts() < 1) {
    return std::nullopt;
  }
  Checkpoint checkpoint;
  checkpoint.next_attempt = carrier.attempts();
  checkpoint.usage = carrier.usage();
  if (!carrier.status().empty()) {
    checkpoint.feedback = Feedback{carrier.status(),
                                   carrier.reason(),
                                   carrier.tests().output_tail(),
                                   {carrier.files().begin(), carrier.files().end()}};
  }
  return checkpoint;
}

anima::v1::SelfCodingResult JobPipeline::Run(const anima::v1::SubmitRequest& spec,
                                             const std::string& job_id, const std::string& work_dir,
                                             ProgressSink* sink, CancelToken* cancel,
                                             const Checkpoint* resume) {
  anima::v1::SelfCodingResult result;
  result.set_job_id(job_id);
  const LanguageProfile* lang = FindLanguage(spec.language());
  int max_attempts = std::clamp(spec.max_attempts() > 0 ? spec.max_attempts() : 3, 1, 5);
  auto* usage = result.mutable_usage();
  auto cancelled = [&] {
    result.set_status("cancelled");
    result.set_reason("cancelled");
    return result;
  };
  if (lang == nullptr) {
    result.set_status("failed");
    result.set_reason("unsupported language " + spec.language());
    return result;
  }
  std::optional<Feedback> feedback;
  AttemptOutcome last;
  int first_attempt = 1;
  if (resume != nullptr) {
    first_attempt = std::clamp(resume->next_attempt, 1, max_attempts);
    feedback = resume->feedback;
    *usage = resume->usage;
    if (feedback) last.files = feedback->files;
  }
  for (int attempt = first_attempt; attempt <= max_attempts; ++attempt) {
    if (cancel->cancelled()) return cancelled();
    result.set_attempts(attempt);
    auto pct = [&](double f) { return PercentAt(attempt, max_attempts, f); };
    AttemptOutcome out;
    out.stage = kStageGenerating;

    anima::v1::CompletionRequest request;
    request.set_request_id(spec.request_id());
    request.set_system(SystemPrompt(*lang));
    if (!options_.model.empty()) request.set_model(options_.model);
    {
      Timer t(sink, kStagePlanning);
      sink->Progress(
          kStagePlanning, attempt, pct(0),
          absl::StrCat("attempt ", attempt, " of ", max_attempts, ": ",
                       feedback ? "asking for a fix of the " + feedback->stage + " failure"
                                : "asking for " + lang->default_file +
                                      (spec.tests().empty() ? " and tests" : "")));
      auto* message = request.add_messages();
      message->set_role("user");
      message->set_content(AttemptPrompt(spec, *lang, attempt, feedback ? &*feedback : nullptr));
    }
    absl::StatusOr<anima::v1::CompletionResponse> reply;
    {
      Timer t(sink, kStageGenerating);
      sink->Progress(kStageGenerating, attempt, pct(0.1), "waiting for the model");
      reply = broker_->Complete(request, cancel);
    }
    if (cancel->cancelled()) return cancelled();
    ParsedFiles parsed;
    if (!reply.ok()) {
      out.reason = std::string(reply.status().message());
    } else {
      usage->set_prompt_tokens(usage->prompt_tokens() + reply->usage().prompt_tokens());
      usage->set_completion_tokens(usage->completion_tokens() + reply->usage().completion_tokens());
      usage->set_total_tokens(usage->total_tokens() + reply->usage().total_tokens());
      parsed = FileBlockParser().Parse(reply->message());
      if (parsed.files.empty()) {
        // A lone unnamed block in the right language is the solution file.
        for (auto& block : parsed.unnamed) {
          if (block.language.empty() || FindLanguage(block.language) == lang) {
            block.path = lang->default_file;
            parsed.files.push_back(block);
            break;
          }
        }
      }
      size_t total = 0;
      for (const auto& f : parsed.files) {
        if (f.path == lang->tests_file && !spec.tests().empty()) continue;  // the tests are fixed
        if (IsHarnessFile(f.path)) continue;
        out.files[f.path] = f.content;
        total += f.content.size();
      }
      if (out.files.empty()) {
        out.reason = "the reply had no files: answer with fenced code blocks that name each file";
      } else if (total > options_.max_files_bytes) {
        out.reason = absl::StrCat("the files are too large (", total, " bytes, at most ",
                                  options_.max_files_bytes, ")");
      } else if (spec.tests().empty() && !out.files.contains(lang->tests_file)) {
        out.reason = "no tests were given and the reply did not write " + lang->tests_file;
      }
    }

    std::unique_ptr<Workspace> workspace;
    // What goes in the workspace: the starting files, the model's (which may replace them), the
    // fixed tests, then the harness; later entries win.
    std::map<std::string, std::string> to_write;
    if (out.reason.empty()) {
      Timer t(sink, kStageWriting);
      out.stage = kStageWriting;
      std::string names;
      for (const auto& [path, _] : out.files)
        absl::StrAppend(&names, names.empty() ? "" : ", ", path);
      sink->Progress(kStageWriting, attempt, pct(0.5), "writing " + names);
      for (const auto& [path, content] : spec.files()) {
        if (!IsHarnessFile(path)) to_write[path] = content;
      }
      for (const auto& [path, content] : out.files) to_write[path] = content;
      if (!spec.tests().empty()) to_write[lang->tests_file] = spec.tests();
      for (const auto& [path, content] : HarnessFiles(lang->compiled)) to_write[path] = content;
      AttemptContext context{.job_id = job_id, .cancel = cancel, .waiting = {}};
      context.waiting = [&](const std::string& reason) {
        sink->Progress(kStageQueued, attempt, pct(0.5), reason);
      };
      absl::StatusOr<std::unique_ptr<Workspace>> created = absl::UnknownError("not created");
      {
        // How long getting a sandbox takes (a claimed pod's wait): for sizing a warm pool.
        Timer sandbox_wait(sink, "sandbox");
        created = sandbox_->CreateWorkspace(work_dir, absl::StrCat("attempt-", attempt),
                                            options_.workspace_limits, context);
      }
      absl::Status s = created.status();
      if (s.ok()) workspace = *std::move(created);
      for (auto it = to_write.begin(); s.ok() && it != to_write.end(); ++it) {
        s = workspace->WriteFile(it->first, it->second);
      }
      if (!s.ok()) out.reason = std::string(s.message());
    }

    if (out.reason.empty() && lang->compiled) {
      Timer t(sink, kStageBuilding);
      out.stage = kStageBuilding;
      std::vector<std::string> sources;
      for (const auto& [path, _] : to_write) {
        std::string ext = fs::path(path).extension().string();
        if (!IsHarnessFile(path) && (ext == ".cpp" || ext == ".cc" || ext == ".cxx")) {
          sources.push_back(path);
        }
      }
      sink->Progress(kStageBuilding, attempt, pct(0.6),
                     absl::StrCat("compiling ", sources.size(), " source files with g++"));
      SandboxCommand command;
      command.argv = CppBuildCommand(sources);
      command.limits = options_.build_limits;
      auto run = sandbox_->Run(command, *workspace, cancel);
      if (cancel->cancelled()) return cancelled();
      if (!run.ok()) {
        out.reason = "sandbox: " + std::string(run.status().message());
      } else if (!run->ok()) {
        out.output = Tail(run->output, options_.output_tail_bytes);
        out.reason = run->reason.empty()
                         ? absl::StrCat("the compiler failed (exit ", run->exit_code, ")")
                         : "the build was stopped: " + run->reason;
      }
    }

    if (out.reason.empty()) {
      Timer t(sink, kStageTesting);
      out.stage = kStageTesting;
      sink->Progress(kStageTesting, attempt, pct(0.75), "running " + lang->tests_file);
      const std::string nonce = NewNonce();
      SandboxCommand command;
      command.argv = TestCommand(lang->compiled);
      command.limits = options_.test_limits;
      command.input = nonce + "\n";
      command.report = true;
      auto run = sandbox_->Run(command, *workspace, cancel);
      if (cancel->cancelled()) return cancelled();
      if (!run.ok()) {
        out.reason = "sandbox: " + std::string(run.status().message());
      } else {
        std::optional<ReportedResult> reported = ParseReport(run->report, nonce);
        int passed = 0, failed = 0;
        if (reported && !lang->compiled) {
          passed = reported->passed;
          failed = reported->failed;
        } else if (!ParseTestCounts(run->output, &passed, &failed)) {
          passed = run->ok() ? 1 : 0;
          failed = run->ok() ? 0 : 1;
        }
        bool reported_pass =
            reported && reported->failed == 0 && reported->exit_code.value_or(0) == 0;
        bool success = run->ok() && reported_pass && failed == 0;
        if (!success && failed == 0) failed = 1;
        if (!success && !reported) passed = 0;
        out.tests.set_passed(passed);
        out.tests.set_failed(failed);
        out.tests.set_output_tail(Tail(run->output, options_.output_tail_bytes));
        out.output = out.tests.output_tail();
        if (success) {
          out.success = true;
        } else if (!run->reason.empty()) {
          out.reason = "the tests were stopped: " + run->reason;
        } else if (!reported) {
          out.reason = absl::StrCat(
              "the tests ended without the harness reporting a result (exit ", run->exit_code,
              "): something exited the process before every test ran (exit(), os._exit(), "
              "sys.exit() at import), and a \"passed\" printed by the code itself does not count");
        } else {
          out.reason = absl::StrCat(failed, failed == 1 ? " test" : " tests", " failed (exit ",
                                    run->exit_code, ")");
        }
      }
    }
    workspace.reset();

    if (!out.files.empty() || last.files.empty()) {
      *result.mutable_files() = {out.files.begin(), out.files.end()};
    }
    *result.mutable_tests() = out.tests;
    if (out.success) {
      result.set_status("succeeded");
      return result;
    }
    if (!out.files.empty()) last.files = out.files;
    last.stage = out.stage;
    last.reason = out.reason;
    if (attempt < max_attempts) {
      std::string message =
          absl::StrCat("attempt ", attempt, " failed while ", out.stage, ": ", out.reason);
      if (!out.output.empty()) absl::StrAppend(&message, "\n", Tail(out.output, kMessageTailBytes));
      // A broker failure gives the model nothing to fix: keep the previous feedback, if any.
      if (!out.files.empty() || out.stage != kStageGenerating || !feedback) {
        feedback = Feedback{out.stage, out.reason, out.output, last.files};
      }
      sink->Checkpointed(Checkpoint{attempt + 1, feedback, *usage});
      sink->Progress(kStageRetrying, attempt, pct(1.0), message);
    }
  }
  result.set_status("failed");
  result.set_reason(absl::StrCat("failed after ", result.attempts(),
                                 result.attempts() == 1 ? " attempt" : " attempts", ": ",
                                 last.stage, ": ", last.reason));
  return result;
}

}  // namespace anima::selfcoding
