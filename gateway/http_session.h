#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded

#include "absl/status/status.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/gateway_context.h"
#include "gateway/openai_api.h"

namespace anima::gateway {

// One HTTP/1.1 connection on the gateway port, as in Beast's advanced_server: it answers
// GET /healthz and /readyz, POST /v1/chat/completions (the OpenAI-compatible API, one
// Router.Dispatch per request, answered whole or as server-sent events), hands a WebSocket
// upgrade of / or /ws to a WsSession, and answers anything else 404. Runs on its connection's
// strand.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, GatewayContext& context);
  // Cancels a chat completion still in flight.
  ~HttpSession();
  void Run();

 private:
  void DoRead();
  void OnRead(boost::beast::error_code ec, size_t bytes);
  void Respond(boost::beast::http::status status, std::string body,
               std::string_view retry_after = {}, bool bearer_challenge = false,
               std::string_view content_type = "text/plain; charset=utf-8");
  void RespondError(const OpenAiError& error);
  void OnWrite(bool keep_alive, boost::beast::error_code ec, size_t bytes);
  // Reads the next request once no read is pending.
  void ResumeReading(bool keep_alive);
  // Reads and drops what the client still sends, for a bounded time, after the answer.
  void Discard(boost::beast::error_code ec, size_t bytes);

  // Draining and auth for /v1/*: false when it answered the request itself.
  bool AdmitApiRequest();
  // GET /v1/models: Router.ListModels as an OpenAI list.
  void ListModels();
  // POST /v1/chat/completions.
  void StartChatCompletion();
  void OnChatEvent(uint64_t seq, anima::v1::Event event);
  void OnChatDone(uint64_t seq, const grpc::Status& status);
  void FailChat(const OpenAiError& error);
  void EndChat();
  // While a completion is in flight the connection is read for its end: a client that goes away
  // cancels the router call.
  void Probe();
  void OnProbe(boost::beast::error_code ec, size_t bytes);
  // Server-sent events: the header, then each `data:` event as an HTTP chunk.
  void StartEventStream();
  void SendEvent(std::string data);
  void EndEventStream();
  void EnqueueRaw(std::string bytes);
  void DoStreamWrite();
  void OnStreamWrite(boost::beast::error_code ec, size_t bytes);

  struct Chat {
    uint64_t seq = 0;
    std::shared_ptr<DispatchCall> call;
    ChatCompletionRenderer renderer;
    bool stream = false;
    bool include_usage = false;
    bool stream_started = false;  // the 200 header of the event stream is queued
    bool saw_delta = false;
    std::chrono::steady_clock::time_point start;
  };

  GatewayContext& context_;
  boost::beast::tcp_stream stream_;
  const std::string session_id_;  // "h-…", sent as the envelope's session_id
  boost::beast::flat_buffer buffer_;
  std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
  std::shared_ptr<boost::beast::http::response<boost::beast::http::string_body>> response_;
  bool got_request_ = false;  // a complete request was read on this connection
  std::optional<Chat> chat_;
  uint64_t next_seq_ = 0;
  bool probing_ = false;          // a Probe read is pending
  bool resume_on_probe_ = false;  // OnProbe starts the next request's read
  bool client_gone_ = false;
  std::deque<std::string> stream_queue_;
  bool stream_writing_ = false;
  bool stream_closing_ = false;  // the last chunk is queued
  bool sse_chunked_ = true;      // HTTP/1.0 clients get a body that ends with the connection
  bool sse_keep_alive_ = true;
  bool discarding_ = false;
  bool force_close_ = false;  // the request was not read whole: close after answering
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
