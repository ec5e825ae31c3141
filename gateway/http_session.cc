#include "gateway/http_session.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "boost/beast/websocket.hpp"
#include "gateway/ws_session.h"
#include "nlohmann/json.hpp"
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

OpenAiError ApiError(int status, std::string type, std::string code, std::string message,
                     std::string param = "") {
  OpenAiError e;
  e.http_status = status;
  e.type = std::move(type);
  e.code = std::move(code);
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

std::string AddressOf(const tcp::socket& socket) {
  beast::error_code ec;
  auto endpoint = socket.remote_endpoint(ec);
  return ec ? std::string("?") : endpoint.address().to_string();
}

// The value of query parameter `name` in `target` (not decoded: principal ids need none).
std::string QueryParam(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  while (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    if (rest.substr(0, name.size()) == name && rest.size() > name.size() &&
        rest[name.size()] == '=') {
      rest.remove_prefix(name.size() + 1);
      return std::string(rest.substr(0, rest.find('&')));
    }
    q = target.find('&', q + 1);
  }
  return "";
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

HttpSession::HttpSession(tcp::socket&& socket, GatewayContext& context, ConnectionSlot slot,
                         std::optional<AcceptRefusal> refusal)
    // Each HTTP connection is a session of its own, so the router's round robin across
    // sessions treats API clients one by one rather than as one big client.
    : context_(context),
      slot_(std::move(slot)),
      refusal_(std::move(refusal)),
      stream_(std::move(socket)),
      client_address_(AddressOf(stream_.socket())),
      session_id_(common::NewSecureId("h-")),
      rate_(context.settings.messages_per_second, std::chrono::seconds(1),
            std::chrono::steady_clock::now()) {}

HttpSession::~HttpSession() {
  if (chat_) {
    if (chat_->call) chat_->call->Cancel();
    ReleaseChat(/*answered=*/false);
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
  // Who the previous request on this connection acted for, and its headers, belong to it.
  principal_.reset();
  rate_headers_.reset();
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
  bool get = request.method() == http::verb::get || request.method() == http::verb::head;
  bool probe = get && (path == "/healthz" || path == "/readyz");
  if (refusal_ && !probe) {
    // Accepted over a connection limit: answered, and the connection closed.
    force_close_ = true;
    Respond(refusal_->status, refusal_->message, refusal_->retry_after);
    return;
  }
  if (beast::websocket::is_upgrade(request)) {
    Upgrade();
    return;
  }
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
  if (path == "/v1/models" || path == "/v1/usage") {
    if (!get) {
      RespondError(ApiError(405, "invalid_request_error", "method_not_allowed",
                            "use GET for " + std::string(path)));
      return;
    }
    if (path == "/v1/models") {
      ListModels();
    } else {
      Usage();
    }
    return;
  }
  if (path.substr(0, 4) == "/v1/") {
    OpenAiError e{404,
                  "invalid_request_error",
                  kNotFound,
                  absl::StrCat("unknown API path ", std::string(path),
                               ": the gateway serves POST /v1/chat/completions, GET /v1/models "
                               "and GET /v1/usage"),
                  "",
                  0};
    RespondError(e);
    return;
  }
  if (get && context_.settings.console && path == "/console/config.json") {
    // What the page needs before it opens its WebSocket: whether to ask for a key first.
    nlohmann::json config = {{"auth_required", context_.settings.auth != nullptr},
                             {"protocol", 1},
                             {"server", "anima-gateway/0.1.0"}};
    Respond(http::status::ok, config.dump() + "\n", {}, false, "application/json");
    return;
  }
  if (get && context_.settings.console) {
    if (const ConsoleAsset* asset = FindConsoleAsset(path)) {
      ServeConsoleAsset(*asset);
      return;
    }
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
  if (principal_ && !rate_headers_ && HasRateLimitHeaders(principal_->limits)) {
    // An answer that admitted nothing (a bad request, the model list) still carries the
    // principal's x-ratelimit-* values: one question to the store first.
    context_.quotas->Usage(
        *principal_,
        [self = shared_from_this(), executor = stream_.get_executor(), status,
         body = std::move(body), retry_after = std::string(retry_after), bearer_challenge,
         content_type = std::string(content_type)](UsageReport report) mutable {
          net::dispatch(executor, [self = std::move(self), status, body = std::move(body),
                                   retry_after = std::move(retry_after), bearer_challenge,
                                   content_type = std::move(content_type),
                                   report = std::move(report)]() mutable {
            self->rate_headers_ = HeadersFromUsage(report);
            self->WriteResponse(status, std::move(body), retry_after, bearer_challenge,
                                content_type);
          });
        });
    return;
  }
  WriteResponse(status, std::move(body), retry_after, bearer_challenge, content_type);
}

void HttpSession::WriteResponse(http::status status, std::string body, std::string_view retry_after,
                                bool bearer_challenge, std::string_view content_type) {
  const auto& request = parser_->get();
  response_ = std::make_shared<http::response<http::string_body>>(status, request.version());
  response_->set(http::field::server, "anima-gateway/0.1.0");
  if (!retry_after.empty()) response_->set(http::field::retry_after, retry_after);
  if (bearer_challenge) response_->set(http::field::www_authenticate, "Bearer");
  for (auto& [name, value] : RateLimitHeaderFields()) response_->set(name, value);
  response_->set(http::field::content_type, content_type);
  if (retry_after_ms_ > 0) {
    response_->set("retry-after-ms", std::to_string(retry_after_ms_));
    retry_after_ms_ = 0;
  }
  response_->keep_alive(request.keep_alive() && !force_close_);
  response_->body() = std::move(body);
  response_->prepare_payload();
  if (request.method() == http::verb::head) response_->body().clear();
  http::async_write(stream_, *response_,
                    beast::bind_front_handler(&HttpSession::OnWrite, shared_from_this(),
                                              response_->keep_alive()));
}

void HttpSession::ServeConsoleAsset(const ConsoleAsset& asset) {
  const auto& request = parser_->get();
  bool fresh = request[http::field::if_none_match] == asset.etag;
  response_ = std::make_shared<http::response<http::string_body>>(
      fresh ? http::status::not_modified : http::status::ok, request.version());
  response_->set(http::field::server, "anima-gateway/0.1.0");
  response_->set(http::field::content_type, asset.content_type);
  // Revalidated on every load (a 304 when unchanged), so a new gateway's console is never
  // mixed with an old one's script.
  response_->set(http::field::cache_control, "no-cache");
  response_->set(http::field::etag, asset.etag);
  // The page loads only its own script and styles, and talks only to this gateway.
  response_->set("content-security-policy",
                 "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                 "frame-ancestors 'none'");
  response_->set("x-content-type-options", "nosniff");
  response_->set("referrer-policy", "no-referrer");
  response_->set("x-frame-options", "DENY");
  response_->set("cross-origin-opener-policy", "same-origin");
  response_->keep_alive(request.keep_alive() && !force_close_);
  if (!fresh) response_->body() = std::string(asset.body);
  response_->prepare_payload();
  if (request.method() == http::verb::head) response_->body().clear();
  http::async_write(stream_, *response_,
                    beast::bind_front_handler(&HttpSession::OnWrite, shared_from_this(),
                                              response_->keep_alive()));
}

std::vector<std::pair<std::string, std::string>> HttpSession::RateLimitHeaderFields() {
  std::vector<std::pair<std::string, std::string>> fields;
  if (!principal_ || !rate_headers_) return fields;
  const RateLimitHeaders& h = *rate_headers_;
  auto add = [&](const char* what, const std::optional<RateLimitHeaders::Trio>& trio) {
    if (!trio) return;
    fields.emplace_back(absl::StrCat("x-ratelimit-limit-", what), absl::StrCat(trio->limit));
    fields.emplace_back(absl::StrCat("x-ratelimit-remaining-", what),
                        absl::StrCat(trio->remaining));
    fields.emplace_back(absl::StrCat("x-ratelimit-reset-", what),
                        OpenAiApi::ResetDuration(trio->reset));
  };
  add("requests", h.requests);
  add("tokens", h.tokens);
  return fields;
}

void HttpSession::RespondError(const OpenAiError& error) {
  context_.metrics->ErrorSent(error.code.empty() ? kInternal : error.code);
  if (error.retry_after_ms > 0) retry_after_ms_ = error.retry_after_ms;
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
  principal_.reset();
  if (context_.draining.load()) {
    RespondError(ApiError(503, "server_error", kUnavailable, "the gateway is shutting down"));
    return false;
  }
  AccessDecision access =
      context_.access.Check(AccessRequest{.origin = request[http::field::origin],
                                          .host = request[http::field::host],
                                          .authorization = request[http::field::authorization],
                                          .protocols = {},
                                          .target = request.target(),
                                          .websocket = false,
                                          .client_address = client_address_});
  if (!access.ok()) {
    context_.metrics->AuthFailed(access.reason);
    OpenAiError e = OpenAiApi::Unauthenticated(access.message);
    if (access.http_status == 403) {
      e = ApiError(403, "permission_error", "forbidden_origin", access.message);
    } else if (access.http_status == 429) {
      e = ApiError(429, "rate_limit_exceeded", "rate_limit_exceeded", access.message);
      e.retry_after_ms = access.retry_after.count();
      e.retry_after_seconds = (access.retry_after.count() + 999) / 1000;
    }
    RespondError(e);
    return false;
  }
  auto now = std::chrono::steady_clock::now();
  if (!rate_.TryTake(now)) {
    context_.metrics->LimitHit("messages_per_second");
    OpenAiError e =
        ApiError(429, "rate_limit_exceeded", "rate_limit_exceeded",
                 absl::StrCat("over messages_per_second (", context_.settings.messages_per_second,
                              ") on this connection"));
    e.retry_after_ms = std::max<int64_t>(1, rate_.WaitFor(now).count());
    e.retry_after_seconds = (e.retry_after_ms + 999) / 1000;
    RespondError(e);
    return false;
  }
  principal_ = std::move(access.principal);
  return true;
}

void HttpSession::Upgrade() {
  const auto& request = parser_->get();
  std::string_view path = PathOf(request.target());
  if (path != "/" && path != "/ws") {
    Respond(http::status::not_found, "not found\n");
    return;
  }
  if (context_.draining.load()) {
    Respond(http::status::service_unavailable, "shutting down\n");
    return;
  }
  AccessDecision access =
      context_.access.Check(AccessRequest{.origin = request[http::field::origin],
                                          .host = request[http::field::host],
                                          .authorization = request[http::field::authorization],
                                          .protocols = request[http::field::sec_websocket_protocol],
                                          .target = request.target(),
                                          .websocket = true,
                                          .client_address = client_address_});
  if (!access.ok()) {
    context_.metrics->AuthFailed(access.reason);
    spdlog::debug("upgrade of {} from {} refused ({}): {}",
                  Authenticator::RedactTarget(request.target()), client_address_,
                  access.http_status, access.reason);
    std::string retry_after;
    if (access.retry_after.count() > 0) {
      retry_after = std::to_string((access.retry_after.count() + 999) / 1000);
    }
    Respond(static_cast<http::status>(access.http_status), access.message + "\n", retry_after,
            access.http_status == 401);
    return;
  }
  stream_.expires_never();
  std::make_shared<WsSession>(stream_.release_socket(), context_, std::move(slot_),
                              std::move(access))
      ->Run(parser_->release());
}

void HttpSession::Usage() {
  if (!AdmitApiRequest()) return;
  std::shared_ptr<const Principal> subject = principal_;
  std::string asked = QueryParam(parser_->get().target(), "principal");
  if (!asked.empty() && asked != principal_->id) {
    if (principal_->role != Role::kAdmin) {
      RespondError(ApiError(403, "permission_error", "forbidden",
                            "only an admin may ask for another principal's usage", "principal"));
      return;
    }
    Authenticator* auth = context_.access.auth();
    subject = auth ? auth->keys()->FindById(asked) : nullptr;
    if (!subject) {
      RespondError(ApiError(
          404, "invalid_request_error", kNotFound,
          absl::StrCat("no principal \"", asked.substr(0, 128), "\" is configured"), "principal"));
      return;
    }
  }
  context_.quotas->Usage(*subject, [self = shared_from_this(), executor = stream_.get_executor(),
                                    own = subject == principal_](UsageReport report) mutable {
    net::dispatch(executor, [self = std::move(self), own, report = std::move(report)] {
      if (own) self->rate_headers_ = HeadersFromUsage(report);
      self->Respond(http::status::ok, FrameTranslator::RenderUsage(report, ""), {}, false,
                    "application/json");
    });
  });
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
  // Nothing is read until the answer: the next request waits behind this one, as it would for
  // the completion itself.
  std::shared_ptr<const Principal> asking = principal_;
  context_.quotas->Admit(
      *asking, /*spends=*/true,
      [self = shared_from_this(), executor = stream_.get_executor(),
       req = std::move(std::get<ChatCompletionRequest>(parsed))](QuotaDecision decision) mutable {
        net::dispatch(executor, [self = std::move(self), req = std::move(req),
                                 decision = std::move(decision)]() mutable {
          self->OnChatQuota(std::move(req), std::move(decision));
        });
      });
}

void HttpSession::OnChatQuota(ChatCompletionRequest req, QuotaDecision decision) {
  rate_headers_ = decision.headers;
  if (decision.refusal) {
    context_.metrics->QuotaRefused(principal_->id, principal_->tier, decision.refusal->limit);
    RespondError(OpenAiApi::QuotaExceeded(*decision.refusal));
    return;
  }
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
  chat_->principal = principal_;
  chat_->ticket = decision.ticket;
  context_.in_flight.fetch_add(1);
  spdlog::debug("req={} http chat completion {} stream={}", req.envelope.request_id(),
                chat_->renderer.id(), req.stream);
  // A completion may take as long as the router lets it.
  stream_.expires_never();
  chat_->held = std::move(req.envelope);
  // The same admission as a WebSocket chat: held while its type is over its adaptive limit,
  // refused 429 overloaded when that wait would be too long.
  if (auto hold = context_.admission->HoldFor("chat")) {
    // Past what the path serves: refused now rather than after a wait in a standing queue.
    if (auto retry_after = context_.admission->Overloaded(hold->key)) {
      FailChat(OpenAiApi::Overloaded(*retry_after), /*answered=*/false);
      return;
    }
    chat_->admission_key = hold->key;
    uint64_t seq = chat_->seq;
    Admission* admission = context_.admission;
    auto waiter = [weak = weak_from_this(), executor = stream_.get_executor(), admission,
                   key = hold->key, seq](bool granted) {
      auto self = weak.lock();
      if (!self) {
        if (granted) admission->ReleaseUnused(key);
        return;
      }
      net::post(executor, [self = std::move(self), seq, key, granted] {
        self->OnAdmissionSlot(seq, key, granted);
      });
    };
    if (!admission->Acquire(hold->key, std::move(waiter))) {
      Probe();  // a client that goes away while held is noticed
      return;
    }
    chat_->admitted = true;
  }
  DispatchChat();
}

void HttpSession::OnAdmissionSlot(uint64_t seq, const std::string& key, bool granted) {
  if (!chat_ || chat_->seq != seq || !chat_->held || client_gone_) {
    if (granted) context_.admission->ReleaseUnused(key);
    return;
  }
  if (!granted) {  // waited past the bound
    FailChat(OpenAiApi::Overloaded(context_.admission->RetryAfter(key)), /*answered=*/false);
    return;
  }
  chat_->admitted = true;
  DispatchChat();
}

void HttpSession::DispatchChat() {
  chat_->dispatched = std::chrono::steady_clock::now();
  anima::v1::Envelope envelope = std::move(*chat_->held);
  chat_->held.reset();
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
  chat_->call = context_.router->Dispatch(std::move(envelope), IdentityFor(*chat_->principal),
                                          std::move(callbacks));
  Probe();
}

void HttpSession::ReleaseChat(bool answered) {
  context_.metrics->RequestDone("chat", SecondsSince(chat_->start));
  if (chat_->admitted) {
    context_.admission->Release(chat_->admission_key, chat_->dispatched, answered);
  }
  context_.quotas->Release(*chat_->principal, chat_->ticket);
  context_.in_flight.fetch_sub(1);
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
    if (chat_ && chat_->call) {
      spdlog::debug("http chat completion {}: client gone, cancelling", chat_->renderer.id());
      chat_->call->Cancel();
    } else if (chat_) {
      EndChat(/*answered=*/false);  // still held for admission: it never reached the router
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
  if (event.has_chat_response() || event.has_error()) {
    chat_->dispatched = FrameTranslator::WithoutProviderTime(
        chat_->dispatched, std::chrono::steady_clock::now(), event);
  }
  if (event.has_chat_delta()) {
    if (!chat_->stream) return;
    StartEventStream();
    if (!event.chat_delta().delta().empty()) {
      SendEvent(chat_->renderer.DeltaChunk(event.chat_delta().delta()));
      chat_->saw_delta = true;
    }
  } else if (event.has_chat_response()) {
    const anima::v1::ChatResponse& response = event.chat_response();
    int64_t tokens = response.has_billed_usage() ? response.billed_usage().total_tokens()
                                                 : response.usage().total_tokens();
    if (tokens > 0 || response.cost_usd() > 0) {
      context_.quotas->Charge(*chat_->principal, tokens, response.cost_usd());
      context_.metrics->Spent(chat_->principal->id, chat_->principal->tier, tokens,
                              response.cost_usd());
    }
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
    EndChat(/*answered=*/true);
  } else if (event.has_error()) {
    FailChat(OpenAiApi::ErrorFromEvent(event.error()), /*answered=*/true);
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
  FailChat(OpenAiApi::ErrorFromStatus(status.error_code(), status.error_message()),
           /*answered=*/false);
}

void HttpSession::FailChat(const OpenAiError& error, bool answered) {
  if (client_gone_) {
    EndChat(answered);
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
  EndChat(answered);
}

void HttpSession::EndChat(bool answered) {
  ReleaseChat(answered);
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
  for (auto& [name, value] : RateLimitHeaderFields())
    absl::StrAppend(&head, name, ": ", value, "\r\n");
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
  // Both limits apply to every connection, WebSocket or HTTP, before it costs anything more.
  // A refused connection holds no slot and is answered on its first request.
  std::optional<AcceptRefusal> refusal;
  ConnectionSlot slot;
  std::chrono::milliseconds wait{0};
  if (context_.connections.load() >= context_.settings.max_connections) {
    context_.metrics->LimitHit("connections");
    refusal = AcceptRefusal{
        http::status::service_unavailable,
        absl::StrCat("over max_connections (", context_.settings.max_connections, ")\n"), "1"};
  } else if (!context_.new_connections.Take(&wait)) {
    context_.metrics->LimitHit("new_connections_per_second");
    refusal = AcceptRefusal{http::status::too_many_requests,
                            absl::StrCat("over max_new_connections_per_second (",
                                         context_.settings.max_new_connections_per_second, ")\n"),
                            std::to_string((wait.count() + 999) / 1000)};
  } else {
    slot = ConnectionSlot(&context_.connections);
  }
  std::make_shared<HttpSession>(std::move(socket), context_, std::move(slot), std::move(refusal))
      ->Run();
  DoAccept();
}

}  // namespace anima::gateway
