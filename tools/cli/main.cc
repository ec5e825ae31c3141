// anima-cli: a terminal client for the Anima WebSocket protocol (PROTOCOL.md).
#include <iostream>
#include <string>
#include <vector>

#include "services/common/flags.h"
#include "tools/cli/commands.h"

namespace {

constexpr char kCommands[] = R"(anima-cli COMMAND [flags] [arguments]

commands:
  chat [--stream] [--provider P] [--model M] "message"
      Sends one chat message and prints the reply on stdout (deltas as they arrive with
      --stream), then provider/model/usage/latency on stderr.
  chat
      Interactive: one chat message per stdin line, keeping the conversation_id, until EOF.
  send 'FRAME' | send -
      Sends a raw frame (or one frame per stdin line) and prints every frame answering it until
      the terminal frame of each (chat_response, error, pong, consciousness_state,
      self_coding_result, subscribed, unsubscribed). --all prints everything, broadcasts
      included, until Ctrl-C or --timeout-ms.
  state
      Asks for the consciousness state once and prints it as a table: harmony, load, and one
      row per module (--json: the frame itself).
  watch-state
      Prints every consciousness_state broadcast until Ctrl-C (or --timeout-ms), as state does.
  code [--tests FILE] [--files DIR] [--language L] [--max-attempts N] [--out DIR] "task"
  code --request FILE [...]
      Submits a self-coding job and follows it: a live progress bar (percent, stage, attempt,
      elapsed) when stdout is a terminal, one plain line per event otherwise; then the result,
      and its files printed, or written under --out DIR. Exit 0 when the job succeeded, 1 when
      it failed or was cancelled; Ctrl-C leaves the job running and says how to watch it again.
      --request takes task, language, tests, files and max_attempts from a self_coding_request
      frame in a file (docs/examples/self-coding-demo.json); flags and a task given override it.
  watch JOB [--after SEQ] [--out DIR]
      Follows a job already submitted, as code does, from the events after SEQ.
  jobs [--status S] [--limit N] [--all]
      Lists your self-coding jobs, newest first: id, status, attempts, language, last update,
      task (--all: every principal's, admins only; --json: the frame itself).

exit codes: 0 ok, 1 an error frame (or code/watch: the job failed), 2 usage, 3 timeout,
            4 connection failed or ended early, 130 interrupted.

)";

}  // namespace

int main(int argc, char** argv) {
  using anima::cli::CliOptions;
  CliOptions o;
  anima::common::FlagSet flags("anima-cli");
  flags.Add("url", &o.url, "ANIMA_CLI_URL", "gateway WebSocket URL, ws:// or wss://");
  flags.Add("token", &o.token, "ANIMA_CLI_TOKEN", "bearer token for the upgrade request");
  flags.Add("insecure", &o.insecure, "", "wss://: do not verify the server certificate");
  flags.Add("ca-file", &o.ca_file, "ANIMA_CLI_CA_FILE", "wss://: extra trusted CA bundle (PEM)");
  flags.Add("verbose", &o.verbose, "", "print the welcome frame and unrelated frames to stderr");
  flags.Add("timeout-ms", &o.timeout_ms, "",
            "give up after this long without the answer; 0: chat 120000, send/state 30000, "
            "code/watch 1800000, watch-state never");
  flags.Add("stream", &o.stream, "", "chat: ask for streamed deltas and print them as they come");
  flags.Add("provider", &o.provider, "", "chat: provider (openai, venice, gemini, ...)");
  flags.Add("model", &o.model, "", "chat: model");
  flags.Add("system", &o.system, "", "chat: system prompt");
  flags.Add("strategy", &o.strategy, "", "chat: failover, hedge, race or fanout");
  flags.Add("conversation-id", &o.conversation_id, "", "chat: continue this conversation");
  flags.Add("compact", &o.compact, "", "send/state/jobs: print frames on one line");
  flags.Add("json", &o.json, "", "state/jobs: print the frames (indented), not tables");
  flags.Add("all", &o.all, "",
            "send: print every frame, broadcasts included, until timeout; jobs: every "
            "principal's jobs (admins)");
  flags.Add("raw-binary", &o.raw_binary, "", "send: send the frames as binary WebSocket frames");
  flags.Add("request", &o.request_file, "", "code: a self_coding_request frame (JSON file)");
  flags.Add("language", &o.language, "", "code: python (default) or cpp");
  flags.Add("tests", &o.tests_file, "", "code: a file of test code the result must pass");
  flags.Add("files", &o.files_dir, "", "code: a directory whose files are the starting workspace");
  flags.Add("max-attempts", &o.max_attempts, "", "code: 1 to 5; 0 leaves it to the service (3)");
  flags.Add("out", &o.out_dir, "", "code/watch: write the result's files under this directory");
  flags.Add("after", &o.after_seq, "", "watch: only the events after this seq");
  flags.Add("status", &o.status, "",
            "jobs: only queued, running, succeeded, failed or cancelled jobs");
  flags.Add("limit", &o.limit, "", "jobs: at most this many (1 to 100; 0: 20)");

  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    std::cerr << "anima-cli: " << s.message() << "\n";
    return anima::cli::kExitUsage;
  }
  const std::vector<std::string>& args = flags.positional();
  if (flags.help_requested() || args.empty()) {
    (flags.help_requested() ? std::cout : std::cerr) << kCommands << flags.Usage();
    return flags.help_requested() ? 0 : anima::cli::kExitUsage;
  }
  const std::string& command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  try {
    if (command == "chat") return anima::cli::RunChat(o, rest);
    if (command == "send") {
      if (rest.size() != 1) {
        std::cerr << "anima-cli: send takes one frame, or - to read frames from stdin\n";
        return anima::cli::kExitUsage;
      }
      return anima::cli::RunSend(o, rest[0]);
    }
    if (command == "code") return anima::cli::RunCode(o, rest);
    if (command == "watch") return anima::cli::RunWatch(o, rest);
    if (command == "state" || command == "watch-state" || command == "jobs") {
      if (!rest.empty()) {
        std::cerr << "anima-cli: " << command << " takes no arguments\n";
        return anima::cli::kExitUsage;
      }
      if (command == "jobs") return anima::cli::RunJobs(o);
      return command == "state" ? anima::cli::RunState(o) : anima::cli::RunWatchState(o);
    }
    std::cerr << "anima-cli: unknown command \"" << command << "\"; see --help\n";
    return anima::cli::kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "anima-cli: " << e.what() << "\n";
    return anima::cli::kExitConnection;
  }
}
