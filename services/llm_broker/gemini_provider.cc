#include "services/llm_broker/gemini_provider.h"

#include <algorithm>
#include <cctype>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/llm_broker/gemini_wire.h"
#include "services/llm_broker/sse_parser.h"

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

// One request to the API. Transport callbacks are serialised, but Cancel() comes from any thread,
// so the state that both touch is under mu_. The sink is called without holding mu_.
class GeminiCall : public ProviderCall, public std::enable_shared_from_this<GeminiCall> {
 public:
  GeminiCall(std::shared_ptr<const GeminiProviderOptions> options, ChatRequest request,
             ProviderSink sink)
      : options_(std::move(options)), request_(std::move(request)), sink_(std::move(sink)) {}

  void Begin(HttpTransport& transport) {
    started_ = Clock::now();
    HttpRequest http;
    std::string base = options_->base_url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    // Always alt=sse: without it the stream is one JSON array (reference §3.5).
    http.url =
        absl::StrCat(base, "/models/", PathSegment(request_.model),
                     request_.stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    http.headers = {{"Content-Type", "application/json"},
                    {"Accept", request_.stream ? "text/event-stream" : "application/json"},
                    {"Accept-Encoding", "identity"}};
    if (!options_->api_key.empty()) http.headers.emplace_back("x-goog-api-key", options_->api_key);
    for (const auto& header : options_->extra_headers) http.headers.push_back(header);
    http.body = gemini::BuildRequestBody(request_);
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
    events_.clear();
    absl::Status fed = parser_.Feed(bytes, events_);
    HandleEvents();
    if (!fed.ok() && !finished_) Fail(Error("invalid_response", fed.ToString(), true));
  }

  void HandleEvents() {
    for (auto& event : events_) {
      if (finished_) return;
      auto parsed = gemini::ParseChunk(event.data);
      if (auto* err = std::get_if<ProviderError>(&parsed)) {
        Fail(std::move(*err));
        return;
      }
      auto& chunk = std::get<gemini::Chunk>(parsed);
      if (!chunk.model.empty()) model_ = chunk.model;
      if (chunk.usage) usage_ = chunk.usage;  // cumulative: the last one is the total
      if (chunk.finish_reason) {
        finish_reason_ = *chunk.finish_reason;
        done_seen_ = true;
      }
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
                     absl::StrCat("the stream ended without a finishReason: ", message), true));
      } else {
        Finish(Error("invalid_response", absl::StrCat("the body was cut off: ", message), true));
      }
      return;
    }
    if (mode_ == Mode::kError) {
      ProviderError e = gemini::ParseHttpError(head_.status, body_);
      e.provider = options_->name;
      Finish(std::move(e));
      return;
    }
    if (mode_ == Mode::kWhole) {
      auto parsed = gemini::ParseResponse(body_);
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
    // Gemini's last event may lack its blank line: dispatch what is pending.
    events_.clear();
    (void)parser_.Finish(events_);
    HandleEvents();
    if (finished_) return;
    if (!done_seen_) {
      Finish(Error("incomplete_stream", "the stream ended without a finishReason", true));
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

  std::shared_ptr<const GeminiProviderOptions> options_;
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
  bool done_seen_ = false;  // a finishReason (or a blocked prompt) arrived: the answer is whole
  std::string text_;
  std::string model_;
  std::string finish_reason_;
  std::optional<Usage> usage_;
};

}  // namespace

GeminiProvider::GeminiProvider(GeminiProviderOptions options,
                               std::shared_ptr<HttpTransport> transport)
    : options_(std::make_shared<const GeminiProviderOptions>(std::move(options))),
      transport_(std::move(transport)) {}

std::shared_ptr<ProviderCall> GeminiProvider::Start(const ChatRequest& request, ProviderSink sink) {
  auto call = std::make_shared<GeminiCall>(options_, request, std::move(sink));
  call->Begin(*transport_);
  return call;
}

}  // namespace anima::broker
