#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "services/llm_broker/http_transport.h"
#include "services/llm_broker/types.h"

namespace anima::broker::openai {

// The JSON body of POST /chat/completions for `request` (request.model already resolved). Only set
// fields are written (no nulls); streaming adds stream_options.include_usage. The system prompt
// becomes a leading "system" message. `venice` adds venice_parameters with Venice's own system
// prompt switched off (include_venice_system_prompt: false), so answers do not depend on it.
std::string BuildRequestBody(const ChatRequest& request, bool venice = false);

// A parsed non-streaming response. Every field is optional on the wire; missing ones stay empty.
// Fails (code invalid_response, or the provider's error when the body carries `error`) when the
// body is not a JSON object.
std::variant<ChatResult, ProviderError> ParseResponse(std::string_view body);

// One `data:` payload of a stream, already known not to be "[DONE]".
struct StreamChunk {
  std::string delta;                         // choices[0].delta.content, may be empty
  std::optional<std::string> finish_reason;  // normalised, when choices[0] carried one
  std::optional<Usage> usage;                // when this chunk carried a non-null usage
  std::string model;
};
// A chunk, or the error it carried (a top-level `error` is checked first) or invalid_response.
std::variant<StreamChunk, ProviderError> ParseChunk(std::string_view data);

// Whether an SSE data payload ends the stream (openai-python: anything starting with "[DONE]").
bool IsDone(std::string_view data);

// Maps an HTTP error (status, headers, body: JSON in OpenAI's shape, Venice's string shape, or
// anything else such as a CDN's HTML page) to a normalised error with a retry decision and the
// server's delay hint: retry-after-ms, then Retry-After (seconds or an HTTP date), then for a 429
// Venice's x-ratelimit-reset-requests when it is a unix timestamp (OpenAI sends a duration
// there, which is ignored), then "try again in Xms" in the message. `head` may be null; `now` is
// the wall clock the dates are compared with.
ProviderError ParseHttpError(
    int status, const HttpResponseHead* head, std::string_view body,
    std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

// The delay a Retry-After value asks for: decimal seconds or an IMF-fixdate HTTP date (a date in
// the past is zero). Nullopt when it is neither.
std::optional<std::chrono::milliseconds> ParseRetryAfterValue(
    std::string_view value, std::chrono::system_clock::time_point now);

// The error carried by a JSON value's top-level "error" member, if it has one: an object
// {message,type,code} or a plain string. Used for mid-stream errors (retryable unless it says
// otherwise).
std::optional<ProviderError> ErrorFromBody(std::string_view body);

}  // namespace anima::broker::openai
