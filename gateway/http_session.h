#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <utility>  // before Boost 1.74's asio, which uses std::exchange unincluded

#include "absl/status/status.h"
#include "boost/asio.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "gateway/console_assets.h"
#include "gateway/gateway_context.h"
#include "gateway/openai_api.h"

namespace anima::gateway {

// A connection the listener accepted over max_connections or max_new_connections_per_second:
// its first request is answered with this and the connection closed (health probes excepted).
struct AcceptRefusal {
  boost::beast::http::status status = boost::beast::http::status::service_unavailable;
  std::string message;
  std::string retry_after;  // seconds, for Retry-After
};

// One HTTP/1.1 connection on the gateway port, as in Beast's advanced_server: it answers
// GET /healthz and /readyz, the web console (GET / and /console/*), POST /v1/chat/completions
// (the OpenAI-compatible API, one Router.Dispatch per request, answered whole or as server-sent
// events), GET /v1/models and /v1/usage, hands a WebSocket upgrade of / or /ws to a WsSession, and answers anything else 404.
// The API is held to the same limits as WebSocket sessions: the connection's message rate, the
// principal's quotas, admission, the connection cap. Runs on its connection's strand; a quota
// question (QuotaStore) is answered on it later, while no read is pending, so requests are still
// handled one at a time in order.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(boost::asio::ip::tcp::socket&& socket, GatewayContext& context, ConnectionSlot slot,
              std::optional<AcceptRefusal> refusal);
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
  // GET of the web console's page or one of its files: ETag revalidation, a strict
  // Content-Security-Policy, no principal needed (the page holds no data; its WebSocket
  // authenticates like any client's).
  void ServeConsoleAsset(const ConsoleAsset& asset);
  // Respond's second half, once the x-ratelimit-* values are known.
  void WriteResponse(boost::beast::http::status status, std::string body,
                     std::string_view retry_after, bool bearer_challenge,
                     std::string_view content_type);
  // OpenAI's x-ratelimit-* fields for principal_ from rate_headers_ (none without a principal or
  // rate limits).
  std::vector<std::pair<std::string, std::string>> RateLimitHeaderFields();
  void OnWrite(bool keep_alive, boost::beast::error_code ec, size_t bytes);
  // Reads the next request once no read is pending.
  void ResumeReading(bool keep_alive);
  // Reads and drops what the client still sends, for a bounded time, after the answer.
  void Discard(boost::beast::error_code ec, size_t bytes);

  // Draining, origin, auth and the connection's rate for /v1/*: false when it answered the
  // request itself. Sets principal_.
  bool AdmitApiRequest();
  // GET /v1/models: Router.ListModels as an OpenAI list.
  void ListModels();
  // GET /v1/usage[?principal=P]: the usage answer of PROTOCOL.md §2 (P: admins only).
  void Usage();
  // The WebSocket upgrade of / or /ws.
  void Upgrade();
  // Sends the chat held for admission, or dispatched at once, to the router.
  void DispatchChat();
  void OnAdmissionSlot(uint64_t seq, const std::string& key, bool granted);
  // The quota, admission and in-flight counts of the chat in flight end.
  void ReleaseChat(bool answered);
  // POST /v1/chat/completions: checks the request, then asks the principal's quotas.
  void StartChatCompletion();
  // The quotas answered: refused (429), or the chat goes to admission and the router.
  void OnChatQuota(ChatCompletionRequest req, QuotaDecision decision);
  void OnChatEvent(uint64_t seq, anima::v1::Event event);
  void OnChatDone(uint64_t seq, const grpc::Status& status);
  void FailChat(const OpenAiError& error, bool answered);
  // `answered`: the router answered (an admission sample).
  void EndChat(bool answered);
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
    std::shared_ptr<const Principal> principal;  // whose quotas count it
    QuotaTicket ticket;                          // its admission by those quotas
    // Admission (gateway/admission.h), as for WebSocket requests.
    std::optional<anima::v1::Envelope> held;
    std::string admission_key;
    bool admitted = false;
    std::chrono::steady_clock::time_point dispatched;
  };

  GatewayContext& context_;
  ConnectionSlot slot_;  // moved to the WsSession on an upgrade
  std::optional<AcceptRefusal> refusal_;
  boost::beast::tcp_stream stream_;
  const std::string client_address_;
  const std::string session_id_;  // "h-…", sent as the envelope's session_id
  TokenBucket rate_;              // messages_per_second, as a WebSocket session's
  // The principal of the API request being answered; its x-ratelimit-* headers go on the answer,
  // with the values of rate_headers_: from the request's admission, else asked for (Respond).
  std::shared_ptr<const Principal> principal_;
  std::optional<RateLimitHeaders> rate_headers_;
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
  bool force_close_ = false;    // the request was not read whole: close after answering
  int64_t retry_after_ms_ = 0;  // for the next Respond: retry-after-ms
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
