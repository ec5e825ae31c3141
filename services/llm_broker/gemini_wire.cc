#include "services/llm_broker/gemini_wire.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/wire_json.h"

namespace anima::broker::gemini {
namespace {

using nlohmann::json;
using wire::CountMember;
using wire::InvalidResponse;
using wire::Member;
using wire::StringMember;

std::optional<Usage> UsageFrom(const json& j) {
  const json* u = Member(j, "usageMetadata");
  if (u == nullptr || !u->is_object()) return std::nullopt;
  Usage usage;
  usage.prompt_tokens = CountMember(*u, "promptTokenCount").value_or(0);
  usage.completion_tokens = CountMember(*u, "candidatesTokenCount").value_or(0) +
                            CountMember(*u, "thoughtsTokenCount").value_or(0);
  usage.total_tokens =
      CountMember(*u, "totalTokenCount").value_or(usage.prompt_tokens + usage.completion_tokens);
  return usage;
}

// The body's error object, unwrapping a one-element array.
const json* ErrorObject(const json& j) {
  const json* root = &j;
  if (root->is_array() && root->size() == 1) root = &(*root)[0];
  return Member(*root, "error");
}

bool RetryableStatus(std::string_view status) {
  return status == "UNAVAILABLE" || status == "INTERNAL" || status == "DEADLINE_EXCEEDED" ||
         status == "RESOURCE_EXHAUSTED" || status == "ABORTED" || status.empty();
}

// Fills message, retry hint and quota flag from a Google error object.
void ReadError(const json& err, ProviderError& e, bool& per_day, std::string& status) {
  if (err.is_string()) {
    e.message = err.get<std::string>();
    return;
  }
  if (!err.is_object()) return;
  e.message = StringMember(err, "message");
  status = StringMember(err, "status");
  const json* details = Member(err, "details");
  if (details == nullptr || !details->is_array()) return;
  for (const auto& d : *details) {
    std::string type = StringMember(d, "@type");
    if (absl::EndsWith(type, "google.rpc.RetryInfo")) {
      if (auto delay = ParseDuration(StringMember(d, "retryDelay"))) e.retry_after = delay;
    } else if (absl::EndsWith(type, "google.rpc.QuotaFailure")) {
      if (const json* v = Member(d, "violations"); v != nullptr && v->is_array()) {
        for (const auto& violation : *v) {
          if (absl::StrContains(StringMember(violation, "quotaId"), "PerDay")) per_day = true;
        }
      }
    }
  }
}

Chunk ChunkFrom(const json& j) {
  Chunk chunk;
  chunk.model = StringMember(j, "modelVersion");
  chunk.usage = UsageFrom(j);
  if (const json* feedback = Member(j, "promptFeedback"); feedback != nullptr) {
    chunk.block_reason = StringMember(*feedback, "blockReason");
    if (!chunk.block_reason.empty()) {
      chunk.blocked = true;
      chunk.finish_reason = "content_filter";
    }
  }
  const json* candidates = Member(j, "candidates");
  if (candidates == nullptr || !candidates->is_array() || candidates->empty()) return chunk;
  const json& first = (*candidates)[0];
  bool function_call = false;
  if (const json* content = Member(first, "content"); content != nullptr) {
    if (const json* parts = Member(*content, "parts"); parts != nullptr && parts->is_array()) {
      for (const auto& part : *parts) {
        if (!part.is_object()) continue;
        if (Member(part, "functionCall") != nullptr) function_call = true;
        if (const json* thought = Member(part, "thought");
            thought != nullptr && thought->is_boolean() && thought->get<bool>()) {
          continue;  // reasoning summaries are not part of the answer
        }
        chunk.delta += StringMember(part, "text");
      }
    }
  }
  std::string finish = StringMember(first, "finishReason");
  if (!finish.empty()) chunk.finish_reason = NormalizeFinishReason(finish, function_call);
  return chunk;
}

}  // namespace

std::string BuildRequestBody(const ChatRequest& request) {
  json body = json::object();
  std::string system = request.system;
  json contents = json::array();
  for (const auto& m : request.messages) {
    if (m.role == "system" || m.role == "developer") {
      if (!system.empty()) system += "\n\n";
      system += m.content;
      continue;
    }
    contents.push_back({{"role", m.role == "assistant" ? "model" : "user"},
                        {"parts", json::array({{{"text", m.content}}})}});
  }
  if (!system.empty()) {
    body["systemInstruction"] = {{"parts", json::array({{{"text", system}}})}};
  }
  body["contents"] = std::move(contents);
  json config = json::object();
  if (request.temperature) config["temperature"] = *request.temperature;
  if (request.max_tokens) config["maxOutputTokens"] = *request.max_tokens;
  if (!config.empty()) body["generationConfig"] = std::move(config);
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string NormalizeFinishReason(std::string_view reason, bool function_call) {
  if (reason == "STOP") return function_call ? "tool_calls" : "stop";
  if (reason == "MAX_TOKENS") return "length";
  if (reason == "SAFETY" || reason == "RECITATION" || reason == "BLOCKLIST" ||
      reason == "PROHIBITED_CONTENT" || reason == "SPII" || reason == "LANGUAGE" ||
      reason == "MODEL_ARMOR" || reason.substr(0, 6) == "IMAGE_") {
    return reason == "IMAGE_OTHER" ? "other" : "content_filter";
  }
  return "other";
}

std::optional<Usage> ParseUsage(std::string_view usage_metadata_json) {
  json u = json::parse(usage_metadata_json, nullptr, /*allow_exceptions=*/false);
  if (u.is_discarded()) return std::nullopt;
  return UsageFrom(json{{"usageMetadata", std::move(u)}});
}

std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(absl::string_view(text.data(), text.size()));
  if (!absl::ConsumeSuffix(&t, "s")) return std::nullopt;
  double seconds = 0;
  if (!absl::SimpleAtod(t, &seconds) || !std::isfinite(seconds) || seconds < 0 || seconds > 1e7) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::ceil(seconds * 1000)));
}

std::variant<Chunk, ProviderError> ParseChunk(std::string_view data) {
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_array() && j.size() == 1) j = j[0];
  if (j.is_discarded() || !j.is_object()) {
    return InvalidResponse("a stream event is not a JSON object");
  }
  if (const json* err = Member(j, "error"); err != nullptr) {
    ProviderError e;
    e.code = "stream_error";
    bool per_day = false;
    std::string status;
    ReadError(*err, e, per_day, status);
    e.retryable = RetryableStatus(status) && !per_day;
    if (e.message.empty()) e.message = "provider reported an error";
    return e;
  }
  return ChunkFrom(j);
}

std::variant<ChatResult, ProviderError> ParseResponse(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !(j.is_object() || j.is_array())) {
    return InvalidResponse("the response body is not JSON");
  }
  json elements = j.is_array() ? j : json::array({j});
  ChatResult result;
  bool finished = false;
  bool any = false;
  for (const auto& element : elements) {
    if (!element.is_object()) return InvalidResponse("a response element is not an object");
    if (const json* err = Member(element, "error"); err != nullptr) {
      auto parsed = ParseChunk(element.dump());
      return std::get<ProviderError>(std::move(parsed));
    }
    Chunk chunk = ChunkFrom(element);
    any = true;
    result.text += chunk.delta;
    if (!chunk.model.empty()) result.model = chunk.model;
    if (chunk.usage) result.usage = chunk.usage;
    if (chunk.finish_reason) {
      result.finish_reason = *chunk.finish_reason;
      finished = true;
    }
  }
  if (!any) return InvalidResponse("the response is an empty array");
  if (!finished) {
    if (result.text.empty()) return InvalidResponse("the response has no candidates");
    result.finish_reason = "stop";
  }
  return result;
}

ProviderError ParseHttpError(int status, std::string_view body) {
  ProviderError e;
  e.http_status = status;
  e.code = absl::StrCat("http_", status);
  bool per_day = false;
  std::string google_status;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded()) {
    if (const json* err = ErrorObject(j); err != nullptr)
      ReadError(*err, e, per_day, google_status);
  }
  if (e.message.empty()) {
    std::string excerpt(body.substr(0, 200));
    for (char& c : excerpt) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    e.message = excerpt.empty() ? absl::StrCat("HTTP ", status)
                                : absl::StrCat("HTTP ", status, ": ", excerpt);
  }
  e.retryable = status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
                status == 504;
  if (status == 429 && per_day) {
    e.retryable = false;
    e.code = "http_429_quota";
  }
  return e;
}

}  // namespace anima::broker::gemini
