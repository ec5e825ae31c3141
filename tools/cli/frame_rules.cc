#include "tools/cli/frame_rules.h"

#include <array>

namespace anima::cli {

namespace {

// Replies that announce more to come. Every other reply type ends its request, including the
// result frames of external modules, whose types the CLI cannot know.
constexpr std::array<std::string_view, 4> kNonTerminalTypes = {"chat_delta", "self_coding_accepted",
                                                               "self_coding_progress", "welcome"};

bool IsTerminalType(std::string_view type) {
  if (type.empty()) return false;
  for (auto t : kNonTerminalTypes) {
    if (t == type) return false;
  }
  return true;
}

}  // namespace

std::string StringField(const nlohmann::json& frame, std::string_view key) {
  if (!frame.is_object()) return "";
  auto it = frame.find(key);
  if (it == frame.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

SentFrame DescribeSent(std::string_view text) {
  SentFrame sent;
  nlohmann::json frame = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!frame.is_object()) return sent;
  sent.parsed = true;
  sent.type = StringField(frame, "type");
  std::string id = StringField(frame, "id");
  // PROTOCOL.md §2: an id is 1 to 64 characters; anything else is rejected without echoing it.
  if (!id.empty() && id.size() <= 64) sent.id = std::move(id);
  sent.target_id = StringField(frame, "target_id");
  return sent;
}

std::string_view TerminalReplyType(std::string_view sent_type) {
  if (sent_type == "chat") return "chat_response";
  if (sent_type == "ping") return "pong";
  if (sent_type == "consciousness_query") return "consciousness_state";
  if (sent_type == "subscribe") return "subscribed";
  if (sent_type == "unsubscribe") return "unsubscribed";
  if (sent_type == "self_coding_request" || sent_type == "self_coding_watch" ||
      sent_type == "self_coding_cancel") {
    return "self_coding_result";
  }
  return "";
}

bool IsTerminalFor(const SentFrame& sent, const nlohmann::json& reply) {
  if (!reply.is_object()) return false;
  const std::string type = StringField(reply, "type");
  if (!sent.parsed) return type == "error";
  if (!IsTerminalType(type)) return false;
  const std::string id = StringField(reply, "id");
  if (!sent.id.empty()) {
    if (id == sent.id) return true;
    return sent.type == "cancel" && type == "error" && !sent.target_id.empty() &&
           id == sent.target_id;
  }
  if (type == "error") return true;
  // A consciousness_state without an id is a broadcast, not the answer to a query.
  if (type == "consciousness_state" && id.empty()) return false;
  std::string_view expected = TerminalReplyType(sent.type);
  if (!expected.empty()) return type == expected;
  return !id.empty();  // a module's answer carries the id the gateway assigned
}

bool IsUnsolicited(const nlohmann::json& reply) {
  if (!reply.is_object()) return false;
  const std::string type = StringField(reply, "type");
  if (type == "welcome") return true;
  return type != "error" && !reply.contains("id");
}

}  // namespace anima::cli
