// FrameTranslator::Parse: client frames (PROTOCOL.md §2) to Envelopes.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gateway/frame_translator.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxIdLength = 64;
// Deeper frames are refused before anything walks them recursively (external modules get the
// frame re-serialised, and serialisation recurses).
constexpr int kMaxDepth = 32;

// Characters, not bytes: the parser has already checked that strings are valid UTF-8, so every
// byte that is not a continuation byte starts one character.
size_t CharCount(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

bool ValidId(const Json& v) {
  if (!v.is_string()) return false;
  size_t n = CharCount(v.get_ref<const std::string&>());
  return n >= 1 && n <= kMaxIdLength;
}

bool NestedTooDeep(const Json& root) {
  std::vector<std::pair<const Json*, int>> stack{{&root, 1}};
  while (!stack.empty()) {
    auto [node, depth] = stack.back();
    stack.pop_back();
    if (!node->is_structured()) continue;
    if (depth > kMaxDepth) return true;
    for (const auto& child : *node) stack.emplace_back(&child, depth + 1);
  }
  return false;
}

// Collects the first field error of one frame; later checks are skipped once one failed.
class FieldChecker {
 public:
  FieldChecker(const Json& frame, std::string type) : frame_(frame), type_(std::move(type)) {}

  const std::optional<std::string>& error() const { return error_; }

  // nullptr when absent or null.
  const Json* Get(const char* key) {
    if (error_) return nullptr;
    auto it = frame_.find(key);
    if (it == frame_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  void Fail(const char* key, const std::string& what) {
    if (!error_) error_ = absl::StrCat(type_, ".", key, ": ", what);
  }

  // A required string; `non_empty` also refuses "".
  std::string RequiredString(const char* key) {
    const Json* v = Get(key);
    if (v == nullptr || !v->is_string() || v->get_ref<const std::string&>().empty()) {
      Fail(key, "required non-empty string");
      return "";
    }
    return v->get<std::string>();
  }

  std::string OptionalString(const char* key) {
    const Json* v = Get(key);
    if (v == nullptr) return "";
    if (!v->is_string()) {
      Fail(key, "expected a string");
      return "";
    }
    return v->get<std::string>();
  }

  // An optional string that must be one of `allowed` when present.
  std::string OptionalEnum(const char* key, const std::vector<std::string>& allowed,
                           std::string_view fallback) {
    const Json* v = Get(key);
    if (v == nullptr) return std::string(fallback);
    std::string joined;
    for (const auto& a : allowed) absl::StrAppend(&joined, joined.empty() ? "" : "|", a);
    if (v->is_string()) {
      const auto& s = v->get_ref<const std::string&>();
      for (const auto& a : allowed) {
        if (s == a) return s;
      }
    }
    Fail(key, absl::StrCat("expected one of ", joined));
    return std::string(fallback);
  }

  std::optional<bool> OptionalBool(const char* key) {
    const Json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_boolean()) {
      Fail(key, "expected true or false");
      return std::nullopt;
    }
    return v->get<bool>();
  }

  std::optional<double> OptionalNumber(const char* key, double min, double max) {
    const Json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < min ||
        v->get<double>() > max) {
      Fail(key, absl::StrCat("expected a number from ", min, " to ", max));
      return std::nullopt;
    }
    return v->get<double>();
  }

  // An integer in [min, max]; a float with an integral value (1e3, 5.0) counts as an integer.
  std::optional<int64_t> OptionalInteger(const char* key, int64_t min, int64_t max) {
    const Json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    std::optional<int64_t> value;
    if (v->is_number_unsigned()) {
      uint64_t u = v->get<uint64_t>();
      if (u <= static_cast<uint64_t>(max)) value = static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      value = v->get<int64_t>();
    } else if (v->is_number_float()) {
      double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && d >= static_cast<double>(min) &&
          d <= static_cast<double>(max)) {
        value = static_cast<int64_t>(d);
      }
    }
    if (!value || *value < min || *value > max) {
      Fail(key, absl::StrCat("expected an integer from ", min, " to ", max));
      return std::nullopt;
    }
    return value;
  }

 private:
  const Json& frame_;
  std::string type_;
  std::optional<std::string> error_;
};

const std::vector<std::string> kStrategies = {"failover", "hedge", "race", "fanout"};
const std::vector<std::string> kLanguages = {"python", "cpp"};
constexpr char kStateTopic[] = "consciousness_state";

void ParseChat(FieldChecker& f, anima::v1::ChatBody* chat) {
  chat->set_message(f.RequiredString("message"));
  chat->set_conversation_id(f.OptionalString("conversation_id"));
  chat->set_system(f.OptionalString("system"));
  chat->set_model(f.OptionalString("model"));
  chat->set_provider(f.OptionalString("provider"));
  chat->set_strategy(f.OptionalEnum("strategy", kStrategies, ""));
  chat->set_stream(f.OptionalBool("stream").value_or(false));
  if (auto t = f.OptionalNumber("temperature", 0, 2)) chat->set_temperature(*t);
  if (auto m = f.OptionalInteger("max_tokens", 1, 1000000)) {
    chat->set_max_tokens(static_cast<int32_t>(*m));
  }
}

void ParseSelfCoding(FieldChecker& f, anima::v1::SelfCodingBody* body) {
  body->set_task(f.RequiredString("task"));
  body->set_language(f.OptionalEnum("language", kLanguages, "python"));
  body->set_tests(f.OptionalString("tests"));
  body->set_max_attempts(static_cast<int32_t>(f.OptionalInteger("max_attempts", 1, 5).value_or(3)));
  if (const Json* files = f.Get("files")) {
    if (!files->is_object()) {
      f.Fail("files", "expected an object of path to file content");
      return;
    }
    for (const auto& [path, content] : files->items()) {
      if (path.empty() || !content.is_string()) {
        f.Fail("files", "expected an object of non-empty path to string content");
        return;
      }
      (*body->mutable_files())[path] = content.get<std::string>();
    }
  }
}

std::vector<std::string> ParseTopics(FieldChecker& f) {
  std::vector<std::string> topics;
  const Json* v = f.Get("topics");
  if (v == nullptr || !v->is_array() || v->empty()) {
    f.Fail("topics", "required non-empty array of strings");
    return topics;
  }
  for (const auto& t : *v) {
    if (!t.is_string()) {
      f.Fail("topics", "required non-empty array of strings");
      return topics;
    }
    const auto& name = t.get_ref<const std::string&>();
    if (name != kStateTopic) {
      std::string shown = name.size() > 64 ? name.substr(0, 64) + "..." : name;
      f.Fail("topics", absl::StrCat("unknown topic \"", shown, "\" (known: ", kStateTopic, ")"));
      return topics;
    }
    if (std::find(topics.begin(), topics.end(), name) == topics.end()) topics.push_back(name);
  }
  return topics;
}

}  // namespace

const std::vector<std::string>& FrameTranslator::BuiltinTypes() {
  static const std::vector<std::string> kTypes = {"chat",
                                                  "self_coding_request",
                                                  "self_coding_watch",
                                                  "self_coding_cancel",
                                                  "self_coding_list",
                                                  "consciousness_query",
                                                  "subscribe",
                                                  "unsubscribe",
                                                  "cancel",
                                                  "usage_query",
                                                  "ping"};
  return kTypes;
}

bool FrameTranslator::IsBuiltinType(std::string_view type) {
  const auto& builtin = BuiltinTypes();
  return std::find(builtin.begin(), builtin.end(), type) != builtin.end();
}

bool FrameTranslator::IsWellFormedType(std::string_view type) {
  if (type.empty() || type.size() > kMaxTypeLength) return false;
  for (char c : type) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string FrameTranslator::AssignId() const {
  return absl::StrCat("g-", next_id_.fetch_add(1, std::memory_order_relaxed) + 1);
}

ParseResult FrameTranslator::Parse(std::string_view text) const {
  Json frame = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (frame.is_discarded()) {
    return ProtocolError{kInvalidJson, "the frame is not valid JSON", AssignId(), ""};
  }
  if (!frame.is_object()) {
    return ProtocolError{kInvalidJson, "the frame must be a JSON object", AssignId(), ""};
  }
  if (NestedTooDeep(frame)) {
    return ProtocolError{kInvalidJson,
                         absl::StrCat("the frame is nested deeper than ", kMaxDepth, " levels"),
                         AssignId(), ""};
  }

  ParsedFrame out;
  auto id_it = frame.find("id");
  if (id_it == frame.end() || id_it->is_null()) {
    out.id = AssignId();
    out.id_assigned = true;
  } else if (!ValidId(*id_it)) {
    return ProtocolError{kInvalidMessage, "id: expected a string of 1 to 64 characters", AssignId(),
                         ""};
  } else {
    out.id = id_it->get<std::string>();
  }

  auto type_it = frame.find("type");
  if (type_it == frame.end() || !type_it->is_string() ||
      type_it->get_ref<const std::string&>().empty()) {
    return ProtocolError{kInvalidMessage, "type: required non-empty string", out.id, ""};
  }
  out.type = type_it->get<std::string>();
  // A type that is not built in may still be handled by a module the router is configured with;
  // only the router knows, so every well-formed name goes there. A name no module can have is
  // answered here.
  if (!IsBuiltinType(out.type) && !IsWellFormedType(out.type)) {
    std::string shown = out.type.size() > 64 ? out.type.substr(0, 64) + "..." : out.type;
    return ProtocolError{kUnknownType,
                         absl::StrCat("no module handles type \"", shown,
                                      "\" (type names are 1 to 64 characters of [a-z0-9_.-])"),
                         out.id, ""};
  }

  FieldChecker f(frame, out.type);
  auto& env = out.envelope;
  env.set_type(out.type);
  env.set_client_id(out.id);
  if (out.type == "ping") {
    out.kind = ParsedFrame::Kind::kPing;
  } else if (out.type == "subscribe" || out.type == "unsubscribe") {
    out.kind =
        out.type == "subscribe" ? ParsedFrame::Kind::kSubscribe : ParsedFrame::Kind::kUnsubscribe;
    out.topics = ParseTopics(f);
  } else if (out.type == "usage_query") {
    out.kind = ParsedFrame::Kind::kUsageQuery;
    out.principal = f.OptionalString("principal");
    if (out.principal.size() > 128) f.Fail("principal", "expected at most 128 characters");
  } else if (out.type == "cancel") {
    out.kind = ParsedFrame::Kind::kCancel;
    out.target_id = f.RequiredString("target_id");
    if (!f.error() && CharCount(out.target_id) > kMaxIdLength) {
      f.Fail("target_id", "expected a string of 1 to 64 characters");
    }
  } else {
    out.kind = ParsedFrame::Kind::kRouted;
    if (auto t = f.OptionalInteger("timeout_ms", 1, 600000)) env.set_timeout_ms(*t);
    if (out.type == "chat") {
      ParseChat(f, env.mutable_chat());
    } else if (out.type == "self_coding_request") {
      ParseSelfCoding(f, env.mutable_self_coding());
    } else if (out.type == "self_coding_watch") {
      auto* watch = env.mutable_self_coding_watch();
      watch->set_job_id(f.RequiredString("job_id"));
      watch->set_after_seq(
          f.OptionalInteger("after_seq", 0, std::numeric_limits<int64_t>::max()).value_or(0));
    } else if (out.type == "self_coding_cancel") {
      env.mutable_self_coding_cancel()->set_job_id(f.RequiredString("job_id"));
    } else if (out.type == "self_coding_list") {
      auto* list = env.mutable_self_coding_list();
      list->set_limit(static_cast<int32_t>(f.OptionalInteger("limit", 1, 100).value_or(20)));
      list->set_status(
          f.OptionalEnum("status", {"queued", "running", "succeeded", "failed", "cancelled"}, ""));
      list->set_all_principals(f.OptionalBool("all").value_or(false));
    } else if (out.type == "consciousness_query") {
      env.mutable_consciousness_query();
    } else {
      // An external module's type: the module sees the frame as the client sent it, with the
      // id the replies will carry.
      frame["id"] = out.id;
      env.set_raw_json(frame.dump(-1, ' ', false, Json::error_handler_t::replace));
    }
  }
  if (f.error()) return ProtocolError{kInvalidMessage, *f.error(), out.id, out.type};
  return out;
}

}  // namespace anima::gateway
