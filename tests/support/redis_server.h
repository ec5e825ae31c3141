#pragma once

#include <memory>
#include <string>

namespace anima::testing {

// A real redis-server (Debian's /usr/bin/redis-server) for tests: 127.0.0.1, a free port, its
// data in a fresh directory under /tmp (removed with the fixture), no automatic snapshots and
// no append-only file. Start() returns once the server answers PING, or null after printing why
// (and the server's log) to stderr.
//
// The server is killed when the thread that started it (or last restarted it) exits
// (PR_SET_PDEATHSIG), so a crashed test leaves no server behind: start it from the test's own
// thread. Not thread-safe: drive it from one thread.
class RedisServer {
 public:
  static std::unique_ptr<RedisServer> Start();
  ~RedisServer();  // kills the server and removes its directory
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string url() const;  // redis://127.0.0.1:<port>
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }

  // Saves the data to the directory (SHUTDOWN SAVE) and waits for the process to exit: clients
  // see connections refused until Restart().
  void Stop();
  // Kills the server (SIGKILL) without saving: what a crash looks like.
  void Kill();
  // Stops it if running, then starts it again on the same port with the data saved by Stop().
  // False (with the reason on stderr) if it did not come back.
  bool Restart();
  // SIGSTOP / SIGCONT: the server keeps its connections and its listen socket but answers
  // nothing, as a server that hangs.
  void Pause();
  void Resume();

  const std::string& dir() const { return dir_; }
  std::string Log() const;

 private:
  RedisServer() = default;
  // Starts redis-server on port_ and waits for PING; false if it exited or never answered.
  bool Launch();
  bool WaitForExit(int timeout_ms);

  std::string dir_;
  int port_ = 0;
  int pid_ = -1;
  bool paused_ = false;
};

}  // namespace anima::testing
