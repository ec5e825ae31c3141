#include "services/llm_broker/http_provider_call.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace anima::broker {

HttpProviderCall::HttpProviderCall(HttpCallOptions options, ChatRequest request, ProviderSink sink)
    : options_(std::move(options)), request_(std::move(request)), sink_(std::move(sink)) {}

std::string HttpProviderCall::WithoutTrailingSlashes(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

void HttpProviderCall::Begin(HttpTransport& transport) {
  started_ = Clock::now();
  HttpRequest http;
  http.headers = {{"Content-Type", "application/json"},
                  {"Accept", request_.stream ? "text/event-stream" : "application/json"},
                  {"Accept-Encoding", "identity"}};
  BuildRequest(http);
  http.connect_timeout = options_.connect_timeout;
  if (request_.stream) {
    // Headers, then every stream event, must come within the first-token timeout.
    http.first_byte_timeout = options_.first_token_timeout;
    http.idle_timeout = options_.first_token_timeout;
  } else {
    // A whole answer arrives only when it is fully generated: only the total timeout applies.
    http.first_byte_timeout = options_.total_timeout;
  }
  http.deadline = std::min(request_.deadline, started_ + options_.total_timeout);

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

void HttpProviderCall::Cancel() {
  std::shared_ptr<HttpExchange> exchange;
  {
    std::lock_guard lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    exchange = exchange_;
  }
  if (exchange != nullptr) exchange->Cancel();
}

void HttpProviderCall::OnHead(const HttpResponseHead& head) {
  head_ = head;
  got_head_ = true;
  if (head.status < 200 || head.status > 299) {
    mode_ = Mode::kError;
  } else if (request_.stream && absl::StartsWithIgnoreCase(head.Header("content-type").value_or(""),
                                                           "text/event-stream")) {
    mode_ = Mode::kStream;
  } else {
    mode_ = Mode::kWhole;  // also a server that ignored the stream request and answered in JSON
  }
}

void HttpProviderCall::OnBody(std::string_view bytes) {
  if (finished_) return;
  if (mode_ == Mode::kError) {
    size_t room =
        options_.max_error_body_bytes - std::min(options_.max_error_body_bytes, body_.size());
    body_.append(bytes.substr(0, room));
    return;
  }
  if (mode_ == Mode::kWhole) {
    if (body_.size() + bytes.size() > options_.max_body_bytes) {
      Fail(Error("invalid_response", "the response body is too large", false));
      return;
    }
    body_.append(bytes);
    return;
  }
  if (ended_) return;
  events_.clear();
  absl::Status fed = parser_.Feed(bytes, events_);
  HandleEvents();
  if (!fed.ok() && !finished_) Fail(Error("invalid_response", fed.ToString(), true));
}

void HttpProviderCall::HandleEvents() {
  for (const auto& event : events_) {
    if (finished_ || ended_) return;
    auto parsed = ParseEvent(event.data);
    if (auto* err = std::get_if<ProviderError>(&parsed)) {
      Fail(std::move(*err));
      return;
    }
    auto& update = std::get<StreamUpdate>(parsed);
    if (!update.model.empty()) model_ = std::move(update.model);
    if (update.usage) usage_ = update.usage;
    if (update.finish_reason) finish_reason_ = std::move(*update.finish_reason);
    if (update.completion != StreamUpdate::Completion::kNone) whole_ = true;
    if (update.completion == StreamUpdate::Completion::kEnd) ended_ = true;
    if (!update.delta.empty()) {
      // A streamed answer is held to the same bound as a whole body.
      if (text_.size() + update.delta.size() > options_.max_body_bytes) {
        Fail(Error("invalid_response", "the streamed answer is too large", false));
        return;
      }
      text_.append(update.delta);
      if (sink_.on_delta) sink_.on_delta(update.delta);
    }
  }
}

void HttpProviderCall::OnComplete(absl::Status status) {
  if (finished_) return;
  bool cancelled;
  {
    std::lock_guard lock(mu_);
    cancelled = cancelled_;
  }
  if (cancelled) {
    Finish(Error("cancelled", "the request was cancelled", false));
  } else if (!status.ok()) {
    Finish(TransportError(status));
  } else if (mode_ == Mode::kError) {
    ProviderError error = ParseHttpError(head_, body_);
    error.provider = options_.provider;
    Finish(std::move(error));
  } else if (mode_ == Mode::kWhole) {
    FinishWhole();
  } else {
    FinishStream();
  }
}

ProviderError HttpProviderCall::TransportError(const absl::Status& status) const {
  std::string message(status.message());
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    if (Clock::now() >= request_.deadline) {
      return Error("deadline_exceeded", "the request deadline passed", false);
    }
    std::string code = absl::StrContains(message, "first byte")     ? "first_byte_timeout"
                       : absl::StrContains(message, "idle timeout") ? "idle_timeout"
                                                                    : "timeout";
    return Error(std::move(code), message, true);
  }
  if (!got_head_) {
    return Error(absl::StrContains(message, "TLS") ? "tls" : "connect", message, true);
  }
  if (mode_ == Mode::kStream) {
    return Error("incomplete_stream",
                 absl::StrCat("the stream ended without ", stream_end(), ": ", message), true);
  }
  return Error("invalid_response", absl::StrCat("the body was cut off: ", message), true);
}

void HttpProviderCall::FinishWhole() {
  ProviderOutcome outcome = ParseResponse(body_);
  if (auto* error = std::get_if<ProviderError>(&outcome)) {
    error->provider = options_.provider;
    Finish(std::move(outcome));
    return;
  }
  auto& result = std::get<ChatResult>(outcome);
  if (result.model.empty()) result.model = request_.model;
  if (request_.stream && !result.text.empty() && sink_.on_delta) sink_.on_delta(result.text);
  Finish(std::move(outcome));
}

void HttpProviderCall::FinishStream() {
  if (!ended_) {
    // The last event may lack its blank line (Gemini's does): dispatch what is pending.
    events_.clear();
    (void)parser_.Finish(events_);
    HandleEvents();
    if (finished_) return;
  }
  if (!whole_) {
    Finish(
        Error("incomplete_stream", absl::StrCat("the stream ended without ", stream_end()), true));
    return;
  }
  ChatResult result;
  result.text = std::move(text_);
  result.model = model_.empty() ? request_.model : model_;
  result.finish_reason = finish_reason_.empty() ? "stop" : finish_reason_;
  result.usage = usage_;
  Finish(std::move(result));
}

ProviderError HttpProviderCall::Error(std::string code, std::string message, bool retryable) const {
  ProviderError e;
  e.provider = options_.provider;
  e.code = std::move(code);
  e.message = std::move(message);
  e.retryable = retryable;
  return e;
}

// A failure noticed while the body is still arriving: drop the connection, report at once.
void HttpProviderCall::Fail(ProviderError error) {
  error.provider = options_.provider;
  std::shared_ptr<HttpExchange> exchange;
  {
    std::lock_guard lock(mu_);
    exchange = exchange_;
  }
  Finish(std::move(error));
  if (exchange != nullptr) exchange->Cancel();
}

void HttpProviderCall::Finish(ProviderOutcome outcome) {
  if (finished_) return;
  finished_ = true;
  if (auto* result = std::get_if<ChatResult>(&outcome)) {
    result->provider = options_.provider;
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

}  // namespace anima::broker
