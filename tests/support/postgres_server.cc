#include "tests/support/postgres_server.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>
#include <vector>

namespace anima::testing {
namespace {

using namespace std::chrono_literals;

constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kSuperuser[] = "anima";

// The uid and gid the server runs as: the `postgres` user when we are root, else ourselves.
struct RunAs {
  bool switch_user = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

RunAs ServerUser() {
  RunAs who;
  if (geteuid() != 0) return who;
  struct passwd* pw = getpwnam("postgres");
  if (pw == nullptr) return who;
  who.switch_user = true;
  who.uid = pw->pw_uid;
  who.gid = pw->pw_gid;
  return who;
}

// Starts `argv` as the server user in `cwd`, in a process group of its own, with stdout and
// stderr appended to `log`. Returns the pid, or -1.
pid_t Spawn(std::vector<std::string> argv, const std::string& cwd, const std::string& log) {
  RunAs who = ServerUser();
  int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (who.switch_user) {
      if (setgroups(0, nullptr) != 0 || setgid(who.gid) != 0 || setuid(who.uid) != 0) _exit(126);
    }
    // A test that crashes takes its server along (immediate shutdown) instead of leaving it
    // running. Set after the uid changes, which clear it; the fixture forks from the thread
    // that owns it, whose end is the test's.
    prctl(PR_SET_PDEATHSIG, SIGQUIT);
    if (getppid() != parent) _exit(125);
    if (chdir(cwd.c_str()) != 0) _exit(126);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(fd);
  return pid;
}

// Waits for `pid` at most `timeout`; its exit status, or -1 if it still runs.
int WaitExit(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return 255;
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
}

// A port nobody listens on now (the kernel's pick for port 0).
int FreePort() {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(s);
  return port;
}

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<PostgresServer> PostgresServer::Start() {
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  char tmpl[] = "/tmp/anima-pg-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::cerr << "PostgresServer: mkdtemp failed\n";
    return nullptr;
  }
  server->dir_ = tmpl;
  server->log_path_ = server->dir_ + "/server.log";
  RunAs who = ServerUser();
  if (who.switch_user && chown(tmpl, who.uid, who.gid) != 0) {
    std::cerr << "PostgresServer: cannot give " << tmpl << " to the postgres user\n";
    return nullptr;
  }
  pid_t initdb = Spawn({std::string(kBinDir) + "/initdb", "-D", server->dir_ + "/data", "-U",
                        kSuperuser, "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"},
                       server->dir_, server->log_path_);
  int status = initdb > 0 ? WaitExit(initdb, 120s) : 255;
  if (status != 0) {
    if (status < 0) kill(initdb, SIGKILL);
    std::cerr << "PostgresServer: initdb failed (" << status << "); its log:\n"
              << server->Log() << "\n";
    return nullptr;
  }
  // A port picked now may be taken before the server binds it: try a few.
  for (int attempt = 0; attempt < 5; ++attempt) {
    server->port_ = FreePort();
    if (server->port_ != 0 && server->Launch()) return server;
  }
  std::cerr << "PostgresServer: postgres did not start; its log:\n" << server->Log() << "\n";
  return nullptr;
}

bool PostgresServer::Launch() {
  pid_ = Spawn({std::string(kBinDir) + "/postgres", "-D", dir_ + "/data", "-p",
                std::to_string(port_), "-k", dir_, "-c", "listen_addresses=127.0.0.1", "-c",
                "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c",
                "max_connections=200", "-c", "unix_socket_permissions=0700"},
               dir_, log_path_);
  paused_ = false;
  if (pid_ <= 0) return false;
  if (WaitReady()) return true;
  kill(-pid_, SIGKILL);
  WaitExit(pid_, 10s);
  pid_ = -1;
  return false;
}

bool PostgresServer::WaitReady() {
  std::string conninfo = "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + kSuperuser +
                         " dbname=postgres connect_timeout=2";
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (PQping(conninfo.c_str()) == PQPING_OK) return true;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

PostgresServer::~PostgresServer() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string PostgresServer::UrlOf(const std::string& database) const {
  return "postgresql://" + std::string(kSuperuser) + "@127.0.0.1:" + std::to_string(port_) + "/" +
         database;
}

std::string PostgresServer::CreateDatabase(const std::string& name) {
  if (!ValidName(name)) {
    std::cerr << "PostgresServer: a database name is [a-z0-9_]{1,63}, not " << name << "\n";
    return "";
  }
  PGconn* pg = PQconnectdb((UrlOf("postgres") + "?connect_timeout=5").c_str());
  std::string url;
  if (PQstatus(pg) != CONNECTION_OK) {
    std::cerr << "PostgresServer: cannot connect: " << PQerrorMessage(pg) << "\n";
  } else {
    // A database name is an identifier, which cannot be a parameter; ValidName bounds it.
    PGresult* r = PQexec(pg, ("CREATE DATABASE \"" + name + "\"").c_str());
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
      url = UrlOf(name);
    } else {
      std::cerr << "PostgresServer: CREATE DATABASE " << name << ": " << PQerrorMessage(pg) << "\n";
    }
    PQclear(r);
  }
  PQfinish(pg);
  return url;
}

bool PostgresServer::Stop() {
  if (pid_ <= 0) return true;
  Resume();
  kill(pid_, SIGINT);  // fast shutdown
  if (WaitExit(pid_, 30s) < 0) {
    kill(-pid_, SIGKILL);
    WaitExit(pid_, 10s);
  }
  // Backends that outlived the postmaster (they should not) go too.
  kill(-pid_, SIGKILL);
  pid_ = -1;
  return true;
}

bool PostgresServer::Restart() {
  Stop();
  if (Launch()) return true;
  std::cerr << "PostgresServer: the restart failed; the log:\n" << Log() << "\n";
  return false;
}

// The postmaster and its children. Each backend makes itself a process group leader
// (InitPostmasterChild), so signalling the postmaster's group would miss them.
std::vector<pid_t> ServerProcesses(pid_t postmaster) {
  std::vector<pid_t> pids = {postmaster};
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == postmaster) {
      pids.push_back(static_cast<pid_t>(std::stol(name)));
    }
  }
  return pids;
}

void PostgresServer::Pause() {
  if (pid_ <= 0 || paused_) return;
  for (pid_t p : ServerProcesses(pid_)) kill(p, SIGSTOP);
  paused_ = true;
}

void PostgresServer::Resume() {
  if (pid_ <= 0 || !paused_) return;
  for (pid_t p : ServerProcesses(pid_)) kill(p, SIGCONT);
  paused_ = false;
}

std::string PostgresServer::Log() const {
  std::ifstream in(log_path_, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace anima::testing
