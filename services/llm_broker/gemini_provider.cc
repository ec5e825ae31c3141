#include "services/llm_broker/gemini_provider.h"

#include <cctype>

#include "absl/strings/str_cat.h"
#include "services/llm_broker/gemini_wire.h"
#include "services/llm_broker/http_provider_call.h"

namespace anima::broker {
namespace {

// A model id as one URL path segment: unreserved characters kept, the rest percent-encoded.
std::string PathSegment(std::string_view model) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : model) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// One generateContent request: the Gemini wire format on HttpProviderCall's plumbing.
class GeminiCall : public HttpProviderCall {
 public:
  GeminiCall(std::shared_ptr<const GeminiProviderOptions> options, ChatRequest request,
             ProviderSink sink)
      : HttpProviderCall(HttpCallOptions::From(*options), std::move(request), std::move(sink)),
        options_(std::move(options)) {}

 private:
  void BuildRequest(HttpRequest& http) const override {
    // Always alt=sse: without it the stream is one JSON array (reference §3.5).
    http.url = absl::StrCat(
        WithoutTrailingSlashes(options_->base_url), "/models/", PathSegment(request().model),
        request().stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    if (!options_->api_key.empty()) http.headers.emplace_back("x-goog-api-key", options_->api_key);
    for (const auto& header : options_->extra_headers) http.headers.push_back(header);
    http.body = gemini::BuildRequestBody(request());
  }

  ProviderError ParseHttpError(const HttpResponseHead& head, std::string_view body) const override {
    return gemini::ParseHttpError(head.status, body);
  }

  ProviderOutcome ParseResponse(std::string_view body) const override {
    return gemini::ParseResponse(body);
  }

  std::variant<StreamUpdate, ProviderError> ParseEvent(std::string_view data) const override {
    auto parsed = gemini::ParseChunk(data);
    if (auto* error = std::get_if<ProviderError>(&parsed)) return std::move(*error);
    auto& chunk = std::get<gemini::Chunk>(parsed);
    StreamUpdate update;
    update.delta = std::move(chunk.delta);
    // A finishReason (a blocked prompt carries content_filter) makes the answer whole; later
    // events may still bring usage.
    if (chunk.finish_reason) update.completion = StreamUpdate::Completion::kWhole;
    update.finish_reason = std::move(chunk.finish_reason);
    update.usage = chunk.usage;  // cumulative: the last one is the total
    update.model = std::move(chunk.model);
    return update;
  }

  const char* stream_end() const override { return "a finishReason"; }

  std::shared_ptr<const GeminiProviderOptions> options_;
};

}  // namespace

GeminiProvider::GeminiProvider(GeminiProviderOptions options,
                               std::shared_ptr<HttpTransport> transport)
    : options_(std::make_shared<const GeminiProviderOptions>(std::move(options))),
      transport_(std::move(transport)) {}

std::shared_ptr<ProviderCall> GeminiProvider::Start(const ChatRequest& request, ProviderSink sink) {
  return HttpProviderCall::Start<GeminiCall>(*transport_, options_, request, std::move(sink));
}

}  // namespace anima::broker
