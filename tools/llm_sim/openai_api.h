#pragma once

#include <memory>
#include <optional>

#include "tools/llm_sim/directives.h"
#include "tools/llm_sim/openai_format.h"
#include "tools/llm_sim/provider_api.h"

namespace anima::sim {

// Which OpenAI-shaped service is simulated. Venice (reference §2) differs in its base path
// (/api/v1), its string errors ({"error":"..."}), its headers (CF-RAY, x-venice-*, an epoch
// x-ratelimit-reset-requests), its response extras (cost, venice_parameters echo), its rejection
// of null request fields, and 402 for an exhausted balance.
enum class Dialect { kOpenAi, kVenice };

// The OpenAI API under /v1: POST /v1/chat/completions (JSON or SSE), GET /v1/models and
// GET /v1/models/{id}. Every other /v1 path gets OpenAI's "Invalid URL" 404. With
// Dialect::kVenice the same routes live under /api/v1 and speak Venice's variant.
class OpenAiApi final : public ProviderApi {
 public:
  explicit OpenAiApi(std::shared_ptr<const SimConfig> config, Dialect dialect = Dialect::kOpenAi);

  std::optional<ResponsePlan> Handle(const SimRequest& request) const override;

  // OpenAI's 404 for a path nobody serves; the server uses it for unknown paths.
  static ResponsePlan InvalidUrl(const SimRequest& request);

 private:
  std::optional<openai::ApiError> CheckAuth(const SimRequest& request) const;
  ResponsePlan ChatCompletions(const SimRequest& request) const;
  ResponsePlan Models(const SimRequest& request, std::string_view model_id) const;

  std::shared_ptr<const SimConfig> config_;
  Dialect dialect_;
};

}  // namespace anima::sim
