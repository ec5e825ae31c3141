#include "services/llm_broker/openai_provider.h"

#include "absl/strings/str_cat.h"
#include "services/llm_broker/http_provider_call.h"
#include "services/llm_broker/openai_wire.h"

namespace anima::broker {
namespace {

// A header-safe copy of the request id: printable ASCII, at most 64 characters.
std::string HeaderSafe(std::string_view value) {
  std::string out;
  for (char c : value.substr(0, 64)) {
    if (c > 0x20 && c < 0x7f) out.push_back(c);
  }
  return out;
}

// One Chat Completions request: the OpenAI wire format on HttpProviderCall's plumbing.
class OpenAiCall : public HttpProviderCall {
 public:
  OpenAiCall(std::shared_ptr<const OpenAiProviderOptions> options, ChatRequest request,
             ProviderSink sink)
      : HttpProviderCall(HttpCallOptions::From(*options), std::move(request), std::move(sink)),
        options_(std::move(options)) {}

 private:
  void BuildRequest(HttpRequest& http) const override {
    http.url = absl::StrCat(WithoutTrailingSlashes(options_->base_url), "/chat/completions");
    if (!options_->api_key.empty()) {
      http.headers.emplace_back("Authorization", "Bearer " + options_->api_key);
    }
    if (!options_->organization.empty()) {
      http.headers.emplace_back("OpenAI-Organization", options_->organization);
    }
    for (const auto& header : options_->extra_headers) http.headers.push_back(header);
    if (std::string id = HeaderSafe(request().request_id); !id.empty()) {
      http.headers.emplace_back("X-Client-Request-Id", id);
    }
    http.body = openai::BuildRequestBody(request(), options_->venice);
  }

  ProviderError ParseHttpError(const HttpResponseHead& head, std::string_view body) const override {
    return openai::ParseHttpError(head.status, &head, body);
  }

  ProviderOutcome ParseResponse(std::string_view body) const override {
    return openai::ParseResponse(body);
  }

  std::variant<StreamUpdate, ProviderError> ParseEvent(std::string_view data) const override {
    StreamUpdate update;
    if (openai::IsDone(data)) {
      update.completion = StreamUpdate::Completion::kEnd;
      return update;
    }
    auto parsed = openai::ParseChunk(data);
    if (auto* error = std::get_if<ProviderError>(&parsed)) return std::move(*error);
    auto& chunk = std::get<openai::StreamChunk>(parsed);
    update.delta = std::move(chunk.delta);
    update.finish_reason = std::move(chunk.finish_reason);
    update.usage = chunk.usage;
    update.model = std::move(chunk.model);
    return update;
  }

  // Only [DONE] completes a stream: a finish_reason may still be followed by the usage chunk.
  const char* stream_end() const override { return "[DONE]"; }

  std::shared_ptr<const OpenAiProviderOptions> options_;
};

}  // namespace

OpenAiProvider::OpenAiProvider(OpenAiProviderOptions options,
                               std::shared_ptr<HttpTransport> transport)
    : options_(std::make_shared<const OpenAiProviderOptions>(std::move(options))),
      transport_(std::move(transport)) {}

std::shared_ptr<ProviderCall> OpenAiProvider::Start(const ChatRequest& request, ProviderSink sink) {
  return HttpProviderCall::Start<OpenAiCall>(*transport_, options_, request, std::move(sink));
}

}  // namespace anima::broker
