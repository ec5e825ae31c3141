#include "gateway/openai_api.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <random>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gateway/frame_translator.h"
#include "nlohmann/json.hpp"

namespace anima::gateway {

namespace {

using Json = nlohmann::json;

// Provider text may carry invalid UTF-8; it is replaced rather than failing the object.
std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

OpenAiError Invalid(std::string message, std::string param = {}) {
  OpenAiError e;
  e.http_status = 400;
  e.type = "invalid_request_error";
  e.code = kInvalidMessage;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

OpenAiError Make(int status, std::string type, std::string code, std::string message) {
  OpenAiError e;
  e.http_status = status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  return e;
}

// A message's content: a string, null, or an array of parts of which only text parts are
// understood. Returns false when it is none of these.
bool ContentText(const Json& content, std::string* out, std::string* why) {
  if (content.is_null()) return true;
  if (content.is_string()) {
    *out = content.get<std::string>();
    return true;
  }
  if (!content.is_array()) {
    *why = "must be a string or an array of content parts";
    return false;
  }
  for (const auto& part : content) {
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      *why = "holds a content part that is not an object with a string `type`";
      return false;
    }
    if (part["type"] != "text") {
      *why = absl::StrCat("holds a `", part["type"].get<std::string>(),
                          "` part: only text parts are supported");
      return false;
    }
    if (!part.contains("text") || !part["text"].is_string()) {
      *why = "holds a text part without a string `text`";
      return false;
    }
    out->append(part["text"].get<std::string>());
  }
  return true;
}

std::string NewCompletionId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("chatcmpl-%016x%08x", rng(), static_cast<uint32_t>(rng()));
}

Json UsageJson(const anima::v1::Usage& u) {
  return Json{{"prompt_tokens", u.prompt_tokens()},
              {"completion_tokens", u.completion_tokens()},
              {"total_tokens", u.total_tokens()}};
}

std::string FinishReason(const anima::v1::ChatResponse& r) {
  return r.finish_reason().empty() ? "stop" : r.finish_reason();
}

}  // namespace

std::variant<ChatCompletionRequest, OpenAiError> OpenAiApi::ParseChatCompletion(
    std::string_view body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    OpenAiError e = Invalid("the request body is not valid JSON");
    e.code = kInvalidJson;
    return e;
  }
  if (!j.is_object()) {
    OpenAiError e = Invalid("the request body must be a JSON object");
    e.code = kInvalidJson;
    return e;
  }
  ChatCompletionRequest out;
  anima::v1::Envelope& envelope = out.envelope;
  envelope.set_type("chat");
  anima::v1::ChatBody* chat = envelope.mutable_chat();
  chat->set_stateless(true);  // the client sends the whole conversation every time

  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string()) return Invalid("`model` must be a string", "model");
    std::string model = j["model"].get<std::string>();
    if (model.size() > 256) return Invalid("`model` is over 256 bytes", "model");
    if (!model.empty() && model != "auto") {
      size_t slash = model.find('/');
      if (slash == std::string::npos) {
        chat->set_model(model);
      } else {
        if (slash == 0 || slash + 1 == model.size()) {
          return Invalid("`model` must be `auto`, a model name or `provider/model`", "model");
        }
        chat->set_provider(model.substr(0, slash));
        chat->set_model(model.substr(slash + 1));
      }
    }
  }

  if (!j.contains("messages")) return Invalid("`messages` is required", "messages");
  const Json& messages = j["messages"];
  if (!messages.is_array()) return Invalid("`messages` must be an array", "messages");
  if (messages.empty()) return Invalid("`messages` must not be empty", "messages");
  std::vector<std::string> system;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Invalid(absl::StrCat("`", param, "` must be an object"), param);
    if (!m.contains("role") || !m["role"].is_string()) {
      return Invalid(absl::StrCat("`", param, ".role` must be a string"), param + ".role");
    }
    std::string role = m["role"].get<std::string>();
    std::string text;
    std::string why;
    if (m.contains("content") && !ContentText(m["content"], &text, &why)) {
      return Invalid(absl::StrCat("`", param, ".content` ", why), param + ".content");
    }
    bool last = i + 1 == messages.size();
    if (role == "system" || role == "developer") {
      if (last) {
        return Invalid("the last message must be the user's", param + ".role");
      }
      system.push_back(std::move(text));
    } else if (role == "user" || role == "assistant") {
      if (last) {
        if (role != "user") return Invalid("the last message must be the user's", param + ".role");
        chat->set_message(std::move(text));
      } else {
        auto* turn = chat->add_history();
        turn->set_role(role);
        turn->set_content(std::move(text));
      }
    } else {
      return Invalid(absl::StrCat("`", param, ".role` \"", role,
                                  "\" is not supported: use system, developer, user or assistant"),
                     param + ".role");
    }
  }
  if (!system.empty()) chat->set_system(absl::StrJoin(system, "\n\n"));

  if (j.contains("temperature") && !j["temperature"].is_null()) {
    const Json& t = j["temperature"];
    if (!t.is_number() || t.get<double>() < 0 || t.get<double>() > 2) {
      return Invalid("`temperature` must be a number from 0 to 2", "temperature");
    }
    chat->set_temperature(t.get<double>());
  }
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    if (!j.contains(name) || j[name].is_null()) continue;
    const Json& t = j[name];
    if (!t.is_number_integer() || t.get<int64_t>() < 1 || t.get<int64_t>() > (1 << 30)) {
      return Invalid(absl::StrCat("`", name, "` must be a positive integer"), name);
    }
    if (!chat->has_max_tokens()) chat->set_max_tokens(static_cast<int32_t>(t.get<int64_t>()));
  }
  if (j.contains("n") && !j["n"].is_null() && j["n"] != 1) {
    return Invalid("only `n` = 1 is supported", "n");
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) return Invalid("`stream` must be a boolean", "stream");
    out.stream = j["stream"].get<bool>();
  }
  chat->set_stream(out.stream);
  if (j.contains("stream_options") && !j["stream_options"].is_null()) {
    const Json& o = j["stream_options"];
    if (!o.is_object()) return Invalid("`stream_options` must be an object", "stream_options");
    if (o.contains("include_usage")) {
      if (!o["include_usage"].is_boolean()) {
        return Invalid("`stream_options.include_usage` must be a boolean",
                       "stream_options.include_usage");
      }
      out.include_usage = o["include_usage"].get<bool>();
    }
  }
  return out;
}

std::string OpenAiApi::RenderError(const OpenAiError& error) {
  Json e = Json::object();
  e["message"] = error.message;
  e["type"] = error.type;
  e["param"] = error.param.empty() ? Json(nullptr) : Json(error.param);
  e["code"] = error.code.empty() ? Json(nullptr) : Json(error.code);
  return Dump(Json{{"error", std::move(e)}});
}

OpenAiError OpenAiApi::ErrorFromEvent(const anima::v1::ErrorEvent& event) {
  const std::string& code = event.code();
  std::string message = event.message();
  if (event.causes_size() > 0) {
    std::vector<std::string> causes;
    for (const auto& c : event.causes()) {
      causes.push_back(
          absl::StrCat(c.provider(), ": ", c.code(),
                       c.message().empty() ? "" : absl::StrCat(" (", c.message(), ")")));
    }
    absl::StrAppend(&message, " [", absl::StrJoin(causes, "; "), "]");
  }
  OpenAiError e;
  if (code == kInvalidJson || code == kInvalidMessage || code == kUnknownType) {
    e = Make(400, "invalid_request_error", code, message);
  } else if (code == kTooLarge) {
    e = Make(413, "invalid_request_error", code, message);
  } else if (code == kUnauthenticated) {
    e = Make(401, "authentication_error", code, message);
  } else if (code == kNotFound) {
    e = Make(404, "invalid_request_error", code, message);
  } else if (code == kQuotaExceeded) {
    QuotaRefusal refusal;
    refusal.limit = event.limit();
    refusal.message = message;
    refusal.retry_after = std::chrono::milliseconds(event.retry_after_ms());
    refusal.budget = absl::StartsWith(refusal.limit, "cost_") ||
                     absl::EndsWith(refusal.limit, "_per_day") ||
                     absl::EndsWith(refusal.limit, "_per_month");
    e = QuotaExceeded(refusal);
  } else if (code == kRateLimited || code == "overloaded" || code == kTooManyInFlight) {
    e = Make(429, "rate_limit_error", code, message);
    e.retry_after_seconds =
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(event.retry_after_ms() / 1000.0)));
  } else if (code == kUnavailable) {
    e = Make(503, "server_error", code, message);
  } else if (code == "provider_error") {
    e = Make(502, "server_error", code, message);
  } else if (code == kDeadlineExceeded) {
    e = Make(504, "server_error", code, message);
  } else {
    e = Make(500, "server_error", code.empty() ? kInternal : code, message);
  }
  if (e.message.empty()) e.message = e.code;
  return e;
}

OpenAiError OpenAiApi::ErrorFromStatus(grpc::StatusCode code, std::string_view message) {
  switch (code) {
    case grpc::StatusCode::UNAVAILABLE:
      return Make(503, "server_error", kUnavailable, "router unavailable");
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Make(504, "server_error", kDeadlineExceeded, "the request ran past its deadline");
    case grpc::StatusCode::RESOURCE_EXHAUSTED: {
      OpenAiError e = Make(429, "rate_limit_error", "overloaded",
                           absl::StrCat("router: ", std::string(message)));
      e.retry_after_seconds = 1;
      return e;
    }
    case grpc::StatusCode::CANCELLED:
      return Make(503, "server_error", kCancelled, "the request was cancelled");
    case grpc::StatusCode::OK:
      return Make(500, "server_error", kInternal, "the router ended the request without an answer");
    default:
      return Make(500, "server_error", kInternal, absl::StrCat("router: ", std::string(message)));
  }
}

OpenAiError OpenAiApi::Overloaded(std::chrono::milliseconds retry_after) {
  OpenAiError e = Make(429, "rate_limit_error", kOverloaded,
                       "the gateway is past what it can serve now; retry after Retry-After");
  e.retry_after_ms = std::max<int64_t>(1, retry_after.count());
  e.retry_after_seconds = (e.retry_after_ms + 999) / 1000;
  return e;
}

OpenAiError OpenAiApi::BodyTooLarge(size_t limit) {
  return Make(413, "invalid_request_error", kTooLarge,
              absl::StrCat("the request body is over ", limit, " bytes"));
}

OpenAiError OpenAiApi::Unauthenticated(std::string_view message) {
  return Make(401, "authentication_error", kUnauthenticated, std::string(message));
}

OpenAiError OpenAiApi::QuotaExceeded(const QuotaRefusal& refusal) {
  const char* kind = refusal.budget ? "insufficient_quota" : "rate_limit_exceeded";
  OpenAiError e = Make(429, kind, kind, refusal.message);
  e.param = refusal.limit;
  int64_t ms = std::max<int64_t>(1, refusal.retry_after.count());
  e.retry_after_ms = ms;
  e.retry_after_seconds = (ms + 999) / 1000;
  return e;
}

std::string OpenAiApi::ResetDuration(std::chrono::milliseconds d) {
  int64_t ms = std::max<int64_t>(0, d.count());
  if (ms < 1000) return absl::StrCat(ms, "ms");
  if (ms < 60000) {
    std::string s = absl::StrFormat("%.3f", ms / 1000.0);
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
    return s + "s";
  }
  int64_t minutes = ms / 60000;
  std::string seconds = absl::StrFormat("%.3f", (ms % 60000) / 1000.0);
  while (seconds.back() == '0') seconds.pop_back();
  if (seconds.back() == '.') seconds.pop_back();
  return absl::StrCat(minutes, "m", seconds, "s");
}

std::string OpenAiApi::RenderModelList(
    const std::vector<std::pair<std::string, std::string>>& provider_models) {
  Json data = Json::array();
  for (const auto& [provider, model] : provider_models) {
    data.push_back(Json{{"id", absl::StrCat(provider, "/", model)},
                        {"object", "model"},
                        {"created", 0},
                        {"owned_by", provider}});
  }
  return Dump(Json{{"object", "list"}, {"data", std::move(data)}});
}

ChatCompletionRenderer::ChatCompletionRenderer(std::string requested_model)
    : id_(NewCompletionId()),
      created_(static_cast<int64_t>(std::time(nullptr))),
      model_(requested_model.empty() ? "auto" : std::move(requested_model)) {}

std::string ChatCompletionRenderer::Completion(const anima::v1::ChatResponse& r) const {
  Json message{{"role", "assistant"}, {"content", r.message()}};
  Json choice{{"index", 0},
              {"message", std::move(message)},
              {"logprobs", nullptr},
              {"finish_reason", FinishReason(r)}};
  std::string model = r.model().empty() ? model_ : r.model();
  return Dump(Json{{"id", id_},
                   {"object", "chat.completion"},
                   {"created", created_},
                   {"model", model},
                   {"choices", Json::array({std::move(choice)})},
                   {"usage", UsageJson(r.usage())}});
}

namespace {
Json Chunk(const std::string& id, int64_t created, const std::string& model, Json choices) {
  return Json{{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", model},
              {"choices", std::move(choices)}};
}
}  // namespace

std::string ChatCompletionRenderer::RoleChunk() const {
  Json choice{{"index", 0},
              {"delta", Json{{"role", "assistant"}, {"content", ""}}},
              {"logprobs", nullptr},
              {"finish_reason", nullptr}};
  return Dump(Chunk(id_, created_, model_, Json::array({std::move(choice)})));
}

std::string ChatCompletionRenderer::DeltaChunk(std::string_view text) const {
  Json choice{{"index", 0},
              {"delta", Json{{"content", text}}},
              {"logprobs", nullptr},
              {"finish_reason", nullptr}};
  return Dump(Chunk(id_, created_, model_, Json::array({std::move(choice)})));
}

std::string ChatCompletionRenderer::FinishChunk(const anima::v1::ChatResponse& r) {
  // From here on the chunks name the model that answered.
  if (!r.model().empty()) model_ = r.model();
  Json choice{{"index", 0},
              {"delta", Json::object()},
              {"logprobs", nullptr},
              {"finish_reason", FinishReason(r)}};
  return Dump(Chunk(id_, created_, model_, Json::array({std::move(choice)})));
}

std::string ChatCompletionRenderer::UsageChunk(const anima::v1::ChatResponse& r) const {
  Json j = Chunk(id_, created_, model_, Json::array());
  j["usage"] = UsageJson(r.usage());
  return Dump(j);
}

}  // namespace anima::gateway
