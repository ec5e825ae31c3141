#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace anima::cli {

// What the client knows about a frame it sent, for matching the replies (PROTOCOL.md §2).
struct SentFrame {
  bool parsed = false;    // the text was a JSON object
  std::string type;       // "" when absent or not a string
  std::string id;         // "" when absent or not a usable id: the gateway then assigns one
  std::string target_id;  // for "cancel": the request it cancels
};

SentFrame DescribeSent(std::string_view text);

// The reply type that ends a request of `sent_type` ("chat" -> "chat_response"); "" when the
// type is not built in (a module's type).
std::string_view TerminalReplyType(std::string_view sent_type);

// True when `reply` is the last frame the gateway sends for `sent`:
// - with a known id: any reply carrying that id except chat_delta, self_coding_accepted and
//   self_coding_progress (so a module's result frame ends it too); for `cancel`, also the
//   `error` that ends its target;
// - without a known id (none given, or not a valid id): the terminal type expected for a
//   built-in type, the first such reply with an id for a module's type, or any `error`;
// - for a frame that was not a JSON object: any `error`.
bool IsTerminalFor(const SentFrame& sent, const nlohmann::json& reply);

// True for frames nobody asked for: `welcome` and frames without an `id` other than `error`
// (the consciousness_state broadcasts).
bool IsUnsolicited(const nlohmann::json& reply);

// The string field `key` of `frame`, or "" when absent or not a string.
std::string StringField(const nlohmann::json& frame, std::string_view key);

}  // namespace anima::cli
