#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"
#include "tools/llm_sim/directives.h"
#include "tools/llm_sim/provider_api.h"

namespace anima::sim {

// The Gemini API (reference §3) under /v1beta:
//   POST /v1beta/models/{model}:generateContent          one JSON GenerateContentResponse
//   POST /v1beta/models/{model}:streamGenerateContent?alt=sse
//        CRLF-framed SSE deltas, cumulative usageMetadata, finishReason on the last, then EOF
//        (no [DONE])
//   POST /v1beta/models/{model}:streamGenerateContent    (no alt=sse) one pretty-printed JSON
//        array whose elements arrive over time
// Auth: x-goog-api-key or ?key=; none is 403 PERMISSION_DENIED, a wrong one (when the simulator
// has a key) 400 INVALID_ARGUMENT with reason API_KEY_INVALID. Requests are validated as the
// real service does: unknown top-level fields ("Unknown name") and roles other than user/model
// are 400 INVALID_ARGUMENT. Scenarios map to Gemini's own shapes: length is MAX_TOKENS (with
// thoughtsTokenCount), the error outcomes are Google errors (429 with RetryInfo retryDelay
// "1.5s" on a per-minute quota, quota_429 a per-day quota), `wrapped` puts error bodies in a
// one-element array, and prompt_blocked, safety_stop, recitation, empty_parts and null_fields
// reproduce the recorded edge cases.
class GeminiApi final : public ProviderApi {
 public:
  explicit GeminiApi(std::shared_ptr<const SimConfig> config);

  std::optional<ResponsePlan> Handle(const SimRequest& request) const override;

 private:
  std::shared_ptr<const SimConfig> config_;
};

namespace gemini {

// A Google API error body, {"error":{"code","message","status","details"}}, pretty-printed with
// two spaces as Google front ends do; `wrapped` puts it in a one-element array.
std::string ErrorBody(int code, std::string_view status, std::string_view message,
                      const nlohmann::ordered_json& details, bool wrapped);

// What the simulator needs from a GenerateContentRequest.
struct Request {
  std::string last_user_text;
  int64_t prompt_tokens = 0;
  std::optional<int64_t> max_output_tokens;
  std::string first_function_name;
};

// The request, or the 400 INVALID_ARGUMENT message the real service would give.
struct ParsedRequest {
  Request request;
  std::optional<std::string> error;
};
ParsedRequest ParseRequest(std::string_view body);

}  // namespace gemini
}  // namespace anima::sim
