#pragma once

#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/llm_broker/strategy.h"

namespace anima::broker {

// Checks a canonical request for what no provider could fix: at least one message, known roles,
// temperature in [0, 2], max_tokens > 0. Errors are INVALID_ARGUMENT naming the field.
absl::Status ValidateRequest(const ChatRequest& request);

// An exact-match cache of successful answers to deterministic requests (temperature 0), bounded
// in entries (the oldest is evicted) and in age. Thread-safe.
class ResponseCache {
 public:
  ResponseCache(size_t max_entries, std::chrono::milliseconds ttl,
                std::function<Clock::time_point()> now = nullptr);

  // The key of a cacheable request: temperature set to 0 and not fanout (whose answer is every
  // provider's). Everything that shapes the answer is in it: provider, model, strategy, system,
  // messages, max_tokens. Nullopt when the request is not cacheable.
  static std::optional<std::string> KeyFor(const ChatRequest& request);

  std::optional<ChatResult> Get(const std::string& key);
  void Put(const std::string& key, const ChatResult& result);

 private:
  struct Entry {
    ChatResult result;
    Clock::time_point stored;
    std::list<std::string>::iterator order;
  };
  const size_t max_entries_;
  const std::chrono::milliseconds ttl_;
  std::function<Clock::time_point()> now_;
  std::mutex mu_;
  std::list<std::string> order_;  // oldest first
  std::map<std::string, Entry> entries_;
};

// The broker's core, free of gRPC: validates a request, chooses the candidate providers (the
// requested one only, or every provider that serves the model, in configured order), and hands
// the request to its strategy. Thread-safe; immutable after construction.
class Broker {
 public:
  Broker(std::vector<std::shared_ptr<Provider>> providers,
         std::map<std::string, std::shared_ptr<Strategy>> strategies, std::string default_strategy);

  // Answers repeated deterministic requests from `cache` (a hit is answered inline: the text as
  // one delta when streaming, then on_done). `on_lookup` is told every lookup (true: hit).
  void EnableCache(std::shared_ptr<ResponseCache> cache, std::function<void(bool hit)> on_lookup);

  // INVALID_ARGUMENT when the request is invalid or nothing can serve it (no sink call then);
  // otherwise the outcome arrives through `sink`, with `billed` summing every provider call of
  // the request that reported usage. `model` may be "provider/model".
  absl::StatusOr<std::shared_ptr<StrategyCall>> Start(ChatRequest request, StrategySink sink);

  const std::vector<std::shared_ptr<Provider>>& providers() const { return providers_; }
  const std::string& default_strategy() const { return default_strategy_; }

 private:
  std::vector<std::shared_ptr<Provider>> providers_;
  std::map<std::string, std::shared_ptr<Strategy>> strategies_;
  std::string default_strategy_;
  std::shared_ptr<ResponseCache> cache_;
  std::function<void(bool hit)> on_cache_lookup_;
};

}  // namespace anima::broker
