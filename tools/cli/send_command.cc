#include <chrono>
#include <iostream>
#include <list>

#include "tools/cli/command_session.h"
#include "tools/cli/commands.h"
#include "tools/cli/frame_rules.h"
#include "tools/cli/tables.h"

namespace anima::cli {

namespace {

constexpr std::chrono::milliseconds kDefaultTimeout{30000};

std::chrono::milliseconds TimeoutOf(const CliOptions& o, std::chrono::milliseconds fallback) {
  return o.timeout_ms > 0 ? std::chrono::milliseconds(o.timeout_ms) : fallback;
}

// Sends raw frames and prints what comes back. Without --all it ends once every frame sent has
// had its terminal reply (frame_rules.h) and the input is done; with --all it prints everything,
// broadcasts included, until Ctrl-C or the timeout.
class SendSession : public CommandSession {
 public:
  SendSession(const CliOptions& options, std::string frame_or_dash)
      : CommandSession(options), source_(std::move(frame_or_dash)) {}

 private:
  void OnConnected() override {
    if (options().all) ArmTimeout(TimeoutOf(options(), kDefaultTimeout));
    if (source_ == "-") {
      StartReadingStdin();
    } else {
      SendFrame(source_);
      input_done_ = true;
    }
  }

  void OnStdinLine(std::optional<std::string> line) override {
    if (!line) {
      input_done_ = true;
      MaybeDone();
    } else if (!line->empty()) {
      SendFrame(*line);
    }
  }

  void SendFrame(const std::string& text) {
    // The gateway cannot read the id of a binary frame, so any error answers it.
    pending_.push_back(options().raw_binary ? SentFrame{} : DescribeSent(text));
    Send(text, options().raw_binary);
    if (!options().all) ArmTimeout(TimeoutOf(options(), kDefaultTimeout));
  }

  void OnFrame(const std::string& text, const nlohmann::json& frame, bool binary) override {
    if (binary) {
      std::cerr << "anima-cli: binary frame of " << text.size() << " bytes\n";
      return;
    }
    const bool welcome = StringField(frame, "type") == "welcome";
    if (welcome ? !options().verbose : (!options().all && IsUnsolicited(frame))) return;
    PrintFrame(text, frame, options().compact);
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (IsTerminalFor(*it, frame)) {
        if (StringField(frame, "type") == "error") saw_error_ = true;
        pending_.erase(it);
        break;
      }
    }
    MaybeDone();
  }

  void MaybeDone() {
    if (options().all || !input_done_ || !pending_.empty()) return;
    Finish(saw_error_ ? kExitErrorFrame : kExitOk);
  }

  void OnTimeout() override {
    if (options().all) return Finish(saw_error_ ? kExitErrorFrame : kExitOk);
    std::cerr << "anima-cli: timed out with " << pending_.size() << " frame(s) unanswered\n";
    Finish(kExitTimeout);
  }

  void OnInterrupt() override {
    Finish(options().all ? (saw_error_ ? kExitErrorFrame : kExitOk) : kExitInterrupted);
  }

  std::string source_;
  std::list<SentFrame> pending_;
  bool input_done_ = false;
  bool saw_error_ = false;
};

// `state` (one query, one answer) and `watch-state` (every broadcast until Ctrl-C/timeout).
class StateSession : public CommandSession {
 public:
  StateSession(const CliOptions& options, bool watch) : CommandSession(options), watch_(watch) {}

 private:
  void OnConnected() override {
    if (watch_) {
      // New connections are subscribed already; asking again is harmless and explicit.
      Send(R"({"type":"subscribe","id":"cli-watch","topics":["consciousness_state"]})");
      ArmTimeout(TimeoutOf(options(), std::chrono::milliseconds(0)));
    } else {
      Send(R"({"type":"consciousness_query","id":"cli-state"})");
      ArmTimeout(TimeoutOf(options(), kDefaultTimeout));
    }
  }

  void OnFrame(const std::string& text, const nlohmann::json& frame, bool binary) override {
    const std::string type = StringField(frame, "type");
    const std::string id = StringField(frame, "id");
    if (type == "error") {
      std::cerr << "error: " << StringField(frame, "code") << ": " << StringField(frame, "message")
                << "\n";
      if (!watch_ || id == "cli-watch") Finish(kExitErrorFrame);
      return;
    }
    if (type == "consciousness_state" && (watch_ || id == "cli-state")) {
      if (options().json || options().compact) {
        PrintFrame(text, frame, options().compact);
      } else {
        std::cout << (printed_ ? "\n" : "") << StateTable(frame) << std::flush;
        printed_ = true;
      }
      if (!watch_) Finish(kExitOk);
      return;
    }
    if (options().verbose) std::cerr << "< " << text << "\n";
  }

  void OnTimeout() override {
    if (watch_) return Finish(kExitOk);
    CommandSession::OnTimeout();
  }

  void OnInterrupt() override { Finish(watch_ ? kExitOk : kExitInterrupted); }

  const bool watch_;
  bool printed_ = false;
};

}  // namespace

int RunSend(const CliOptions& options, const std::string& frame_or_dash) {
  SendSession session(options, frame_or_dash);
  return session.Run();
}

int RunState(const CliOptions& options) {
  StateSession session(options, /*watch=*/false);
  return session.Run();
}

int RunWatchState(const CliOptions& options) {
  StateSession session(options, /*watch=*/true);
  return session.Run();
}

}  // namespace anima::cli
