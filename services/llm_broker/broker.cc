#include "services/llm_broker/broker.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

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

ResponseCache::ResponseCache(size_t max_entries, std::chrono::milliseconds ttl,
                             std::function<Clock::time_point()> now)
    : max_entries_(max_entries),
      ttl_(ttl),
      now_(now ? std::move(now) : [] { return Clock::now(); }) {}

std::optional<std::string> ResponseCache::KeyFor(const ChatRequest& request) {
  if (!request.temperature || *request.temperature != 0 || request.strategy == "fanout") {
    return std::nullopt;
  }
  nlohmann::json key = {{"provider", request.provider},
                        {"model", request.model},
                        {"strategy", request.strategy},
                        {"system", request.system},
                        {"max_tokens", request.max_tokens ? *request.max_tokens : 0}};
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& m : request.messages) messages.push_back({m.role, m.content});
  key["messages"] = std::move(messages);
  return key.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<ChatResult> ResponseCache::Get(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  if (now_() - it->second.stored > ttl_) {
    order_.erase(it->second.order);
    entries_.erase(it);
    return std::nullopt;
  }
  return it->second.result;
}

void ResponseCache::Put(const std::string& key, const ChatResult& result) {
  if (max_entries_ == 0) return;
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(key); it != entries_.end()) {
    order_.erase(it->second.order);
    entries_.erase(it);
  }
  while (entries_.size() >= max_entries_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(key);
  entries_[key] = Entry{result, now_(), std::prev(order_.end())};
}

namespace {

class FinishedCall : public StrategyCall {
 public:
  void Cancel() override {}
};

}  // namespace

void Broker::EnableCache(std::shared_ptr<ResponseCache> cache,
                         std::function<void(bool hit)> on_lookup) {
  cache_ = std::move(cache);
  on_cache_lookup_ = std::move(on_lookup);
}

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
  std::optional<std::string> key;
  if (cache_ != nullptr) key = ResponseCache::KeyFor(request);
  if (key) {
    std::optional<ChatResult> hit = cache_->Get(*key);
    if (on_cache_lookup_) on_cache_lookup_(hit.has_value());
    if (hit) {
      if (request.stream && !hit->text.empty() && sink.on_delta) sink.on_delta(hit->text);
      StrategyOutcome outcome;
      hit->latency = std::chrono::milliseconds(0);
      outcome.result = std::move(*hit);
      if (sink.on_done) sink.on_done(std::move(outcome));
      return std::shared_ptr<StrategyCall>(std::make_shared<FinishedCall>());
    }
    sink.on_done = [done = std::move(sink.on_done), cache = cache_,
                    key = *key](StrategyOutcome outcome) {
      if (outcome.result) cache->Put(key, *outcome.result);
      if (done) done(std::move(outcome));
    };
  }
  // Every call the strategy makes for this request, losers and retries included, is metered; a
  // cache hit above made none and costs nothing.
  auto meter = std::make_shared<BillMeter>();
  for (auto& candidate : candidates) {
    candidate = std::make_shared<MeteredProvider>(std::move(candidate), meter);
  }
  sink.on_done = [done = std::move(sink.on_done), meter](StrategyOutcome outcome) {
    outcome.billed = meter->Total();
    if (done) done(std::move(outcome));
  };
  return it->second->Start(request, std::move(candidates), std::move(sink));
}

}  // namespace anima::broker
