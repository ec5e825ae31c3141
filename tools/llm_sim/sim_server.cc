#include "tools/llm_sim/sim_server.h"

#include <chrono>
#include <ctime>
#include <optional>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "spdlog/spdlog.h"
#include "tools/llm_sim/openai_api.h"

namespace anima::sim {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using std::chrono::milliseconds;

namespace {

struct ServerState {
  SimServerOptions options;
  std::vector<std::unique_ptr<ProviderApi>> apis;
  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Counter* cancelled = nullptr;
  prometheus::Gauge* active_streams = nullptr;
};

std::string HttpDate() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

ResponsePlan PlainPlan(int status, std::string route, std::string body) {
  ResponsePlan plan;
  plan.status = status;
  plan.route = std::move(route);
  plan.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
  plan.writes.push_back({milliseconds(0), std::move(body)});
  return plan;
}

ResponsePlan JsonErrorPlan(int status, const std::string& message, const std::string& code) {
  ResponsePlan plan;
  plan.status = status;
  plan.route = "invalid";
  plan.close_connection = true;
  plan.headers.emplace_back("Content-Type", "application/json");
  plan.writes.push_back(
      {milliseconds(0),
       openai::ErrorBody({status, message, "invalid_request_error", std::nullopt, code})});
  return plan;
}

// Turns a plan into the exact socket writes: the head (merged with the first body write when
// that has no delay of its own; so are later writes unless the plan wants exact writes), chunk
// framing, and the terminator or the truncation.
std::vector<BodyWrite> WireWrites(const ResponsePlan& plan, bool announce_close) {
  size_t content_length = 0;
  for (const auto& w : plan.writes) content_length += w.bytes.size();
  std::string head =
      absl::StrFormat("HTTP/1.1 %d %s\r\n", plan.status,
                      std::string(http::obsolete_reason(static_cast<http::status>(plan.status))));
  absl::StrAppend(&head, "Date: ", HttpDate(), "\r\n");
  for (const auto& [name, value] : plan.headers) absl::StrAppend(&head, name, ": ", value, "\r\n");
  if (plan.chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  } else {
    absl::StrAppend(&head, "Content-Length: ", content_length, "\r\n");
  }
  if (announce_close) head += "Connection: close\r\n";
  head += "\r\n";

  std::vector<BodyWrite> wire;
  wire.push_back({plan.head_delay, std::move(head)});
  for (size_t i = 0; i < plan.writes.size(); ++i) {
    const BodyWrite& w = plan.writes[i];
    bool truncate = plan.ending == Ending::kTruncate && i + 1 == plan.writes.size();
    std::string sent = truncate ? w.bytes.substr(0, w.bytes.size() / 2) : w.bytes;
    std::string bytes;
    if (plan.chunked) {
      if (w.bytes.empty()) continue;  // an empty chunk would end the body
      bytes = absl::StrFormat("%x\r\n", w.bytes.size()) + sent + (truncate ? "" : "\r\n");
    } else {
      bytes = std::move(sent);
    }
    if ((i == 0 || !plan.exact_writes) && w.delay.count() == 0) {
      wire.back().bytes += bytes;
    } else {
      wire.push_back({w.delay, std::move(bytes)});
    }
  }
  if (plan.chunked && plan.ending != Ending::kTruncate) wire.back().bytes += "0\r\n\r\n";
  return wire;
}

// One connection. Lives while an operation is pending (handlers hold a shared_ptr); all handlers
// run on the connection's strand. States: reading a request -> responding (a timed sequence of
// writes, with a "watch" read armed when the plan has delays, so a client that goes away during
// a delay is noticed at once) -> next request, or a graceful close.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<const ServerState> state)
      : socket_(std::move(socket)),
        state_(std::move(state)),
        timer_(socket_.get_executor()),
        idle_timer_(socket_.get_executor()) {}

  ~Session() { EndStream(); }

  void Start() {
    net::dispatch(socket_.get_executor(),
                  beast::bind_front_handler(&Session::ReadRequest, shared_from_this()));
  }

 private:
  void ReadRequest() {
    if (closed_) return;
    parser_.emplace();
    parser_->header_limit(64 * 1024);
    parser_->body_limit(state_->options.max_body_bytes);
    ArmIdleTimer();
    http::async_read_header(socket_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHeader, shared_from_this()));
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (ec) return OnRead(ec, 0);
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue")) {
      continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(socket_, net::buffer(continue_),
                       [self = shared_from_this()](beast::error_code ec, size_t) {
                         if (ec) return self->CloseHard();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    http::async_read(socket_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void OnRead(beast::error_code ec, size_t) {
    ++idle_generation_;
    idle_timer_.cancel();
    if (closed_ || ec == net::error::operation_aborted) return;
    if (ec == http::error::body_limit) {
      return Respond(JsonErrorPlan(413,
                                   absl::StrCat("Request body too large: the limit is ",
                                                state_->options.max_body_bytes, " bytes."),
                                   "request_too_large"));
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof) return CloseHard();
    if (ec) {
      if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
        return Respond(JsonErrorPlan(400, absl::StrCat("Malformed HTTP request: ", ec.message()),
                                     "bad_http_request"));
      }
      return CloseHard();
    }
    auto& message = parser_->get();
    SimRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    for (const auto& field : message) {
      request.headers[absl::AsciiStrToLower(std::string(field.name_string()))] =
          std::string(field.value());
    }
    request.body = std::move(message.body());
    keep_alive_ = message.keep_alive();
    spdlog::debug("{} {} scenario='{}'", request.method, request.target,
                  request.Header("x-sim-scenario"));
    Respond(Dispatch(request));
  }

  ResponsePlan Dispatch(const SimRequest& request) {
    std::string_view path = request.target;
    path = path.substr(0, path.find('?'));
    if (path == "/healthz" && request.method == "GET") {
      return PlainPlan(200, "healthz", "ok\n");
    }
    for (const auto& api : state_->apis) {
      if (auto plan = api->Handle(request)) return *std::move(plan);
    }
    return OpenAiApi::InvalidUrl(request);
  }

  void Respond(ResponsePlan plan) {
    state_->requests
        ->Add({{"route", plan.route},
               {"scenario", plan.scenario},
               {"status", absl::StrCat(plan.status)}})
        .Increment();
    bool announce_close = !keep_alive_ || plan.close_connection;
    close_after_ = announce_close || plan.close_silently || plan.ending != Ending::kComplete;
    wire_ = WireWrites(plan, announce_close);
    next_ = 0;
    responding_ = true;
    if (plan.chunked) {
      streaming_ = true;
      state_->active_streams->Increment();
    }
    bool delayed = false;
    for (const auto& w : wire_) delayed = delayed || w.delay.count() > 0;
    if (delayed && !watching_) StartWatch();
    WriteNext(/*waited=*/false);
  }

  void WriteNext(bool waited) {
    if (closed_) return;
    if (next_ == wire_.size()) return FinishResponse();
    const BodyWrite& w = wire_[next_];
    if (!waited && w.delay.count() > 0) {
      timer_.expires_after(w.delay);
      timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
        if (ec || self->closed_) return;
        self->WriteNext(/*waited=*/true);
      });
      return;
    }
    net::async_write(socket_, net::buffer(w.bytes),
                     beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, size_t) {
    if (closed_) return;
    if (ec) {
      if (streaming_) state_->cancelled->Increment();
      return CloseHard();
    }
    ++next_;
    WriteNext(/*waited=*/false);
  }

  void FinishResponse() {
    responding_ = false;
    EndStream();
    wire_.clear();
    if (close_after_) return GracefulClose();
    if (watching_) {
      ArmIdleTimer();  // the pending watch read now waits for the next request
      return;
    }
    ReadRequest();
  }

  void StartWatch() {
    watching_ = true;
    socket_.async_read_some(buffer_.prepare(4096),
                            beast::bind_front_handler(&Session::OnWatch, shared_from_this()));
  }

  void OnWatch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (closed_) return;
    if (closing_) return ec ? CloseHard() : Drain();
    if (ec) {
      if (streaming_) state_->cancelled->Increment();
      return CloseHard();
    }
    buffer_.commit(n);  // the start of the next request; the parser will find it here
    if (!responding_) {
      ++idle_generation_;
      idle_timer_.cancel();
      ReadRequest();
    }
  }

  void ArmIdleTimer() {
    int seconds = state_->options.idle_close_seconds;
    if (seconds <= 0) return;
    uint64_t generation = ++idle_generation_;
    idle_timer_.expires_after(std::chrono::seconds(seconds));
    idle_timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
      if (ec || generation != self->idle_generation_) return;
      self->CloseHard();
    });
  }

  // Half-closes and reads until the client closes too (or 2 s pass), so that unread request
  // bytes do not turn the close into a reset that could destroy the response in flight.
  void GracefulClose() {
    closing_ = true;
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    uint64_t generation = ++idle_generation_;
    idle_timer_.expires_after(std::chrono::seconds(2));
    idle_timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
      if (ec || generation != self->idle_generation_) return;
      self->CloseHard();
    });
    if (!watching_) Drain();
  }

  void Drain() {
    watching_ = true;
    socket_.async_read_some(net::buffer(drain_),
                            beast::bind_front_handler(&Session::OnWatch, shared_from_this()));
  }

  void CloseHard() {
    if (closed_) return;
    closed_ = true;
    EndStream();
    timer_.cancel();
    idle_timer_.cancel();
    beast::error_code ignored;
    socket_.close(ignored);
  }

  void EndStream() {
    if (!streaming_) return;
    streaming_ = false;
    state_->active_streams->Decrement();
  }

  tcp::socket socket_;
  std::shared_ptr<const ServerState> state_;
  net::steady_timer timer_;       // delays between writes
  net::steady_timer idle_timer_;  // idle keep-alive close, and the graceful-close deadline
  uint64_t idle_generation_ = 0;  // ignores an idle expiry that raced with a re-arm
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string continue_;
  char drain_[1024];
  std::vector<BodyWrite> wire_;
  size_t next_ = 0;
  bool keep_alive_ = true;
  bool close_after_ = false;
  bool responding_ = false;
  bool streaming_ = false;
  bool watching_ = false;
  bool closing_ = false;
  bool closed_ = false;
};

}  // namespace

struct SimServer::Impl {
  explicit Impl(int threads) : ioc(threads), acceptor(ioc), retry_timer(ioc) {}

  void Accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
      if (ec == net::error::operation_aborted) return;
      if (ec) {
        // Out of descriptors or similar: wait a little instead of spinning.
        spdlog::warn("accept failed: {}", ec.message());
        retry_timer.expires_after(milliseconds(50));
        retry_timer.async_wait([this](beast::error_code ec) {
          if (!ec) Accept();
        });
        return;
      }
      beast::error_code ignored;
      s.set_option(tcp::no_delay(true), ignored);
      std::make_shared<Session>(std::move(s), state)->Start();
      Accept();
    });
  }

  net::io_context ioc;
  tcp::acceptor acceptor;
  net::steady_timer retry_timer;
  std::shared_ptr<ServerState> state;
};

SimServer::SimServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SimServer::~SimServer() { Stop(); }

absl::StatusOr<std::unique_ptr<SimServer>> SimServer::Start(
    const SimServerOptions& options, std::vector<std::unique_ptr<ProviderApi>> apis,
    std::shared_ptr<prometheus::Registry> registry) {
  int threads = std::max(1, options.threads);
  auto impl = std::make_unique<Impl>(threads);
  auto state = std::make_shared<ServerState>();
  state->options = options;
  state->apis = std::move(apis);
  state->registry = registry;
  state->requests = &prometheus::BuildCounter()
                         .Name("anima_sim_requests_total")
                         .Help("Requests answered by the simulator, by route, scenario and status.")
                         .Register(*registry);
  state->cancelled = &prometheus::BuildCounter()
                          .Name("anima_sim_streams_cancelled_total")
                          .Help("Streams the client closed before their end.")
                          .Register(*registry)
                          .Add({});
  state->active_streams = &prometheus::BuildGauge()
                               .Name("anima_sim_active_streams")
                               .Help("Streaming responses in progress.")
                               .Register(*registry)
                               .Add({});
  impl->state = state;

  beast::error_code ec;
  auto address = net::ip::make_address(options.bind, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--bind: bad address '", options.bind, "'"));
  tcp::endpoint endpoint(address, static_cast<unsigned short>(options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.bind, ":", options.port, ": ", ec.message()));
  }
  int port = impl->acceptor.local_endpoint().port();
  impl->Accept();

  std::unique_ptr<SimServer> server(new SimServer(std::move(impl)));
  server->port_ = port;
  for (int i = 0; i < threads; ++i) {
    server->threads_.emplace_back([ioc = &server->impl_->ioc] { ioc->run(); });
  }
  return server;
}

void SimServer::Stop() {
  if (!impl_) return;
  impl_->ioc.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Destroying the io_context destroys every pending handler, and with them the sessions and
  // their sockets.
  impl_.reset();
}

}  // namespace anima::sim
