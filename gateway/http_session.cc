#include "gateway/http_session.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "boost/beast/websocket.hpp"
#include "gateway/ws_session.h"
#include "spdlog/spdlog.h"

namespace anima::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {
// Between requests of a keep-alive connection.
constexpr auto kKeepAliveTimeout = std::chrono::seconds(30);

std::string_view PathOf(std::string_view target) { return target.substr(0, target.find('?')); }
}  // namespace

HttpSession::HttpSession(tcp::socket&& socket, GatewayContext& context)
    : context_(context), stream_(std::move(socket)) {}

void HttpSession::Run() {
  net::dispatch(stream_.get_executor(),
                beast::bind_front_handler(&HttpSession::DoRead, shared_from_this()));
}

void HttpSession::DoRead() {
  parser_.emplace();
  parser_->header_limit(16 * 1024);
  parser_->body_limit(64 * 1024);
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
                          bool bearer_challenge) {
  const auto& request = parser_->get();
  response_ = std::make_shared<http::response<http::string_body>>(status, request.version());
  response_->set(http::field::server, "anima-gateway/0.1.0");
  if (!retry_after.empty()) response_->set(http::field::retry_after, retry_after);
  if (bearer_challenge) response_->set(http::field::www_authenticate, "Bearer");
  response_->set(http::field::content_type, "text/plain; charset=utf-8");
  response_->keep_alive(request.keep_alive());
  response_->body() = std::move(body);
  response_->prepare_payload();
  if (request.method() == http::verb::head) response_->body().clear();
  http::async_write(stream_, *response_,
                    beast::bind_front_handler(&HttpSession::OnWrite, shared_from_this(),
                                              response_->keep_alive()));
}

void HttpSession::OnWrite(bool keep_alive, beast::error_code ec, size_t) {
  response_.reset();
  if (ec) return;
  if (!keep_alive) {
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    return;
  }
  DoRead();
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
