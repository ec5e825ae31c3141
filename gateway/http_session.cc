#include "gateway/http_session.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "boost/beast/websocket.hpp"
#include "gateway/ws_session.h"
#include "services/common/grpc_metrics.h"
#include "services/common/process.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {
// Between requests of a keep-alive connection.
constexpr auto kKeepAliveTimeout = std::chrono::seconds(30);

// Bytes a client may send ahead while its chat completion is in flight (pipelined requests).
constexpr size_t kMaxReadAhead = 64 * 1024;

std::string_view PathOf(std::string_view target) { return target.substr(0, target.find('?')); }

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

HttpSession::HttpSession(tcp::socket&& socket, GatewayContext& context)
    // Each HTTP connection is a session of its own, so the router's round robin across
    // sessions treats API clients one by one rather than as one big client.
    : context_(context), stream_(std::move(socket)), session_id_("h-" + common::NewRequestId()) {}

HttpSession::~HttpSession() {
  if (chat_) {
    if (chat_->call) chat_->call->Cancel();
    context_.in_flight.fetch_sub(1);
  }
}

void HttpSession::Run() {
  net::dispatch(stream_.get_executor(),
                beast::bind_front_handler(&HttpSession::DoRead, shared_from_this()));
}

void HttpSession::DoRead() {
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  // Also the limit of an API request body (413 over it).
  parser_->body_limit(context_.settings.max_message_bytes);
  if (got_request_) {
    stream_.expires_after(kKeepAliveTimeout);
  } else {
    stream_.expires_after(context_.settings.handshake_timeout);
  }
  http::async_read(stream_, buffer_, *parser_,
                   beast::bind_front_handler(&HttpSession::OnRead, shared_from_this()));
}

void HttpSession::OnRead(beast::error_code ec, size_t) {
  if (ec == http::error::end_of_stream) {
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    return;
  }
  if (ec == beast::error::timeout && !got_request_) {
    context_.metrics->LimitHit("handshake_timeout");
  }
  // Found in the header (Content-Length) or while reading a chunked body; the start line and
  // header fields read so far are in the parser.
  if (ec == http::error::body_limit) {
    // The rest of the body is not read, so the connection cannot carry another request.
    context_.metrics->LimitHit("message_size");
    force_close_ = true;
    RespondError(OpenAiApi::BodyTooLarge(context_.settings.max_message_bytes));
    return;
  }
  if (ec) return;
  got_request_ = true;
  const auto& request = parser_->get();
  std::string_view path = PathOf(request.target());
  if (beast::websocket::is_upgrade(request)) {
    if (path != "/" && path != "/ws") {
      Respond(http::status::not_found, "not found\n");
      return;
    }
    if (context_.draining.load()) {
      Respond(http::status::service_unavailable, "shutting down\n");
      return;
    }
    std::optional<std::chrono::system_clock::time_point> expires;
    if (context_.settings.auth.enabled()) {
      std::string token = Authenticator::TokenOf(request[http::field::authorization],
                                                 std::string_view(request.target()));
      auto grant = context_.settings.auth.Check(token);
      if (!grant.ok()) {
        context_.metrics->AuthFailed(token.empty() ? "missing" : "invalid");
        Respond(http::status::unauthorized, std::string(grant.status().message()) + "\n", {}, true);
        return;
      }
      expires = grant->expires;
    }
    if (context_.sessions.size() >= static_cast<size_t>(context_.settings.max_connections)) {
      context_.metrics->LimitHit("connections");
      Respond(http::status::service_unavailable,
              absl::StrCat("over max_connections (", context_.settings.max_connections, ")\n"),
              "1");
      return;
    }
    std::chrono::milliseconds wait{0};
    if (!context_.new_connections.Take(&wait)) {
      context_.metrics->LimitHit("new_connections_per_second");
      Respond(http::status::too_many_requests,
              absl::StrCat("over max_new_connections_per_second (",
                           context_.settings.max_new_connections_per_second, ")\n"),
              std::to_string((wait.count() + 999) / 1000));
      return;
    }
    stream_.expires_never();
    std::make_shared<WsSession>(stream_.release_socket(), context_)
        ->Run(parser_->release(), expires);
    return;
  }
  bool get = request.method() == http::verb::get || request.method() == http::verb::head;
  if (path == "/v1/chat/completions") {
    if (request.method() != http::verb::post) {
      OpenAiError e{405,
                    "invalid_request_error",
                    "method_not_allowed",
                    "use POST for /v1/chat/completions",
                    "",
                    0};
      RespondError(e);
      return;
    }
    StartChatCompletion();
    return;
  }
  if (path == "/v1/models") {
    if (!get) {
      OpenAiError e{
          405, "invalid_request_error", "method_not_allowed", "use GET for /v1/models", "", 0};
      RespondError(e);
      return;
    }
    ListModels();
    return;
  }
  if (path.substr(0, 4) == "/v1/") {
    OpenAiError e{404,
                  "invalid_request_error",
                  kNotFound,
                  absl::StrCat("unknown API path ", std::string(path),
                               ": the gateway serves POST /v1/chat/completions"),
                  "",
                  0};
    RespondError(e);
    return;
  }
  if (get && path == "/healthz") {
    Respond(http::status::ok, "ok\n");
  } else if (get && path == "/readyz") {
    if (context_.draining.load()) {
      Respond(http::status::service_unavailable, "draining\n");
    } else if (!context_.readiness->ready()) {
      Respond(http::status::service_unavailable, "router unavailable\n");
    } else {
      Respond(http::status::ok, "ready\n");
    }
  } else {
    Respond(http::status::not_found, "not found\n");
  }
}

void HttpSession::Respond(http::status status, std::string body, std::string_view retry_after,
                          bool bearer_challenge, std::string_view content_type) {
  const auto& request = parser_->get();
  response_ = std::make_shared<http::response<http::string_body>>(status, request.version());
  response_->set(http::field::server, "anima-gateway/0.1.0");
  if (!retry_after.empty()) response_->set(http::field::retry_after, retry_after);
  if (bearer_challenge) response_->set(http::field::www_authenticate, "Bearer");
  response_->set(http::field::content_type, content_type);
  response_->keep_alive(request.keep_alive() && !force_close_);
  response_->body() = std::move(body);
  response_->prepare_payload();
  if (request.method() == http::verb::head) response_->body().clear();
  http::async_write(stream_, *response_,
                    beast::bind_front_handler(&HttpSession::OnWrite, shared_from_this(),
                                              response_->keep_alive()));
}

void HttpSession::RespondError(const OpenAiError& error) {
  context_.metrics->ErrorSent(error.code.empty() ? kInternal : error.code);
  Respond(static_cast<http::status>(error.http_status), OpenAiApi::RenderError(error),
          error.retry_after_seconds > 0 ? std::to_string(error.retry_after_seconds) : "",
          error.http_status == 401, "application/json");
}

void HttpSession::OnWrite(bool keep_alive, beast::error_code ec, size_t) {
  response_.reset();
  if (ec) return;
  ResumeReading(keep_alive);
}

void HttpSession::ResumeReading(bool keep_alive) {
  beast::error_code ec;
  if (!keep_alive) {
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    // Closing with the rest of an oversized body unread would reset the connection, and the
    // client could lose the answer: the rest is read and dropped for a while first.
    if (force_close_ && !probing_) Discard({}, 0);
    // A probe would hold the connection until the client closed it: the answer is complete, so
    // the probe ends and the connection with it.
    if (probing_) stream_.socket().cancel(ec);
    return;
  }
  if (probing_) {
    // Only one read may be pending: the probe ends first, and its handler reads on.
    resume_on_probe_ = true;
    stream_.socket().cancel(ec);
    return;
  }
  DoRead();
}

void HttpSession::Discard(beast::error_code ec, size_t) {
  if (ec) return;
  if (!discarding_) {
    discarding_ = true;
    stream_.expires_after(std::chrono::seconds(2));
  }
  buffer_.clear();
  stream_.async_read_some(buffer_.prepare(16 * 1024),
                          beast::bind_front_handler(&HttpSession::Discard, shared_from_this()));
}

bool HttpSession::AdmitApiRequest() {
  const auto& request = parser_->get();
  if (context_.draining.load()) {
    RespondError(
        OpenAiError{503, "server_error", kUnavailable, "the gateway is shutting down", "", 0});
    return false;
  }
  if (context_.settings.auth.enabled()) {
    std::string token = Authenticator::TokenOf(request[http::field::authorization],
                                               std::string_view(request.target()));
    auto grant = context_.settings.auth.Check(token);
    if (!grant.ok()) {
      context_.metrics->AuthFailed(token.empty() ? "missing" : "invalid");
      RespondError(OpenAiApi::Unauthenticated(std::string(grant.status().message())));
      return false;
    }
  }
  return true;
}

void HttpSession::ListModels() {
  if (!AdmitApiRequest()) return;
  stream_.expires_never();
  auto executor = stream_.get_executor();
  // RouterClient runs the callback exactly once, within the call's 5 s deadline.
  context_.router->ListModels([self = shared_from_this(), executor](
                                  const grpc::Status& status,
                                  anima::v1::ListModelsResponse response) {
    net::post(executor, [self, status, response = std::move(response)] {
      if (!status.ok()) {
        self->RespondError(OpenAiApi::ErrorFromStatus(status.error_code(), status.error_message()));
        return;
      }
      std::vector<std::pair<std::string, std::string>> models;
      for (const auto& m : response.models()) models.emplace_back(m.provider(), m.model());
      self->Respond(http::status::ok, OpenAiApi::RenderModelList(models), {}, false,
                    "application/json");
    });
  });
}

void HttpSession::StartChatCompletion() {
  const auto& request = parser_->get();
  if (!AdmitApiRequest()) return;
  auto parsed = OpenAiApi::ParseChatCompletion(request.body());
  if (auto* error = std::get_if<OpenAiError>(&parsed)) {
    RespondError(*error);
    return;
  }
  ChatCompletionRequest& req = std::get<ChatCompletionRequest>(parsed);
  const anima::v1::ChatBody& body = req.envelope.chat();
  std::string requested_model =
      body.provider().empty() ? body.model() : absl::StrCat(body.provider(), "/", body.model());
  req.envelope.set_request_id(common::NewRequestId());
  req.envelope.set_session_id(session_id_);

  chat_.emplace();
  chat_->seq = ++next_seq_;
  chat_->renderer = ChatCompletionRenderer(requested_model);
  chat_->stream = req.stream;
  chat_->include_usage = req.include_usage;
  chat_->start = std::chrono::steady_clock::now();
  context_.in_flight.fetch_add(1);
  spdlog::debug("req={} http chat completion {} stream={}", req.envelope.request_id(),
                chat_->renderer.id(), req.stream);
  // A completion may take as long as the router lets it.
  stream_.expires_never();

  std::weak_ptr<HttpSession> weak = weak_from_this();
  auto executor = stream_.get_executor();
  uint64_t seq = chat_->seq;
  DispatchCallbacks callbacks;
  callbacks.on_event = [weak, executor, seq](anima::v1::Event event) {
    auto self = weak.lock();
    if (!self) return;
    net::post(executor, [self = std::move(self), seq, event = std::move(event)]() mutable {
      self->OnChatEvent(seq, std::move(event));
    });
  };
  callbacks.on_done = [weak, executor, seq](const grpc::Status& status) {
    auto self = weak.lock();
    if (!self) return;
    net::post(executor, [self = std::move(self), seq, status] { self->OnChatDone(seq, status); });
  };
  // Events are posted, so none can run before the call is stored.
  chat_->call = context_.router->Dispatch(std::move(req.envelope), std::move(callbacks));
  Probe();
}

void HttpSession::Probe() {
  if (probing_) return;
  probing_ = true;
  stream_.async_read_some(buffer_.prepare(4096),
                          beast::bind_front_handler(&HttpSession::OnProbe, shared_from_this()));
}

void HttpSession::OnProbe(beast::error_code ec, size_t bytes) {
  probing_ = false;
  if (!ec) buffer_.commit(bytes);
  if (resume_on_probe_) {
    resume_on_probe_ = false;
    if (!ec || ec == net::error::operation_aborted) DoRead();
    return;
  }
  if (ec || buffer_.size() > kMaxReadAhead) {
    if (ec == net::error::operation_aborted) return;
    // The client went away (or sends more than any pipelining needs): stop its completion.
    client_gone_ = true;
    if (chat_) {
      spdlog::debug("http chat completion {}: client gone, cancelling", chat_->renderer.id());
      chat_->call->Cancel();
    }
    if (!ec) {
      beast::error_code ignored;
      stream_.socket().close(ignored);
    }
    return;
  }
  if (chat_) Probe();
}

void HttpSession::OnChatEvent(uint64_t seq, anima::v1::Event event) {
  if (!chat_ || chat_->seq != seq || client_gone_) return;
  if (event.has_chat_delta()) {
    if (!chat_->stream) return;
    StartEventStream();
    if (!event.chat_delta().delta().empty()) {
      SendEvent(chat_->renderer.DeltaChunk(event.chat_delta().delta()));
      chat_->saw_delta = true;
    }
  } else if (event.has_chat_response()) {
    const anima::v1::ChatResponse& response = event.chat_response();
    if (chat_->stream) {
      StartEventStream();
      // A router that did not stream still answers as a stream: all of it in one delta.
      if (!chat_->saw_delta && !response.message().empty()) {
        SendEvent(chat_->renderer.DeltaChunk(response.message()));
      }
      SendEvent(chat_->renderer.FinishChunk(response));
      if (chat_->include_usage) SendEvent(chat_->renderer.UsageChunk(response));
      SendEvent("[DONE]");
      EndEventStream();
    } else {
      Respond(http::status::ok, chat_->renderer.Completion(response), {}, false,
              "application/json");
    }
    EndChat();
  } else if (event.has_error()) {
    FailChat(OpenAiApi::ErrorFromEvent(event.error()));
  }
  // Anything else (a module frame) has no place in a chat completion.
}

void HttpSession::OnChatDone(uint64_t seq, const grpc::Status& status) {
  if (!chat_ || chat_->seq != seq) return;  // already answered
  if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
      status.error_code() != grpc::StatusCode::CANCELLED) {
    spdlog::warn("http chat completion {}: router ended the call with {} ({}) and no answer",
                 chat_->renderer.id(), common::StatusCodeName(status.error_code()),
                 status.error_message());
  }
  FailChat(OpenAiApi::ErrorFromStatus(status.error_code(), status.error_message()));
}

void HttpSession::FailChat(const OpenAiError& error) {
  if (client_gone_) {
    EndChat();
    beast::error_code ignored;
    stream_.socket().close(ignored);
    return;
  }
  if (chat_->stream_started) {
    // The 200 is sent: the error goes in the stream, which then ends without [DONE].
    context_.metrics->ErrorSent(error.code.empty() ? kInternal : error.code);
    SendEvent(OpenAiApi::RenderError(error));
    EndEventStream();
  } else {
    RespondError(error);
  }
  EndChat();
}

void HttpSession::EndChat() {
  context_.metrics->RequestDone("chat_completion", SecondsSince(chat_->start));
  context_.in_flight.fetch_sub(1);
  chat_.reset();
}

void HttpSession::StartEventStream() {
  if (chat_->stream_started) return;
  chat_->stream_started = true;
  const auto& request = parser_->get();
  sse_chunked_ = request.version() >= 11;
  sse_keep_alive_ = sse_chunked_ && request.keep_alive();
  std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Server: anima-gateway/0.1.0\r\n"
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n";
  if (sse_chunked_) head += "Transfer-Encoding: chunked\r\n";
  if (!sse_keep_alive_) head += "Connection: close\r\n";
  head += "\r\n";
  EnqueueRaw(std::move(head));
  SendEvent(chat_->renderer.RoleChunk());
}

void HttpSession::SendEvent(std::string data) {
  std::string event = absl::StrCat("data: ", data, "\n\n");
  if (sse_chunked_) event = absl::StrFormat("%x\r\n%s\r\n", event.size(), event);
  EnqueueRaw(std::move(event));
}

void HttpSession::EndEventStream() {
  stream_closing_ = true;
  if (sse_chunked_) {
    EnqueueRaw("0\r\n\r\n");
  } else if (!stream_writing_ && stream_queue_.empty()) {
    stream_closing_ = false;
    ResumeReading(false);
  }
}

void HttpSession::EnqueueRaw(std::string bytes) {
  if (client_gone_) return;
  stream_queue_.push_back(std::move(bytes));
  if (!stream_writing_) DoStreamWrite();
}

void HttpSession::DoStreamWrite() {
  stream_writing_ = true;
  // A deque keeps its elements in place while others are pushed behind them.
  net::async_write(stream_, net::buffer(stream_queue_.front()),
                   beast::bind_front_handler(&HttpSession::OnStreamWrite, shared_from_this()));
}

void HttpSession::OnStreamWrite(beast::error_code ec, size_t) {
  stream_writing_ = false;
  if (ec) {
    client_gone_ = true;
    stream_queue_.clear();
    stream_closing_ = false;
    if (chat_) chat_->call->Cancel();
    return;
  }
  stream_queue_.pop_front();
  if (!stream_queue_.empty()) {
    DoStreamWrite();
  } else if (stream_closing_) {
    stream_closing_ = false;
    ResumeReading(sse_keep_alive_);
  }
}

Listener::Listener(net::io_context& ioc, GatewayContext& context)
    : ioc_(ioc),
      context_(context),
      acceptor_(net::make_strand(ioc)),
      retry_timer_(acceptor_.get_executor()) {}

absl::Status Listener::Listen(const tcp::endpoint& endpoint) {
  beast::error_code ec;
  auto fail = [&](const char* what) {
    return absl::UnavailableError(absl::StrCat("http: cannot ", what, " ",
                                               endpoint.address().to_string(), ":", endpoint.port(),
                                               ": ", ec.message()));
  };
  acceptor_.open(endpoint.protocol(), ec);
  if (ec) return fail("open");
  acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  if (ec) return fail("set reuse_address on");
  acceptor_.bind(endpoint, ec);
  if (ec) return fail("bind");
  acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen on");
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void Listener::Run() {
  net::dispatch(acceptor_.get_executor(),
                beast::bind_front_handler(&Listener::DoAccept, shared_from_this()));
}

void Listener::Stop() {
  net::post(acceptor_.get_executor(), [self = shared_from_this()] {
    beast::error_code ec;
    self->acceptor_.close(ec);
    self->retry_timer_.cancel();
  });
}

void Listener::DoAccept() {
  acceptor_.async_accept(net::make_strand(ioc_),
                         beast::bind_front_handler(&Listener::OnAccept, shared_from_this()));
}

void Listener::OnAccept(beast::error_code ec, tcp::socket socket) {
  if (!acceptor_.is_open()) return;
  if (ec) {
    // Usually out of file descriptors: retrying at once would spin, so pause the listener.
    spdlog::warn("http: accept: {}", ec.message());
    retry_timer_.expires_after(std::chrono::milliseconds(100));
    retry_timer_.async_wait([self = shared_from_this()](boost::system::error_code) {
      if (self->acceptor_.is_open()) self->DoAccept();
    });
    return;
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::make_shared<HttpSession>(std::move(socket), context_)->Run();
  DoAccept();
}

}  // namespace anima::gateway
