#pragma once

#include <optional>

#include "tools/llm_sim/response_plan.h"

namespace anima::sim {

// One simulated provider API (OpenAI today; Venice and Gemini are further implementations that
// reuse the scenario, rules and framing machinery). Implementations are immutable after
// construction and called concurrently from every connection thread.
class ProviderApi {
 public:
  virtual ~ProviderApi() = default;

  // The answer to `request`, or nullopt when its path is not one of this API's routes.
  virtual std::optional<ResponsePlan> Handle(const SimRequest& request) const = 0;
};

}  // namespace anima::sim
