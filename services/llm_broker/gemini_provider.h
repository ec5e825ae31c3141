#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "services/llm_broker/http_transport.h"
#include "services/llm_broker/provider.h"

namespace anima::broker {

struct GeminiProviderOptions {
  std::string name = "gemini";
  // POSTs go to base_url + /models/{model}:generateContent or :streamGenerateContent?alt=sse.
  std::string base_url = "https://generativelanguage.googleapis.com/v1beta";
  std::string api_key;  // sent as x-goog-api-key (never in the URL), never logged
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::vector<std::string> models;
  std::string default_model = "gemini-2.0-flash";
  std::chrono::milliseconds connect_timeout{5000};
  // Streaming only: until the response headers, and the longest gap between stream events.
  std::chrono::milliseconds first_token_timeout{30000};
  std::chrono::milliseconds total_timeout{120000};
  int max_retries = 2;
  size_t max_error_body_bytes = 64 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
};

// The native Gemini API (reference §3), streaming and not. Streams always use alt=sse (never the
// JSON-array mode); events are CRLF- or LF-framed and the last may lack its blank line. Usage is
// cumulative: the last value wins, never a sum. A stream that ends without any finishReason (and
// without a blocked-prompt event) is incomplete_stream, even without an error; an `error` event
// after HTTP 200 is a failure, never a truncated success. A blocked prompt is a result with
// finish_reason content_filter, no text and its usage.
class GeminiProvider : public Provider {
 public:
  GeminiProvider(GeminiProviderOptions options, std::shared_ptr<HttpTransport> transport);

  const std::string& name() const override { return options_->name; }
  const std::string& default_model() const override { return options_->default_model; }
  const std::vector<std::string>& models() const override { return options_->models; }
  int max_retries() const override { return options_->max_retries; }

  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override;

 private:
  std::shared_ptr<const GeminiProviderOptions> options_;
  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace anima::broker
