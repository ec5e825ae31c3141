#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "services/llm_broker/types.h"

namespace anima::broker::gemini {

// The JSON body of generateContent / streamGenerateContent for `request` (reference §3.2):
// system and developer messages (and request.system) become systemInstruction, assistant becomes
// the role "model", every content has its role set, camelCase field names, only set fields.
std::string BuildRequestBody(const ChatRequest& request);

// Gemini's finishReason normalised (reference §4): STOP stop (tool_calls when the candidate
// called a function), MAX_TOKENS length, the safety family content_filter, everything else and
// every value not known today other.
std::string NormalizeFinishReason(std::string_view reason, bool function_call);

// Usage from usageMetadata: output = candidatesTokenCount + thoughtsTokenCount (the candidates
// count excludes thinking). Nullopt when absent or null.
std::optional<Usage> ParseUsage(std::string_view usage_metadata_json);

// One GenerateContentResponse: a stream event, or a whole answer.
struct Chunk {
  std::string delta;                         // text of the first candidate's non-thought parts
  std::optional<std::string> finish_reason;  // normalised, when the candidate carried one
  std::optional<Usage> usage;                // cumulative: the caller keeps the last one
  std::string model;                         // modelVersion
  bool blocked = false;  // promptFeedback.blockReason: the prompt was refused (content_filter)
  std::string block_reason;
};
// A chunk, or the error it carried (a top-level `error` is checked first; retryable unless its
// status says otherwise) or invalid_response when it is not a JSON object. Every field is optional
// and null means absent.
std::variant<Chunk, ProviderError> ParseChunk(std::string_view data);

// A whole non-streaming answer: one object, or the JSON array a streamGenerateContent without
// alt=sse sends (its elements are merged: text concatenated, the last usage and finish reason).
// A blocked prompt is a result with finish_reason content_filter, empty text and the usage.
std::variant<ChatResult, ProviderError> ParseResponse(std::string_view body);

// Maps an HTTP error to a normalised error (reference §3.6): the body is an object or a
// one-element array, pretty-printed or not, or not JSON at all. The delay hint comes from
// RetryInfo.retryDelay ("1.5s"); a 429 whose QuotaFailure names a per-day quota is code
// http_429_quota and not retryable. Retryable: 408, 429, 500, 502, 503, 504.
ProviderError ParseHttpError(int status, std::string_view body);

// A protobuf Duration string ("47s", "1.5s", "57.238747106s") as milliseconds.
std::optional<std::chrono::milliseconds> ParseDuration(std::string_view text);

}  // namespace anima::broker::gemini
