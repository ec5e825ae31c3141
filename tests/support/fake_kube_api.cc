#include "tests/support/fake_kube_api.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "services/llm_broker/http_client.h"

namespace anima::testing {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string Script() { return std::string(ANIMA_SOURCE_DIR) + "/tests/support/fake_kube_api.py"; }

// Starts `args` with stdout and stderr going to `log`; -1 when fork failed.
pid_t Spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    // SIGTERM, not SIGKILL: the fake then stops the runners it started.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string MakeDir() {
  std::string tmpl = (fs::temp_directory_path() / "anima-fake-kube-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* dir = mkdtemp(buf.data());
  return dir != nullptr ? dir : "";
}

}  // namespace

std::string FakeKubeApi::Python() {
  // Debian's own first: a version manager's shim on PATH costs half a second per start.
  if (access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  const char* path = std::getenv("PATH");
  for (auto dir : absl::StrSplit(path != nullptr ? path : "", ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/python3");
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

absl::Status FakeKubeApi::MakeTls(const std::string& dir) {
  std::string python = Python();
  if (python.empty()) return absl::FailedPreconditionError("no python3");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  std::string log = dir + "/make-tls.log";
  pid_t pid = Spawn({python, Script(), "--tls-dir", dir, "--tls-only"}, log);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
      WEXITSTATUS(status) != 0) {
    return absl::InternalError(
        absl::StrCat("making TLS files in ", dir, " failed: ", ReadAll(log)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FakeKubeApi>> FakeKubeApi::Start(FakeKubeApiOptions options) {
  std::string python = Python();
  if (python.empty()) return absl::FailedPreconditionError("no python3");
  std::unique_ptr<FakeKubeApi> fake(new FakeKubeApi());
  fake->dir_ = MakeDir();
  if (fake->dir_.empty()) return absl::InternalError("cannot create a temporary directory");
  fake->tls_dir_ = options.tls_dir.empty() ? fake->dir_ + "/tls" : options.tls_dir;
  {
    std::ofstream token(fake->token_file());
    token << options.token << "\n";
  }
  std::string port_file = fake->dir_ + "/port";
  std::string log = fake->dir_ + "/fake.log";
  std::vector<std::string> args = {python,
                                   Script(),
                                   "--tls-dir",
                                   fake->tls_dir_,
                                   "--port-file",
                                   port_file,
                                   "--token",
                                   options.token,
                                   "--ready-delay-ms",
                                   std::to_string(options.ready_delay_ms),
                                   "--runner-port",
                                   std::to_string(options.runner_port)};
  if (!options.runner_cmd.empty()) {
    args.push_back("--runner-cmd");
    args.push_back(options.runner_cmd);
  }
  fake->options_ = std::move(options);
  fake->pid_ = Spawn(args, log);
  if (fake->pid_ < 0) return absl::InternalError("fork failed");
  auto deadline = Clock::now() + std::chrono::seconds(20);
  while (Clock::now() < deadline) {
    std::string port = ReadAll(port_file);
    if (!port.empty()) {
      fake->port_ = std::stoi(port);
      break;
    }
    int status = 0;
    if (waitpid(fake->pid_, &status, WNOHANG) == fake->pid_) {
      fake->pid_ = -1;
      return absl::InternalError("fake_kube_api.py exited: " + ReadAll(log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (fake->port_ == 0) return absl::DeadlineExceededError("fake_kube_api.py did not start");
  broker::HttpClientOptions http_options;
  http_options.ca_file = fake->ca_file();
  http_options.threads = 1;
  auto http = broker::HttpClient::Create(std::move(http_options));
  if (!http.ok()) return http.status();
  fake->http_ = *std::move(http);
  return fake;
}

FakeKubeApi::~FakeKubeApi() {
  http_.reset();
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
}

std::string FakeKubeApi::url() const { return absl::StrCat("https://127.0.0.1:", port_); }
std::string FakeKubeApi::ca_file() const { return tls_dir_ + "/ca.crt"; }
std::string FakeKubeApi::token_file() const { return dir_ + "/token"; }

absl::StatusOr<nlohmann::json> FakeKubeApi::Hook(const std::string& method, const std::string& path,
                                                 const std::string& body) {
  broker::HttpRequest request;
  request.method = method;
  request.url = url() + path;
  request.body = body;
  request.deadline = Clock::now() + std::chrono::seconds(10);
  auto status = std::make_shared<int>(0);
  auto text = std::make_shared<std::string>();
  auto done = std::make_shared<std::promise<absl::Status>>();
  auto future = done->get_future();
  broker::HttpHandler handler;
  handler.on_head = [status](const broker::HttpResponseHead& head) { *status = head.status; };
  handler.on_body = [text](std::string_view bytes) { text->append(bytes); };
  handler.on_complete = [done](absl::Status s) { done->set_value(std::move(s)); };
  http_->Send(std::move(request), std::move(handler));
  absl::Status result = future.get();
  if (!result.ok()) return result;
  auto parsed = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (*status != 200 || parsed.is_discarded()) {
    return absl::InternalError(absl::StrCat("fake ", path, ": HTTP ", *status, ": ", *text));
  }
  return parsed;
}

absl::Status FakeKubeApi::Control(const nlohmann::json& changes) {
  return Hook("POST", "/_control", changes.dump()).status();
}

absl::StatusOr<nlohmann::json> FakeKubeApi::Requests() { return Hook("GET", "/_requests", ""); }

absl::StatusOr<nlohmann::json> FakeKubeApi::Claims() { return Hook("GET", "/_claims", ""); }

}  // namespace anima::testing
