#include "services/llm_broker/openai_wire.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "services/llm_broker/wire_json.h"

namespace anima::broker {

std::string NormalizeFinishReason(std::string_view reason) {
  std::string r(reason);
  absl::AsciiStrToLower(&r);
  if (r == "stop" || r == "end_turn" || r == "stop_sequence") return "stop";
  if (r == "length" || r == "max_tokens") return "length";
  if (r == "content_filter" || r == "safety" || r == "recitation" || r == "blocklist" ||
      r == "prohibited_content" || r == "spii") {
    return "content_filter";
  }
  if (r == "tool_calls" || r == "function_call" || r == "tool_use") return "tool_calls";
  return "other";
}

}  // namespace anima::broker

namespace anima::broker::openai {
namespace {

using nlohmann::json;
using wire::CountMember;
using wire::InvalidResponse;
using wire::Member;
using wire::StringMember;

std::optional<Usage> ParseUsage(const json& j) {
  const json* u = Member(j, "usage");
  if (u == nullptr || !u->is_object()) return std::nullopt;
  Usage usage;
  usage.prompt_tokens = CountMember(*u, "prompt_tokens").value_or(0);
  usage.completion_tokens = CountMember(*u, "completion_tokens").value_or(0);
  usage.total_tokens = CountMember(*u, "total_tokens").value_or(0);
  if (usage.total_tokens == 0) usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  return usage;
}

// The first choice, if `choices` is a non-empty array whose first element is an object.
const json* FirstChoice(const json& j) {
  const json* choices = Member(j, "choices");
  if (choices == nullptr || !choices->is_array() || choices->empty()) return nullptr;
  const json& first = (*choices)[0];
  return first.is_object() ? &first : nullptr;
}

std::optional<ProviderError> ErrorFromJson(const json& j) {
  const json* err = Member(j, "error");
  if (err == nullptr) return std::nullopt;
  if (err->is_boolean() && !err->get<bool>()) return std::nullopt;
  ProviderError e;
  e.code = "stream_error";
  e.retryable = true;
  if (err->is_string()) {
    e.message = err->get<std::string>();
  } else if (err->is_object()) {
    e.message = StringMember(*err, "message");
    std::string type = StringMember(*err, "type");
    std::string code = StringMember(*err, "code");
    if (type == "insufficient_quota" || code == "insufficient_quota" ||
        code == "credit_balance_exhausted" || type == "invalid_request_error") {
      e.retryable = false;
    }
    if (e.message.empty()) e.message = !type.empty() ? type : code;
  } else {
    e.message = err->dump();
  }
  if (e.message.empty()) e.message = "provider reported an error";
  return e;
}

}  // namespace

std::string BuildRequestBody(const ChatRequest& request, bool venice) {
  json body = json::object();
  body["model"] = request.model;
  json messages = json::array();
  if (!request.system.empty()) {
    messages.push_back({{"role", "system"}, {"content", request.system}});
  }
  for (const auto& m : request.messages) {
    messages.push_back({{"role", m.role}, {"content", m.content}});
  }
  body["messages"] = std::move(messages);
  if (request.temperature) body["temperature"] = *request.temperature;
  if (request.max_tokens) body["max_completion_tokens"] = *request.max_tokens;
  if (request.stream) {
    body["stream"] = true;
    body["stream_options"] = {{"include_usage", true}};
  }
  if (venice) body["venice_parameters"] = {{"include_venice_system_prompt", false}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::variant<ChatResult, ProviderError> ParseResponse(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidResponse("the response body is not a JSON object");
  }
  if (auto err = ErrorFromJson(j)) return *err;
  ChatResult result;
  result.model = StringMember(j, "model");
  result.usage = ParseUsage(j);
  const json* choice = FirstChoice(j);
  if (choice == nullptr) return InvalidResponse("the response has no choices");
  if (const json* message = Member(*choice, "message"); message != nullptr) {
    result.text = StringMember(*message, "content");
    if (result.text.empty()) result.text = StringMember(*message, "refusal");
  }
  std::string finish = StringMember(*choice, "finish_reason");
  result.finish_reason = finish.empty() ? "stop" : NormalizeFinishReason(finish);
  return result;
}

bool IsDone(std::string_view data) { return data.substr(0, 6) == "[DONE]"; }

std::variant<StreamChunk, ProviderError> ParseChunk(std::string_view data) {
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidResponse("a stream event is not a JSON object");
  }
  if (auto err = ErrorFromJson(j)) return *err;
  StreamChunk chunk;
  chunk.model = StringMember(j, "model");
  chunk.usage = ParseUsage(j);
  if (const json* choice = FirstChoice(j); choice != nullptr) {
    if (const json* delta = Member(*choice, "delta"); delta != nullptr) {
      chunk.delta = StringMember(*delta, "content");
    }
    std::string finish = StringMember(*choice, "finish_reason");
    if (!finish.empty()) chunk.finish_reason = NormalizeFinishReason(finish);
  }
  return chunk;
}

std::optional<ProviderError> ErrorFromBody(std::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  if (j.is_array() && j.size() == 1) j = j[0];  // Gemini-style wrapping on compatible servers
  return ErrorFromJson(j);
}

namespace {

std::optional<std::chrono::milliseconds> ParseRetryAfter(
    const HttpResponseHead* head, std::chrono::system_clock::time_point now) {
  if (head == nullptr) return std::nullopt;
  if (auto ms = head->Header("retry-after-ms")) {
    double v = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(*ms), &v) && std::isfinite(v) && v >= 0 &&
        v < 1e9) {
      return std::chrono::milliseconds(static_cast<int64_t>(v));
    }
  }
  if (auto s = head->Header("retry-after")) {
    if (auto delay = ParseRetryAfterValue(*s, now)) return delay;
  }
  return std::nullopt;
}

// Venice's x-ratelimit-reset-requests: the unix time (seconds) when requests are allowed again.
// OpenAI uses the same header for a duration ("6m0s"), which is not a plain integer.
std::optional<std::chrono::milliseconds> ParseEpochReset(
    const HttpResponseHead* head, std::chrono::system_clock::time_point now) {
  if (head == nullptr) return std::nullopt;
  auto value = head->Header("x-ratelimit-reset-requests");
  if (!value) return std::nullopt;
  // From 2001 to 2100: a plausible timestamp, and far inside what system_clock's nanoseconds
  // hold (to 2262), so the arithmetic below cannot overflow (libFuzzer found 99999999999 did).
  constexpr int64_t kEarliest = 1'000'000'000, kLatest = 4'102'444'800;
  int64_t epoch = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*value), &epoch) || epoch < kEarliest ||
      epoch > kLatest) {
    return std::nullopt;
  }
  auto at = std::chrono::system_clock::time_point(std::chrono::seconds(epoch));
  if (at <= now) return std::chrono::milliseconds(0);
  return std::chrono::duration_cast<std::chrono::milliseconds>(at - now);
}

// "Please try again in 84ms." / "... in 1.5s." in a 429 message (OpenAI sends it without a
// header sometimes).
std::optional<std::chrono::milliseconds> RetryAfterFromMessage(const std::string& message) {
  static constexpr char kMarker[] = "try again in ";
  size_t pos = message.find(kMarker);
  if (pos == std::string::npos) return std::nullopt;
  pos += sizeof(kMarker) - 1;
  size_t end = pos;
  while (end < message.size() &&
         (std::isdigit(static_cast<unsigned char>(message[end])) || message[end] == '.')) {
    ++end;
  }
  double value = 0;
  if (end == pos || !absl::SimpleAtod(message.substr(pos, end - pos), &value)) {
    return std::nullopt;
  }
  if (message.compare(end, 2, "ms") == 0) {
    return std::chrono::milliseconds(static_cast<int64_t>(value));
  }
  if (message.compare(end, 1, "s") == 0 && value < 1e6) {
    return std::chrono::milliseconds(static_cast<int64_t>(value * 1000));
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::chrono::milliseconds> ParseRetryAfterValue(
    std::string_view value, std::chrono::system_clock::time_point now) {
  absl::string_view text =
      absl::StripAsciiWhitespace(absl::string_view(value.data(), value.size()));
  double v = 0;
  if (absl::SimpleAtod(text, &v)) {
    if (std::isfinite(v) && v >= 0 && v < 1e6) {
      return std::chrono::milliseconds(static_cast<int64_t>(v * 1000));
    }
    return std::nullopt;
  }
  // IMF-fixdate, e.g. "Wed, 21 Oct 2015 07:28:00 GMT" (RFC 9110 §5.6.7).
  absl::Time at;
  std::string error;
  if (!absl::ParseTime("%a, %d %b %Y %H:%M:%S GMT", std::string(text), absl::UTCTimeZone(), &at,
                       &error)) {
    return std::nullopt;
  }
  auto when = absl::ToChronoTime(at);
  if (when <= now) return std::chrono::milliseconds(0);
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(when - now);
  if (delay > std::chrono::hours(24 * 365)) return std::nullopt;
  return delay;
}

ProviderError ParseHttpError(int status, const HttpResponseHead* head, std::string_view body,
                             std::chrono::system_clock::time_point now) {
  ProviderError e;
  e.http_status = status;
  e.code = absl::StrCat("http_", status);
  e.retry_after = ParseRetryAfter(head, now);
  std::string type;
  std::string code;
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_discarded() && j.is_array() && j.size() == 1) j = j[0];
  if (!j.is_discarded() && j.is_object()) {
    if (const json* err = Member(j, "error"); err != nullptr) {
      if (err->is_string()) {
        e.message = err->get<std::string>();
      } else if (err->is_object()) {
        e.message = StringMember(*err, "message");
        type = StringMember(*err, "type");
        code = StringMember(*err, "code");
        if (code.empty()) code = StringMember(*err, "status");
      }
    }
  }
  if (e.message.empty()) {
    // Not JSON (an HTML page from a load balancer) or no message: keep a short printable excerpt.
    std::string excerpt(body.substr(0, 200));
    for (char& c : excerpt) {
      if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    e.message = excerpt.empty() ? absl::StrCat("HTTP ", status)
                                : absl::StrCat("HTTP ", status, ": ", excerpt);
  }
  bool quota = type == "insufficient_quota" || code == "insufficient_quota" ||
               code == "credit_balance_exhausted";
  e.retryable = status == 408 || status == 409 || (status == 429 && !quota) || status >= 500;
  if (head != nullptr) {
    if (auto should = head->Header("x-should-retry")) {
      if (*should == "true") e.retryable = true;
      if (*should == "false") e.retryable = false;
    }
  }
  if (quota) e.code = "http_429_quota";
  if (status == 429 && !quota && !e.retry_after) e.retry_after = ParseEpochReset(head, now);
  if (status == 429 && !quota && !e.retry_after) e.retry_after = RetryAfterFromMessage(e.message);
  return e;
}

}  // namespace anima::broker::openai
