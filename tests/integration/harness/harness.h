#pragma once

// Helpers for integration tests: start the real binaries on free ports, and talk to them as a
// client would (HTTP and WebSocket over real sockets).

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace anima::testing {

using namespace std::chrono_literals;

// The directory holding the built binaries ($ANIMA_BIN_DIR, set by ctest).
std::string BinDir();
// The source tree ($ANIMA_SOURCE_DIR), for test data.
std::string SourceDir();
// A fresh empty directory under /tmp, removed by nobody: tests keep their logs there.
std::string MakeTempDir(const std::string& prefix);

// Polls `condition` every 20 ms until it holds or `timeout` passes; then asks it once more, so a
// slow last poll still counts.
bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 15s);

// One running binary. Start() passes `--ready-file=...` and waits until the binary has written
// it: every binary writes {"grpc":port,"metrics":port,"http":port,...} once all its listeners are
// bound, so tests pass port 0 and read the real ports here. stderr goes to a log file that is
// printed when a test fails to start the process.
class Process {
 public:
  static std::unique_ptr<Process> Start(const std::string& binary, std::vector<std::string> args,
                                        std::map<std::string, std::string> env = {},
                                        std::chrono::milliseconds timeout = 20s);
  ~Process();  // SIGKILL if still running (SIGTERM first in a sanitizer build)

  int port(const std::string& key) const;             // "grpc", "http", "metrics"
  std::string address(const std::string& key) const;  // "127.0.0.1:<port>"
  int pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string Log() const;

  void Signal(int sig);
  // Waits for the process to exit; returns its exit status (128+signal when killed), or -1 on
  // timeout.
  int Wait(std::chrono::milliseconds timeout = 20s);
  bool Running();

 private:
  Process() = default;
  int pid_ = -1;
  int exit_status_ = -1;
  std::map<std::string, int> ports_;
  std::string log_path_;
};

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// One HTTP/1.1 request on a fresh connection to 127.0.0.1:port. status 0: could not connect.
HttpResponse HttpRequest(int port, const std::string& method, const std::string& target,
                         const std::string& body = "",
                         const std::map<std::string, std::string>& headers = {});

// A blocking WebSocket client for tests.
class WsClient {
 public:
  WsClient();
  ~WsClient();
  // Connects and completes the upgrade; false (with error()) if either fails.
  bool Connect(int port, const std::string& target = "/",
               const std::map<std::string, std::string>& headers = {});
  bool SendText(const std::string& text);
  bool SendBinary(const std::string& bytes);
  // The next text frame as JSON (nullopt on timeout, close or a frame that is not JSON).
  std::optional<nlohmann::json> Read(std::chrono::milliseconds timeout = 10s);
  // Reads frames until one has the given type (and the given id, when not empty); frames of
  // other types are kept in skipped(). nullopt on timeout or close.
  std::optional<nlohmann::json> ReadUntil(const std::string& type, const std::string& id = "",
                                          std::chrono::milliseconds timeout = 10s);
  // Frames of this type without an id (e.g. consciousness_state broadcasts, the welcome) are
  // dropped by Read; answers, which carry an id, are not.
  void Ignore(const std::string& type) { ignore_.push_back(type); }
  // After the server closed: the close code (0 if not closed).
  int close_code() const { return close_code_; }
  bool closed() const { return closed_; }
  const std::string& error() const { return error_; }
  std::vector<nlohmann::json>& skipped() { return skipped_; }
  void Close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<std::string> ignore_;
  std::vector<nlohmann::json> skipped_;
  int close_code_ = 0;
  bool closed_ = false;
  std::string error_;
};

// Parses Prometheus text exposition into name{labels} -> value, e.g.
// "anima_gateway_connections" -> 3, "anima_x_total{code=\"OK\",method=\"Dispatch\"}" -> 7.
// Labels are in the order the exposition prints them (prometheus-cpp sorts them by name).
std::map<std::string, double> ScrapeMetrics(int port);

}  // namespace anima::testing
