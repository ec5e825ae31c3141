#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "services/llm_broker/http_transport.h"
#include "services/llm_broker/provider.h"
#include "services/llm_broker/sse_parser.h"
#include "services/llm_broker/types.h"

namespace anima::broker {

// What the shared call plumbing needs of a provider's options.
struct HttpCallOptions {
  std::string provider;  // the configured name, set on every result and error
  std::chrono::milliseconds connect_timeout{0};
  std::chrono::milliseconds first_token_timeout{0};  // streaming: to the headers, between events
  std::chrono::milliseconds total_timeout{0};
  size_t max_error_body_bytes = 0;  // an error body is cut here (it only feeds the error message)
  size_t max_body_bytes = 0;        // a larger whole body fails the call

  // Every provider's options name these fields alike.
  template <typename ProviderOptions>
  static HttpCallOptions From(const ProviderOptions& options) {
    return {options.name,          options.connect_timeout,      options.first_token_timeout,
            options.total_timeout, options.max_error_body_bytes, options.max_body_bytes};
  }
};

// What one stream event adds to the answer.
struct StreamUpdate {
  // kWhole: the answer is complete (e.g. Gemini's finishReason), though events may still follow.
  // kEnd: an end marker (OpenAI's [DONE]): the answer is complete and the rest of the body is
  // ignored.
  enum class Completion { kNone, kWhole, kEnd };

  std::string delta;                         // text to append and forward, may be empty
  std::optional<std::string> finish_reason;  // normalised
  std::optional<Usage> usage;                // replaces any earlier one
  std::string model;                         // empty: unchanged
  Completion completion = Completion::kNone;
};

// One request to an HTTP LLM API, minus the wire format: sends the request with the provider's
// timeouts, owns the exchange and its cancellation, collects an error or a whole body, feeds a
// stream through the SSE parser, and maps transport failures to normalised errors. Subclasses
// supply only the wire format, through the hooks below.
//
// Transport callbacks are serialised, but Cancel() comes from any thread, so the state that both
// touch is under mu_. The sink is called without holding mu_.
class HttpProviderCall : public ProviderCall,
                         public std::enable_shared_from_this<HttpProviderCall> {
 public:
  // Creates the call and sends its request: the provider's whole Start().
  template <typename Call, typename... Args>
  static std::shared_ptr<ProviderCall> Start(HttpTransport& transport, Args&&... args) {
    auto call = std::make_shared<Call>(std::forward<Args>(args)...);
    call->Begin(transport);
    return call;
  }

  void Cancel() override;

 protected:
  HttpProviderCall(HttpCallOptions options, ChatRequest request, ProviderSink sink);

  const ChatRequest& request() const { return request_; }

  // `url` without its trailing slashes, ready for a path to be appended.
  static std::string WithoutTrailingSlashes(std::string url);

  // Completes `http`, which has Content-Type, Accept and Accept-Encoding already: the URL, the
  // provider's headers (appended, in the order they go on the wire) and the body.
  virtual void BuildRequest(HttpRequest& http) const = 0;
  // A non-2xx response; `body` is cut at max_error_body_bytes.
  virtual ProviderError ParseHttpError(const HttpResponseHead& head,
                                       std::string_view body) const = 0;
  // A whole (unstreamed) response body.
  virtual ProviderOutcome ParseResponse(std::string_view body) const = 0;
  // The data of one stream event, or the error it carried.
  virtual std::variant<StreamUpdate, ProviderError> ParseEvent(std::string_view data) const = 0;
  // What completes a stream, for the incomplete_stream message: "[DONE]", "a finishReason".
  virtual const char* stream_end() const = 0;

 private:
  enum class Mode { kNone, kError, kWhole, kStream };

  void Begin(HttpTransport& transport);
  void OnHead(const HttpResponseHead& head);
  void OnBody(std::string_view bytes);
  void HandleEvents();
  void OnComplete(absl::Status status);
  ProviderError TransportError(const absl::Status& status) const;
  void FinishWhole();
  void FinishStream();
  ProviderError Error(std::string code, std::string message, bool retryable) const;
  void Fail(ProviderError error);
  void Finish(ProviderOutcome outcome);

  const HttpCallOptions options_;
  const ChatRequest request_;
  ProviderSink sink_;
  Clock::time_point started_;

  std::mutex mu_;
  std::shared_ptr<HttpExchange> exchange_;
  bool cancelled_ = false;

  // Touched only from the (serialised) transport callbacks.
  bool finished_ = false;
  bool got_head_ = false;
  HttpResponseHead head_;
  Mode mode_ = Mode::kNone;
  std::string body_;
  SseParser parser_;
  std::vector<SseEvent> events_;
  bool whole_ = false;  // the stream said the answer is complete
  bool ended_ = false;  // the stream's end marker arrived: the rest of the body is ignored
  std::string text_;
  std::string model_;
  std::string finish_reason_;
  std::optional<Usage> usage_;
};

}  // namespace anima::broker
