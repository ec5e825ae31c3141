#include <chrono>
#include <deque>
#include <iomanip>
#include <iostream>

#include "absl/strings/str_join.h"
#include "tools/cli/command_session.h"
#include "tools/cli/commands.h"
#include "tools/cli/frame_rules.h"

namespace anima::cli {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kDefaultChatTimeout{120000};

// One chat exchange at a time. With a message: send it, print the reply, exit. Without: one
// exchange per stdin line, keeping the conversation_id, until end of input.
class ChatSession : public CommandSession {
 public:
  ChatSession(const CliOptions& options, std::optional<std::string> message)
      : CommandSession(options),
        one_shot_(message.has_value()),
        conversation_id_(options.conversation_id) {
    if (message) lines_.push_back(*message);
  }

 private:
  void OnConnected() override {
    if (one_shot_) {
      SendNext();
    } else {
      Prompt();
      StartReadingStdin();
    }
  }

  void OnStdinLine(std::optional<std::string> line) override {
    if (!line) {
      input_done_ = true;
    } else if (!line->empty()) {
      lines_.push_back(*line);
    } else {
      Prompt();
    }
    if (pending_id_.empty()) SendNext();
  }

  void SendNext() {
    if (lines_.empty()) {
      if (input_done_) Finish(exit_code_);
      return;
    }
    nlohmann::json chat = {{"type", "chat"},
                           {"id", "cli-" + std::to_string(++sequence_)},
                           {"message", lines_.front()}};
    lines_.pop_front();
    const CliOptions& o = options();
    if (o.stream) chat["stream"] = true;
    if (!o.provider.empty()) chat["provider"] = o.provider;
    if (!o.model.empty()) chat["model"] = o.model;
    if (!o.system.empty()) chat["system"] = o.system;
    if (!o.strategy.empty()) chat["strategy"] = o.strategy;
    if (!conversation_id_.empty()) chat["conversation_id"] = conversation_id_;
    pending_id_ = chat["id"];
    printed_delta_ = false;
    sent_at_ = Clock::now();
    Send(chat.dump());
    ArmTimeout(options().timeout_ms > 0 ? std::chrono::milliseconds(options().timeout_ms)
                                        : kDefaultChatTimeout);
  }

  void OnFrame(const std::string& text, const nlohmann::json& frame, bool binary) override {
    const std::string type = StringField(frame, "type");
    if (pending_id_.empty() || StringField(frame, "id") != pending_id_) {
      if (options().verbose) std::cerr << "< " << text << "\n";
      return;
    }
    if (type == "chat_delta") {
      std::cout << StringField(frame, "delta") << std::flush;
      printed_delta_ = true;
    } else if (type == "chat_response") {
      if (!printed_delta_) std::cout << StringField(frame, "message");
      std::cout << "\n" << std::flush;
      PrintSummary(frame);
      if (std::string c = StringField(frame, "conversation_id"); !c.empty()) conversation_id_ = c;
      EndExchange(kExitOk);
    } else if (type == "error") {
      if (printed_delta_) std::cout << "\n" << std::flush;
      std::cerr << "error: " << StringField(frame, "code") << ": " << StringField(frame, "message");
      if (frame.contains("retry_after_ms")) {
        std::cerr << " (retry after " << frame["retry_after_ms"].dump() << " ms)";
      }
      std::cerr << "\n";
      EndExchange(kExitErrorFrame);
    } else if (options().verbose) {
      std::cerr << "< " << text << "\n";
    }
  }

  void EndExchange(int result) {
    pending_id_.clear();
    ArmTimeout(std::chrono::milliseconds(0));
    if (one_shot_) return Finish(result);
    if (result != kExitOk) exit_code_ = result;
    if (lines_.empty() && !input_done_) Prompt();
    SendNext();
  }

  void PrintSummary(const nlohmann::json& frame) {
    const double round_trip_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - sent_at_).count();
    std::cerr << "provider=" << StringField(frame, "provider")
              << " model=" << StringField(frame, "model")
              << " finish=" << StringField(frame, "finish_reason");
    if (auto u = frame.find("usage"); u != frame.end() && u->is_object()) {
      std::cerr << " usage=" << u->value("prompt_tokens", 0) << "+"
                << u->value("completion_tokens", 0) << "=" << u->value("total_tokens", 0);
    }
    if (auto l = frame.find("latency_ms"); l != frame.end()) {
      std::cerr << " latency_ms=" << l->dump();
    }
    std::cerr << " round_trip_ms=" << std::fixed << std::setprecision(3) << round_trip_ms;
    if (std::string c = StringField(frame, "conversation_id"); !c.empty()) {
      std::cerr << " conversation_id=" << c;
    }
    std::cerr << "\n";
  }

  void Prompt() {
    if (!one_shot_ && StdinIsTerminal()) std::cerr << "> " << std::flush;
  }

  void OnTimeout() override {
    std::cerr << "anima-cli: no answer to " << pending_id_ << " in time\n";
    Finish(kExitTimeout);
  }

  const bool one_shot_;
  std::string conversation_id_;
  std::deque<std::string> lines_;
  bool input_done_ = false;
  std::string pending_id_;
  bool printed_delta_ = false;
  Clock::time_point sent_at_;
  int sequence_ = 0;
  int exit_code_ = kExitOk;  // interactive: 1 when any exchange ended in an error frame
};

}  // namespace

int RunChat(const CliOptions& options, const std::vector<std::string>& message_words) {
  std::optional<std::string> message;
  if (!message_words.empty()) message = absl::StrJoin(message_words, " ");
  if (message && message->empty()) {
    std::cerr << "anima-cli: chat: the message is empty\n";
    return kExitUsage;
  }
  ChatSession session(options, std::move(message));
  return session.Run();
}

}  // namespace anima::cli
