#include "tools/cli/command_session.h"

#include <unistd.h>

#include <csignal>
#include <iostream>
#include <mutex>
#include <thread>

#include <boost/asio/post.hpp>

#include "tools/cli/url.h"

namespace anima::cli {

namespace asio = boost::asio;

// Shared between the session and the detached stdin thread. The thread only touches the
// io_context while `open` is true, and the session sets it false (under the mutex) before the
// io_context can go away, so a thread still blocked in getline() never sees a dangling pointer.
struct CommandSession::StdinState {
  std::mutex mu;
  bool open = true;
  CommandSession* session = nullptr;
  asio::io_context* io = nullptr;

  void Deliver(std::optional<std::string> line) {
    std::lock_guard<std::mutex> lock(mu);
    if (!open) return;
    asio::post(*io, [s = session, line = std::move(line)]() mutable {
      if (!s->finished()) s->OnStdinLine(std::move(line));
    });
  }
  void Shut() {
    std::lock_guard<std::mutex> lock(mu);
    open = false;
  }
};

CommandSession::CommandSession(const CliOptions& options)
    : options_(options), timeout_(io_), signals_(io_, SIGINT, SIGTERM) {}

CommandSession::~CommandSession() {
  if (stdin_) stdin_->Shut();
}

bool CommandSession::StdinIsTerminal() { return ::isatty(STDIN_FILENO) == 1; }

int CommandSession::Run() {
  auto url = ParseUrl(options_.url);
  if (!url.ok()) {
    std::cerr << "anima-cli: --url: " << url.status().message() << "\n";
    return kExitUsage;
  }
  WsClientOptions ws_options;
  ws_options.bearer_token = options_.token;
  ws_options.verify_tls = !options_.insecure;
  ws_options.ca_file = options_.ca_file;
  ws_options.user_agent = "anima-cli/" ANIMA_VERSION;
  auto ws = WsClient::Create(io_, *url, ws_options);
  if (!ws.ok()) {
    std::cerr << "anima-cli: " << ws.status().message() << "\n";
    return kExitUsage;
  }
  ws_ = *std::move(ws);
  signals_.async_wait([this](boost::system::error_code ec, int) {
    if (!ec && !finished_) OnInterrupt();
  });
  ws_->Connect(
      [this](std::string text, bool binary) {
        if (finished_) return;
        nlohmann::json frame;
        if (!binary) {
          frame = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
          if (frame.is_discarded()) frame = nullptr;
        }
        OnFrame(text, frame, binary);
      },
      [this](boost::system::error_code, std::string detail) {
        ws_done_ = true;
        if (finished_) {
          timeout_.cancel();  // the polite close finished; no need to force it
          return;
        }
        std::cerr << "anima-cli: connection ended: " << detail << "\n";
        OnConnectionLost();
        Finish(kExitConnection);
      },
      [this](boost::system::error_code ec, std::string detail) {
        if (ec) {
          ws_done_ = true;
          std::cerr << "anima-cli: " << detail << "\n";
          Finish(kExitConnection);
          return;
        }
        if (!finished_) OnConnected();
      });
  io_.run();
  return exit_code_;
}

void CommandSession::StartReadingStdin() {
  if (stdin_) return;
  stdin_ = std::make_shared<StdinState>();
  stdin_->session = this;
  stdin_->io = &io_;
  std::thread([state = stdin_] {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      state->Deliver(line);
    }
    state->Deliver(std::nullopt);
  }).detach();
}

void CommandSession::Send(std::string frame, bool binary) {
  if (options_.verbose) std::cerr << "> " << frame << "\n";
  ws_->Send(std::move(frame), binary);
}

void CommandSession::ArmTimeout(std::chrono::milliseconds after) {
  timeout_.cancel();
  if (after.count() <= 0) return;
  timeout_.expires_after(after);
  timeout_.async_wait([this](boost::system::error_code ec) {
    if (!ec && !finished_) OnTimeout();
  });
}

void CommandSession::OnTimeout() {
  std::cerr << "anima-cli: timed out\n";
  Finish(kExitTimeout);
}

void CommandSession::OnInterrupt() { Finish(kExitInterrupted); }

void CommandSession::Finish(int exit_code) {
  if (finished_) return;
  finished_ = true;
  exit_code_ = exit_code;
  std::cout.flush();
  if (stdin_) stdin_->Shut();
  signals_.cancel();
  timeout_.cancel();
  if (!ws_ || ws_done_) return;
  ws_->Close();
  // A server that never answers the close frame must not keep the CLI alive.
  timeout_.expires_after(std::chrono::seconds(2));
  timeout_.async_wait([ws = ws_](boost::system::error_code ec) {
    if (!ec) ws->Abort();
  });
}

void PrintFrame(const std::string& text, const nlohmann::json& frame, bool compact) {
  if (frame.is_null()) {
    std::cout << text << "\n";
  } else {
    std::cout << frame.dump(compact ? -1 : 2, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  }
  std::cout.flush();
}

}  // namespace anima::cli
