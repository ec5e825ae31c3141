#pragma once

// A real PostgreSQL 15 server for tests, from Debian's postgresql-15 binaries.
//
//   auto pg = PostgresServer::Start();
//   ASSERT_NE(pg, nullptr);
//   std::string url = pg->CreateDatabase("jobs_test_1");  // each test its own database
//
// initdb and postgres run in a fresh directory under /tmp on 127.0.0.1 and a free port, with
// fsync off (tests need speed, not durability across power loss), the Unix socket in that
// directory, trust authentication for the superuser `anima`. PostgreSQL refuses to run as root:
// when the test runs as root, the server runs as the `postgres` system user, which then owns
// the directory. The destructor stops the server and removes the directory.

#include <sys/types.h>

#include <memory>
#include <string>

namespace anima::testing {

class PostgresServer {
 public:
  // nullptr when the server cannot be started; why, and the server's log, go to stderr.
  static std::unique_ptr<PostgresServer> Start();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // postgresql://anima@127.0.0.1:<port>/postgres
  std::string url() const { return UrlOf("postgres"); }
  int port() const { return port_; }

  // A new empty database; returns its URL, or "" (the reason on stderr). `name` is
  // [a-z0-9_]{1,63}.
  std::string CreateDatabase(const std::string& name);

  // Fast shutdown (clients are disconnected); true once the server has exited.
  bool Stop();
  // Starts it again on the same port with the same data; true once it accepts connections.
  bool Restart();
  // Stops (SIGSTOP) and resumes (SIGCONT) every process of the server: connections stay open
  // and nothing answers, as with a hung host.
  void Pause();
  void Resume();
  bool running() const { return pid_ > 0; }

  std::string Log() const;

 private:
  PostgresServer() = default;
  std::string UrlOf(const std::string& database) const;
  bool Launch();
  bool WaitReady();

  std::string dir_;
  std::string log_path_;
  int port_ = 0;
  pid_t pid_ = -1;
  bool paused_ = false;
};

}  // namespace anima::testing
