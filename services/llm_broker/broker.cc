#include "services/llm_broker/broker.h"

#include "absl/strings/str_cat.h"

namespace anima::broker {

absl::Status ValidateRequest(const ChatRequest& request) {
  if (request.messages.empty()) {
    return absl::InvalidArgumentError("messages: at least one message is required");
  }
  for (size_t i = 0; i < request.messages.size(); ++i) {
    const auto& role = request.messages[i].role;
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      return absl::InvalidArgumentError(
          absl::StrCat("messages[", i,
                       "].role: must be system, developer, user or assistant, got '", role, "'"));
    }
  }
  if (request.temperature && !(*request.temperature >= 0 && *request.temperature <= 2)) {
    return absl::InvalidArgumentError("temperature: must be between 0 and 2");
  }
  if (request.max_tokens && *request.max_tokens <= 0) {
    return absl::InvalidArgumentError("max_tokens: must be positive");
  }
  return absl::OkStatus();
}

Broker::Broker(std::vector<std::shared_ptr<Provider>> providers,
               std::map<std::string, std::shared_ptr<Strategy>> strategies,
               std::string default_strategy)
    : providers_(std::move(providers)),
      strategies_(std::move(strategies)),
      default_strategy_(std::move(default_strategy)) {}

absl::StatusOr<std::shared_ptr<StrategyCall>> Broker::Start(ChatRequest request,
                                                            StrategySink sink) {
  if (auto status = ValidateRequest(request); !status.ok()) return status;
  // "provider/model" names both.
  if (size_t slash = request.model.find('/'); slash != std::string::npos) {
    std::string prefix = request.model.substr(0, slash);
    for (const auto& p : providers_) {
      if (p->name() == prefix && (request.provider.empty() || request.provider == prefix)) {
        request.provider = prefix;
        request.model = request.model.substr(slash + 1);
        break;
      }
    }
  }
  std::vector<std::shared_ptr<Provider>> candidates;
  bool provider_known = request.provider.empty();
  for (const auto& p : providers_) {
    if (!request.provider.empty() && p->name() != request.provider) continue;
    provider_known = true;
    if (request.model.empty() || p->Supports(request.model)) candidates.push_back(p);
  }
  if (!provider_known) {
    return absl::InvalidArgumentError(
        absl::StrCat("provider: no provider named '", request.provider, "' is configured"));
  }
  if (candidates.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model: no configured provider serves '", request.model, "'",
        request.provider.empty() ? "" : absl::StrCat(" (provider ", request.provider, ")")));
  }
  std::string strategy_name = request.strategy.empty() ? default_strategy_ : request.strategy;
  auto it = strategies_.find(strategy_name);
  if (it == strategies_.end()) {
    if (strategy_name == "hedge" || strategy_name == "race" || strategy_name == "fanout") {
      return absl::InvalidArgumentError(
          absl::StrCat("strategy: '", strategy_name, "' is not available in this version"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "strategy: must be failover, hedge, race or fanout, got '", strategy_name, "'"));
  }
  return it->second->Start(request, std::move(candidates), std::move(sink));
}

}  // namespace anima::broker
