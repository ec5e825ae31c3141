#pragma once

#include <memory>
#include <optional>

#include "tools/llm_sim/directives.h"
#include "tools/llm_sim/openai_api.h"
#include "tools/llm_sim/provider_api.h"

namespace anima::sim {

// The Venice API under /api/v1 (reference §2): POST /api/v1/chat/completions (JSON or SSE) and
// GET /api/v1/models. OpenAI-shaped, so it is OpenAiApi in its Venice dialect: string errors
// ({"error":"..."}), 401 "Authentication failed" without a key, CF-RAY and x-venice-* headers,
// x-ratelimit-reset-requests as a unix timestamp (the only retry hint of a 429), 402 for an
// exhausted balance (scenario quota_429), `cost` and the `venice_parameters` echo in answers,
// no obfuscation padding, and 400 "Invalid request parameters" for any null field (and, with
// the header x-sim-strict: 1, for unknown top-level fields).
class VeniceApi final : public ProviderApi {
 public:
  explicit VeniceApi(std::shared_ptr<const SimConfig> config)
      : impl_(std::move(config), Dialect::kVenice) {}

  std::optional<ResponsePlan> Handle(const SimRequest& request) const override {
    return impl_.Handle(request);
  }

 private:
  OpenAiApi impl_;
};

}  // namespace anima::sim
