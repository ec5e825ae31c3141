#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace anima::cli {

// Everything the subcommands read from the command line (see main.cc for the flag names).
struct CliOptions {
  std::string url = "ws://127.0.0.1:3002/";
  std::string token;
  bool insecure = false;
  std::string ca_file;
  bool verbose = false;
  int timeout_ms = 0;  // 0: the command's default (chat 120000, send/state 30000, watch: none)

  bool stream = false;
  std::string provider;
  std::string model;
  std::string system;
  std::string strategy;
  std::string conversation_id;

  bool compact = false;
  bool json = false;  // state/jobs: print the frames, not tables
  bool all = false;
  bool raw_binary = false;

  std::string request_file;  // code: a self_coding_request frame to take the fields from
  std::string language;      // code
  std::string tests_file;    // code: test code the result must pass
  std::string files_dir;     // code: the starting workspace
  std::string out_dir;       // code/watch: write the result's files here
  int max_attempts = 0;      // code: 0 is the service's default (3)
  int64_t after_seq = 0;     // watch: the events after this one
  std::string status;        // jobs: only jobs with this status
  int limit = 0;             // jobs: how many, newest first (0: the gateway's default, 20)
};

// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitErrorFrame = 1;  // the gateway answered with an `error` frame
inline constexpr int kExitUsage = 2;
inline constexpr int kExitTimeout = 3;
inline constexpr int kExitConnection = 4;  // could not connect, or the connection ended early
inline constexpr int kExitInterrupted = 130;

// `chat "message"` (one exchange) or `chat` with no message (one exchange per stdin line).
int RunChat(const CliOptions& options, const std::vector<std::string>& message_words);
// `send FRAME` or `send -` (one frame per stdin line).
int RunSend(const CliOptions& options, const std::string& frame_or_dash);
// `state`: one consciousness_query, printed.
int RunState(const CliOptions& options);
// `watch-state`: every consciousness_state broadcast, until Ctrl-C or --timeout-ms.
int RunWatchState(const CliOptions& options);
// `jobs`: the principal's self-coding jobs (every principal's with --all, admins only), newest
// first, as a table.
int RunJobs(const CliOptions& options);
// `code "TASK"`: a self-coding job, its progress drawn until its result, which is printed (and
// its files written with --out). Exit 0 when it succeeded, 1 when it failed or was cancelled.
int RunCode(const CliOptions& options, const std::vector<std::string>& task_words);
// `watch JOB`: the same for a job already submitted, from --after SEQ.
int RunWatch(const CliOptions& options, const std::vector<std::string>& args);

}  // namespace anima::cli
