#include "tests/integration/harness/harness.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

namespace anima::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

std::string BinDir() {
  const char* dir = std::getenv("ANIMA_BIN_DIR");
  return dir != nullptr ? dir : "build/bin";
}

std::string SourceDir() {
  const char* dir = std::getenv("ANIMA_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* dir = mkdtemp(buf.data());
  return dir != nullptr ? dir : "/tmp";
}

bool Eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

std::unique_ptr<Process> Process::Start(const std::string& binary, std::vector<std::string> args,
                                        std::map<std::string, std::string> env,
                                        std::chrono::milliseconds timeout) {
  std::unique_ptr<Process> p(new Process());
  std::string dir = MakeTempDir("anima-proc");
  std::string name = std::filesystem::path(binary).filename();
  std::string ready = dir + "/ready.json";
  p->log_path_ = dir + "/" + name + ".log";
  std::string path = binary.find('/') == std::string::npos ? BinDir() + "/" + binary : binary;
  args.insert(args.begin(), path);
  args.push_back("--ready-file=" + ready);

  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    // The test may have blocked signals; the child starts with a clean mask.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  p->pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(ready)) {
      auto json = nlohmann::json::parse(ReadFile(ready), nullptr, false);
      if (json.is_object()) {
        for (const auto& [k, v] : json.items()) p->ports_[k] = v.get<int>();
        return p;
      }
    }
    if (!p->Running()) break;
    std::this_thread::sleep_for(20ms);
  }
  std::cerr << "process " << path << " did not become ready; its log:\n" << p->Log() << "\n";
  return nullptr;
}

Process::~Process() {
  if (pid_ <= 0 || !Running()) return;
#ifdef ANIMA_SANITIZE
  // Under sanitizers a process is asked to stop and given time to, so that it exits on its own
  // and LeakSanitizer looks at what it still holds (a SIGKILL would skip that).
  kill(pid_, SIGTERM);
  if (Wait(10s) >= 0) return;
#endif
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
}

int Process::port(const std::string& key) const {
  auto it = ports_.find(key);
  return it == ports_.end() ? 0 : it->second;
}

std::string Process::address(const std::string& key) const {
  return "127.0.0.1:" + std::to_string(port(key));
}

std::string Process::Log() const { return ReadFile(log_path_); }

void Process::Signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

bool Process::Running() {
  if (pid_ <= 0 || exit_status_ >= 0) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  if (r == pid_) {
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  return false;
}

int Process::Wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (Running()) {
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(10ms);
  }
  return exit_status_;
}

HttpResponse HttpRequest(int port, const std::string& method, const std::string& target,
                         const std::string& body,
                         const std::map<std::string, std::string>& headers) {
  HttpResponse out;
  try {
    asio::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(30s);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST") {
      req.body() = body;
      if (req.find(http::field::content_type) == req.end()) {
        req.set(http::field::content_type, "application/json");
      }
      req.prepare_payload();
    }
    http::write(stream, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    // The answer to HEAD has the headers of a GET, Content-Length included, and no body.
    if (method == "HEAD") parser.skip(true);
    beast::error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec && ec != http::error::end_of_stream) return out;
    auto& res = parser.get();
    out.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.headers[name] = std::string(field.value());
    }
    out.body = res.body();
  } catch (const std::exception&) {
    out.status = 0;
  }
  return out;
}

// Every operation after the handshake is asynchronous, driven by running the io_context for at
// most the caller's timeout. A read that times out stays pending and is completed by the next
// Read, so a timeout never breaks the stream and no frame is lost.
struct WsClient::Impl {
  asio::io_context ioc;
  websocket::stream<beast::tcp_stream> ws{ioc};
  beast::flat_buffer buffer;
  bool reading = false;
  bool read_done = false;
  beast::error_code read_ec;

  void StartRead() {
    reading = true;
    read_done = false;
    buffer.clear();
    ws.async_read(buffer, [this](beast::error_code ec, std::size_t) {
      read_ec = ec;
      read_done = true;
      reading = false;
    });
  }

  // Runs the io_context until `done` or the timeout; other completions (a pending read) are
  // recorded by their own handlers.
  bool RunUntil(const bool& done, std::chrono::steady_clock::duration timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done) {
      auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return false;
      ioc.restart();
      ioc.run_one_for(left);
    }
    return true;
  }

  bool Write(bool text, const std::string& data, std::string* error) {
    bool done = false;
    beast::error_code result;
    ws.text(text);
    ws.async_write(asio::buffer(data), [&](beast::error_code ec, std::size_t) {
      result = ec;
      done = true;
    });
    if (!RunUntil(done, 10s)) {
      *error = "write timed out";
      return false;
    }
    if (result) *error = result.message();
    return !result;
  }
};

WsClient::WsClient() : impl_(std::make_unique<Impl>()) {}
WsClient::~WsClient() { Close(); }

bool WsClient::Connect(int port, const std::string& target,
                       const std::map<std::string, std::string>& headers) {
  try {
    auto& stream = beast::get_lowest_layer(impl_->ws);
    stream.expires_after(10s);
    stream.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    impl_->ws.set_option(websocket::stream_base::decorator([headers](websocket::request_type& r) {
      for (const auto& [k, v] : headers) r.set(k, v);
    }));
    impl_->ws.read_message_max(64 * 1024 * 1024);
    impl_->ws.handshake("127.0.0.1:" + std::to_string(port), target);
    stream.expires_never();
    return true;
  } catch (const std::exception& e) {
    error_ = e.what();
    return false;
  }
}

bool WsClient::SendText(const std::string& text) {
  return !closed_ && impl_->Write(true, text, &error_);
}

bool WsClient::SendBinary(const std::string& bytes) {
  return !closed_ && impl_->Write(false, bytes, &error_);
}

std::optional<nlohmann::json> WsClient::Read(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!closed_) {
    if (!impl_->reading && !impl_->read_done) impl_->StartRead();
    if (!impl_->RunUntil(impl_->read_done, deadline - std::chrono::steady_clock::now())) {
      error_ = "timeout";
      return std::nullopt;
    }
    impl_->read_done = false;
    beast::error_code ec = impl_->read_ec;
    if (ec == websocket::error::closed) {
      closed_ = true;
      close_code_ = impl_->ws.reason().code;
      return std::nullopt;
    }
    if (ec) {
      error_ = ec.message();
      closed_ = true;
      return std::nullopt;
    }
    auto json =
        nlohmann::json::parse(beast::buffers_to_string(impl_->buffer.data()), nullptr, false);
    if (json.is_discarded()) {
      error_ = "a frame that is not JSON";
      return std::nullopt;
    }
    std::string type = json.value("type", "");
    if (!json.contains("id") && std::find(ignore_.begin(), ignore_.end(), type) != ignore_.end()) {
      continue;
    }
    return json;
  }
  return std::nullopt;
}

std::optional<nlohmann::json> WsClient::ReadUntil(const std::string& type, const std::string& id,
                                                  std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto frame = Read(left);
    if (!frame) return std::nullopt;
    if (frame->value("type", "") == type && (id.empty() || frame->value("id", "") == id)) {
      return frame;
    }
    skipped_.push_back(*frame);
  }
}

void WsClient::Close() {
  if (closed_ || !impl_) return;
  closed_ = true;
  beast::error_code ec;
  // A clean close handshake when nothing is pending; otherwise just drop the connection.
  if (!impl_->reading && impl_->ws.is_open()) {
    bool done = false;
    impl_->ws.async_close(websocket::close_code::normal,
                          [&done](beast::error_code) { done = true; });
    if (impl_->RunUntil(done, 2s)) return;
  }
  beast::get_lowest_layer(impl_->ws).socket().close(ec);
}

std::map<std::string, double> ScrapeMetrics(int port) {
  std::map<std::string, double> out;
  auto res = HttpRequest(port, "GET", "/metrics");
  std::istringstream lines(res.body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    try {
      out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    } catch (const std::exception&) {
    }
  }
  return out;
}

}  // namespace anima::testing
