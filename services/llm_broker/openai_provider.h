#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "services/llm_broker/http_transport.h"
#include "services/llm_broker/provider.h"

namespace anima::broker {

struct OpenAiProviderOptions {
  std::string name = "openai";
  std::string base_url = "https://api.openai.com/v1";  // POSTs go to base_url + /chat/completions
  std::string api_key;       // sent as a bearer token, never logged; empty: no Authorization header
  std::string organization;  // OpenAI-Organization, optional
  // Sent with every request (e.g. OpenAI-Project, or x-sim-scenario against the simulator).
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::vector<std::string> models;
  std::string default_model = "gpt-4o-mini";
  std::chrono::milliseconds connect_timeout{5000};
  // Streaming only: until the response headers, and the longest gap between stream events.
  std::chrono::milliseconds first_token_timeout{30000};
  std::chrono::milliseconds total_timeout{120000};
  int max_retries = 2;
  size_t max_error_body_bytes = 64 * 1024;
  size_t max_body_bytes = 16 * 1024 * 1024;
  // Venice (reference §2): the same wire format at /api/v1, plus venice_parameters with Venice's
  // system prompt switched off. Its string errors and epoch reset header are understood always.
  bool venice = false;
};

// The OpenAI Chat Completions API (and any server that speaks it: Ollama, vLLM, the simulator),
// streaming and not. Stream chunks are parsed defensively: an `error` member is checked first,
// usage may come on any chunk (the last non-null one wins), choices may be missing, and an end of
// body without `data: [DONE]` is an incomplete_stream error, never a success.
class OpenAiProvider : public Provider {
 public:
  OpenAiProvider(OpenAiProviderOptions options, std::shared_ptr<HttpTransport> transport);

  const std::string& name() const override { return options_->name; }
  const std::string& default_model() const override { return options_->default_model; }
  const std::vector<std::string>& models() const override { return options_->models; }
  int max_retries() const override { return options_->max_retries; }

  std::shared_ptr<ProviderCall> Start(const ChatRequest& request, ProviderSink sink) override;

 private:
  // Shared with in-flight calls, which may outlive the provider.
  std::shared_ptr<const OpenAiProviderOptions> options_;
  std::shared_ptr<HttpTransport> transport_;
};

}  // namespace anima::broker
