#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace anima::broker {

using Clock = std::chrono::steady_clock;

struct ChatMessage {
  std::string role;  // system, developer, user, assistant
  std::string content;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total_tokens = 0;
};

// The broker's canonical request, free of any provider's wire format.
struct ChatRequest {
  std::string request_id;
  std::vector<ChatMessage> messages;
  std::string system;
  std::string model;     // empty: the provider's default model
  std::string provider;  // empty: the configured order; otherwise only that provider
  std::string strategy;  // empty: the configured default
  std::optional<double> temperature;
  std::optional<int32_t> max_tokens;
  bool stream = false;
  // Absolute deadline of the whole request; Clock::time_point::max() when the caller set none.
  Clock::time_point deadline = Clock::time_point::max();
};

// A successful answer of one provider. finish_reason is normalised: stop, length, content_filter,
// tool_calls or other.
struct ChatResult {
  std::string text;
  std::string provider;
  std::string model;
  std::string finish_reason;
  std::optional<Usage> usage;
  std::chrono::milliseconds latency{0};
  // What this call cost at the configured price of `model` as requested (InstrumentedProvider
  // sets it); 0 without usage or without a price.
  double cost_usd = 0;
};

// A normalised provider failure. `code` is short and bounded: http_<status>, connect, tls,
// timeout, first_byte_timeout, idle_timeout, invalid_response, incomplete_stream, stream_error,
// cancelled, deadline_exceeded, no_api_key, unsupported_model.
struct ProviderError {
  std::string provider;
  std::string code;
  std::string message;
  int http_status = 0;
  bool retryable = false;
  // The provider's own hint (Retry-After, retry-after-ms, RetryInfo), when it sent one.
  std::optional<std::chrono::milliseconds> retry_after;
};

// A model's price, in US dollars per million tokens.
struct ModelPrice {
  double input_per_mtok = 0;
  double output_per_mtok = 0;
};

// Normalises a provider finish reason to stop|length|content_filter|tool_calls|other.
std::string NormalizeFinishReason(std::string_view reason);

}  // namespace anima::broker
