#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "services/llm_broker/types.h"

namespace anima::broker {

// What a provider call ends with: the answer or a normalised error.
using ProviderOutcome = std::variant<ChatResult, ProviderError>;

// Receives the progress of one provider call. Contract for implementations:
//  - on_delta: zero or more non-empty text pieces, in order (only when request.stream is set);
//  - on_done: exactly once, last, also after Cancel() (then with code "cancelled");
//  - calls are never concurrent for one call, but may come from any thread, including inline
//    from Start() (e.g. an immediate configuration error).
struct ProviderSink {
  std::function<void(std::string_view delta)> on_delta;
  std::function<void(ProviderOutcome outcome)> on_done;
};

// An in-flight provider call. Cancel() is thread-safe, idempotent, returns at once, and makes the
// provider release its upstream connection (the socket is closed, so the provider stops working).
class ProviderCall {
 public:
  virtual ~ProviderCall() = default;
  virtual void Cancel() = 0;
};

// One upstream LLM API (OpenAI, Venice, Gemini, an OpenAI-compatible server). Implementations
// translate the canonical ChatRequest to their wire format and back; they do not retry (the
// strategy layer does). Thread-safe: Start() may be called concurrently.
class Provider {
 public:
  virtual ~Provider() = default;

  virtual const std::string& name() const = 0;  // the configured name, e.g. "openai"
  virtual const std::string& default_model() const = 0;
  virtual const std::vector<std::string>& models() const = 0;
  // Whether `model` may be sent to this provider (an empty models() list accepts any model).
  virtual bool Supports(const std::string& model) const;
  // Max retries of one request on this provider for retryable errors (from config).
  virtual int max_retries() const { return 0; }

  // `request.model` is already resolved (never empty). The returned call may be ignored by the
  // caller except for Cancel(); the provider keeps itself alive until on_done.
  virtual std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) = 0;
};

}  // namespace anima::broker
