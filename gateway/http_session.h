#pragma once

#include <memory>
#include <optional>

#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded

#include "absl/status/status.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/gateway_context.h"

namespace anima::gateway {

// One HTTP/1.1 connection on the gateway port, as in Beast's advanced_server: it answers
// GET /healthz and /readyz, hands a WebSocket upgrade of / or /ws to a WsSession, and answers
// anything else 404. Runs on its connection's strand.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, GatewayContext& context);
  void Run();

 private:
  void DoRead();
  void OnRead(boost::beast::error_code ec, size_t bytes);
  void Respond(boost::beast::http::status status, std::string body,
               std::string_view retry_after = {}, bool bearer_challenge = false);
  void OnWrite(bool keep_alive, boost::beast::error_code ec, size_t bytes);

  GatewayContext& context_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::shared_ptr<boost::beast::http::response<boost::beast::http::string_body>> response_;
  bool got_request_ = false;  // a complete request was read on this connection
};

// Accepts connections on the gateway port; each gets its own strand and an HttpSession.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(boost::asio::io_context& ioc, GatewayContext& context);
  // Opens, binds and listens; errors name the endpoint.
  absl::Status Listen(const boost::asio::ip::tcp::endpoint& endpoint);
  int port() const { return port_; }
  void Run();
  // Thread-safe: stops accepting.
  void Stop();

 private:
  void DoAccept();
  void OnAccept(boost::beast::error_code ec, boost::asio::ip::tcp::socket socket);

  boost::asio::io_context& ioc_;
  GatewayContext& context_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;  // runs on the acceptor's strand
  int port_ = 0;
};

}  // namespace anima::gateway
