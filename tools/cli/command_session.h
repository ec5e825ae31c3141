#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "tools/cli/commands.h"
#include "tools/cli/ws_client.h"

namespace anima::cli {

// The frame of every subcommand: one io_context on the calling thread, one WebSocket
// connection, a timeout, Ctrl-C handling and an optional reader of stdin lines. Subclasses react
// to frames; everything runs on the thread that called Run().
class CommandSession {
 public:
  explicit CommandSession(const CliOptions& options);
  virtual ~CommandSession();

  // Connects, runs until Finish() and returns the exit code.
  int Run();

 protected:
  virtual void OnConnected() = 0;
  // `frame` is the parsed JSON, or null when the text was not JSON (or the frame was binary).
  virtual void OnFrame(const std::string& text, const nlohmann::json& frame, bool binary) = 0;
  // A stdin line, or nullopt at end of input. Only after StartReadingStdin().
  virtual void OnStdinLine(std::optional<std::string> line) {}
  virtual void OnTimeout();
  virtual void OnInterrupt();
  // The connection ended before Finish(); the session then ends with kExitConnection.
  virtual void OnConnectionLost() {}

  // Reads stdin on a helper thread and delivers each line through OnStdinLine on this thread.
  void StartReadingStdin();
  // Sends a frame (as a binary frame when `binary`).
  void Send(std::string frame, bool binary = false);
  // (Re)arms the timeout; a non-positive value disarms it.
  void ArmTimeout(std::chrono::milliseconds after);
  // Ends the session with `exit_code`: closes the connection politely; Run() returns soon after.
  void Finish(int exit_code);
  bool finished() const { return finished_; }
  const CliOptions& options() const { return options_; }
  static bool StdinIsTerminal();
  // The session's event loop, for timers of a subclass.
  boost::asio::io_context& io() { return io_; }

 private:
  struct StdinState;

  CliOptions options_;
  boost::asio::io_context io_;
  boost::asio::steady_timer timeout_;
  boost::asio::signal_set signals_;
  std::shared_ptr<WsClient> ws_;
  std::shared_ptr<StdinState> stdin_;
  int exit_code_ = kExitOk;
  bool finished_ = false;
  bool ws_done_ = false;  // the connection has ended (or never started)
};

// Prints a frame to stdout: pretty (2-space indent) or compact, non-JSON text as received.
void PrintFrame(const std::string& text, const nlohmann::json& frame, bool compact);

}  // namespace anima::cli
