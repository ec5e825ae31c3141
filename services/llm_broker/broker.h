#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/llm_broker/strategy.h"

namespace anima::broker {

// Checks a canonical request for what no provider could fix: at least one message, known roles,
// temperature in [0, 2], max_tokens > 0. Errors are INVALID_ARGUMENT naming the field.
absl::Status ValidateRequest(const ChatRequest& request);

// The broker's core, free of gRPC: validates a request, chooses the candidate providers (the
// requested one only, or every provider that serves the model, in configured order), and hands
// the request to its strategy. Thread-safe; immutable after construction.
class Broker {
 public:
  Broker(std::vector<std::shared_ptr<Provider>> providers,
         std::map<std::string, std::shared_ptr<Strategy>> strategies, std::string default_strategy);

  // INVALID_ARGUMENT when the request is invalid or nothing can serve it (no sink call then);
  // otherwise the outcome arrives through `sink`. `model` may be "provider/model".
  absl::StatusOr<std::shared_ptr<StrategyCall>> Start(ChatRequest request, StrategySink sink);

  const std::vector<std::shared_ptr<Provider>>& providers() const { return providers_; }
  const std::string& default_strategy() const { return default_strategy_; }

 private:
  std::vector<std::shared_ptr<Provider>> providers_;
  std::map<std::string, std::shared_ptr<Strategy>> strategies_;
  std::string default_strategy_;
};

}  // namespace anima::broker
