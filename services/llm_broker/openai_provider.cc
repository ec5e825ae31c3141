#include "services/llm_broker/openai_provider.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/llm_broker/openai_wire.h"
#include "services/llm_broker/sse_parser.h"

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

// One request to the API. Transport callbacks are serialised, but Cancel() comes from any thread,
// so the state that both touch is under mu_. The sink is called without holding mu_.
class OpenAiCall : public ProviderCall, public std::enable_shared_from_this<OpenAiCall> {
 public:
  OpenAiCall(std::shared_ptr<const OpenAiProviderOptions> options, ChatRequest request,
             ProviderSink sink)
      : options_(std::move(options)), request_(std::move(request)), sink_(std::move(sink)) {}

  void Begin(HttpTransport& transport) {
    started_ = Clock::now();
    HttpRequest http;
    std::string base = options_->base_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    http.url = base + "/chat/completions";
    http.headers = {{"Content-Type", "application/json"},
                    {"Accept", request_.stream ? "text/event-stream" : "application/json"},
                    {"Accept-Encoding", "identity"}};
    if (!options_->api_key.empty()) {
      http.headers.emplace_back("Authorization", "Bearer " + options_->api_key);
    }
    if (!options_->organization.empty()) {
      http.headers.emplace_back("OpenAI-Organization", options_->organization);
    }
    for (const auto& header : options_->extra_headers) http.headers.push_back(header);
    if (std::string id = HeaderSafe(request_.request_id); !id.empty()) {
      http.headers.emplace_back("X-Client-Request-Id", id);
    }
    http.body = openai::BuildRequestBody(request_, options_->venice);
    http.connect_timeout = options_->connect_timeout;
    if (request_.stream) {
      // Headers, then every stream event, must come within the first-token timeout.
      http.first_byte_timeout = options_->first_token_timeout;
      http.idle_timeout = options_->first_token_timeout;
    } else {
      // A whole answer arrives only when it is fully generated: only the total timeout applies.
      http.first_byte_timeout = options_->total_timeout;
    }
    http.deadline = std::min(request_.deadline, started_ + options_->total_timeout);

    auto self = shared_from_this();
    HttpHandler handler;
    handler.on_head = [self](const HttpResponseHead& head) { self->OnHead(head); };
    handler.on_body = [self](std::string_view bytes) { self->OnBody(bytes); };
    handler.on_complete = [self](absl::Status status) { self->OnComplete(std::move(status)); };
    auto exchange = transport.Send(std::move(http), std::move(handler));
    std::lock_guard lock(mu_);
    exchange_ = std::move(exchange);
    if (cancelled_ && exchange_ != nullptr) exchange_->Cancel();
  }

  void Cancel() override {
    std::shared_ptr<HttpExchange> exchange;
    {
      std::lock_guard lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      exchange = exchange_;
    }
    if (exchange != nullptr) exchange->Cancel();
  }

 private:
  void OnHead(const HttpResponseHead& head) {
    head_ = head;
    got_head_ = true;
    if (head.status < 200 || head.status > 299) {
      mode_ = Mode::kError;
    } else if (request_.stream &&
               absl::StartsWithIgnoreCase(head.Header("content-type").value_or(""),
                                          "text/event-stream")) {
      mode_ = Mode::kStream;
    } else {
      mode_ = Mode::kWhole;  // also a server that ignored stream:true and answered in JSON
    }
  }

  void OnBody(std::string_view bytes) {
    if (finished_) return;
    if (mode_ == Mode::kError) {
      size_t room =
          options_->max_error_body_bytes - std::min(options_->max_error_body_bytes, body_.size());
      body_.append(bytes.substr(0, room));
      return;
    }
    if (mode_ == Mode::kWhole) {
      if (body_.size() + bytes.size() > options_->max_body_bytes) {
        Fail(Error("invalid_response", "the response body is too large", false));
        return;
      }
      body_.append(bytes);
      return;
    }
    if (done_seen_) return;  // bytes after [DONE] are ignored
    events_.clear();
    absl::Status fed = parser_.Feed(bytes, events_);
    HandleEvents();
    if (!fed.ok() && !finished_) Fail(Error("invalid_response", fed.ToString(), true));
  }

  void HandleEvents() {
    for (auto& event : events_) {
      if (finished_ || done_seen_) return;
      if (openai::IsDone(event.data)) {
        done_seen_ = true;
        return;
      }
      auto parsed = openai::ParseChunk(event.data);
      if (auto* err = std::get_if<ProviderError>(&parsed)) {
        Fail(std::move(*err));
        return;
      }
      auto& chunk = std::get<openai::StreamChunk>(parsed);
      if (!chunk.model.empty()) model_ = chunk.model;
      if (chunk.usage) usage_ = chunk.usage;
      if (chunk.finish_reason) finish_reason_ = *chunk.finish_reason;
      if (!chunk.delta.empty()) {
        text_.append(chunk.delta);
        if (sink_.on_delta) sink_.on_delta(chunk.delta);
      }
    }
  }

  void OnComplete(absl::Status status) {
    if (finished_) return;
    bool cancelled;
    {
      std::lock_guard lock(mu_);
      cancelled = cancelled_;
    }
    if (cancelled) {
      Finish(Error("cancelled", "the request was cancelled", false));
      return;
    }
    if (!status.ok()) {
      std::string message(status.message());
      if (status.code() == absl::StatusCode::kDeadlineExceeded) {
        if (Clock::now() >= request_.deadline) {
          Finish(Error("deadline_exceeded", "the request deadline passed", false));
        } else {
          std::string code = absl::StrContains(message, "first byte")     ? "first_byte_timeout"
                             : absl::StrContains(message, "idle timeout") ? "idle_timeout"
                                                                          : "timeout";
          Finish(Error(std::move(code), message, true));
        }
      } else if (!got_head_) {
        Finish(Error(absl::StrContains(message, "TLS") ? "tls" : "connect", message, true));
      } else if (mode_ == Mode::kStream) {
        Finish(Error("incomplete_stream",
                     absl::StrCat("the stream ended without [DONE]: ", message), true));
      } else {
        Finish(Error("invalid_response", absl::StrCat("the body was cut off: ", message), true));
      }
      return;
    }
    if (mode_ == Mode::kError) {
      ProviderError e = openai::ParseHttpError(head_.status, &head_, body_);
      e.provider = options_->name;
      Finish(std::move(e));
      return;
    }
    if (mode_ == Mode::kWhole) {
      auto parsed = openai::ParseResponse(body_);
      if (auto* err = std::get_if<ProviderError>(&parsed)) {
        err->provider = options_->name;
        Finish(std::move(*err));
        return;
      }
      ChatResult result = std::move(std::get<ChatResult>(parsed));
      if (result.model.empty()) result.model = request_.model;
      if (request_.stream && !result.text.empty() && sink_.on_delta) sink_.on_delta(result.text);
      Finish(std::move(result));
      return;
    }
    events_.clear();
    if (!done_seen_) {
      (void)parser_.Finish(events_);
      HandleEvents();
      if (finished_) return;
    }
    if (!done_seen_) {
      Finish(Error("incomplete_stream", "the stream ended without [DONE]", true));
      return;
    }
    ChatResult result;
    result.text = std::move(text_);
    result.model = model_.empty() ? request_.model : model_;
    result.finish_reason = finish_reason_.empty() ? "stop" : finish_reason_;
    result.usage = usage_;
    Finish(std::move(result));
  }

  ProviderError Error(std::string code, std::string message, bool retryable) {
    ProviderError e;
    e.provider = options_->name;
    e.code = std::move(code);
    e.message = std::move(message);
    e.retryable = retryable;
    return e;
  }

  // A failure noticed while the body is still arriving: drop the connection, report at once.
  void Fail(ProviderError error) {
    error.provider = options_->name;
    std::shared_ptr<HttpExchange> exchange;
    {
      std::lock_guard lock(mu_);
      exchange = exchange_;
    }
    Finish(std::move(error));
    if (exchange != nullptr) exchange->Cancel();
  }

  void Finish(ProviderOutcome outcome) {
    if (finished_) return;
    finished_ = true;
    if (auto* result = std::get_if<ChatResult>(&outcome)) {
      result->provider = options_->name;
      result->latency =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
    }
    // Drop what keeps the caller and the exchange alive (they hold this call in turn).
    ProviderSink sink = std::move(sink_);
    sink_ = ProviderSink();
    {
      std::lock_guard lock(mu_);
      exchange_.reset();
    }
    if (sink.on_done) sink.on_done(std::move(outcome));
  }

  enum class Mode { kNone, kError, kWhole, kStream };

  std::shared_ptr<const OpenAiProviderOptions> options_;
  ChatRequest request_;
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
  bool done_seen_ = false;
  std::string text_;
  std::string model_;
  std::string finish_reason_;
  std::optional<Usage> usage_;
};

}  // namespace

OpenAiProvider::OpenAiProvider(OpenAiProviderOptions options,
                               std::shared_ptr<HttpTransport> transport)
    : options_(std::make_shared<const OpenAiProviderOptions>(std::move(options))),
      transport_(std::move(transport)) {}

std::shared_ptr<ProviderCall> OpenAiProvider::Start(const ChatRequest& request, ProviderSink sink) {
  auto call = std::make_shared<OpenAiCall>(options_, request, std::move(sink));
  call->Begin(*transport_);
  return call;
}

}  // namespace anima::broker
