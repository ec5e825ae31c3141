#pragma once

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
  bool all = false;
  bool raw_binary = false;
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

}  // namespace anima::cli
