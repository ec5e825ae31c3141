#include "services/llm_broker/http_client.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::broker {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

absl::StatusOr<ParsedUrl> ParseUrl(std::string_view url_in) {
  // absl::string_view is not std::string_view in this Abseil build.
  absl::string_view url(url_in.data(), url_in.size());
  ParsedUrl out;
  absl::string_view rest;
  if (absl::StartsWithIgnoreCase(url, "https://")) {
    out.tls = true;
    rest = url.substr(8);
  } else if (absl::StartsWithIgnoreCase(url, "http://")) {
    rest = url.substr(7);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("not an http(s) URL: ", url));
  }
  size_t slash = rest.find('/');
  absl::string_view authority = rest.substr(0, slash);
  out.target = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (authority.find('@') != absl::string_view::npos) {
    return absl::InvalidArgumentError("URLs with user info are not supported");
  }
  absl::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == absl::string_view::npos) return absl::InvalidArgumentError("bad IPv6 host");
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size() && authority[close + 1] == ':') {
      port = authority.substr(close + 2);
    }
  } else {
    size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return absl::InvalidArgumentError(absl::StrCat("no host in URL: ", url));
  int port_number = 0;
  if (port.empty()) {
    out.port = out.tls ? "443" : "80";
  } else if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in URL: ", url));
  } else {
    out.port = std::string(port);
  }
  out.origin = absl::StrCat(out.tls ? "https://" : "http://", out.host, ":", out.port);
  return out;
}

namespace {
// %XX escapes decoded; a malformed escape is an error.
absl::StatusOr<std::string> PercentDecode(absl::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    int value = 0;
    if (i + 2 >= in.size() || !absl::ascii_isxdigit(in[i + 1]) ||
        !absl::ascii_isxdigit(in[i + 2])) {
      return absl::InvalidArgumentError("bad percent-encoding in the proxy's user info");
    }
    for (char c : in.substr(i + 1, 2)) {
      value = value * 16 + (absl::ascii_isdigit(c) ? c - '0' : absl::ascii_tolower(c) - 'a' + 10);
    }
    out.push_back(static_cast<char>(value));
    i += 2;
  }
  return out;
}

// Where the user info of `url` is: [begin, end) of "user:pass@", or npos when there is none.
std::pair<size_t, size_t> UserInfoSpan(absl::string_view url) {
  size_t scheme = url.find("://");
  if (scheme == absl::string_view::npos) return {absl::string_view::npos, 0};
  size_t begin = scheme + 3;
  size_t authority_end = url.find('/', begin);
  size_t at = url.substr(0, authority_end).rfind('@');
  if (at == absl::string_view::npos || at < begin) return {absl::string_view::npos, 0};
  return {begin, at + 1};
}
}  // namespace

absl::StatusOr<ProxyCredentials> SplitProxyCredentials(std::string_view url_in) {
  absl::string_view url(url_in.data(), url_in.size());
  ProxyCredentials out;
  auto [begin, end] = UserInfoSpan(url);
  if (begin == absl::string_view::npos) {
    out.url = std::string(url);
    return out;
  }
  absl::string_view info = url.substr(begin, end - 1 - begin);
  size_t colon = info.find(':');
  auto user = PercentDecode(info.substr(0, colon));
  if (!user.ok()) return user.status();
  std::string password;
  if (colon != absl::string_view::npos) {
    auto decoded = PercentDecode(info.substr(colon + 1));
    if (!decoded.ok()) return decoded.status();
    password = *std::move(decoded);
  }
  out.user_password = absl::StrCat(*user, ":", password);
  out.url = absl::StrCat(url.substr(0, begin), url.substr(end));
  return out;
}

std::string RedactUserInfo(std::string_view url_in) {
  absl::string_view url(url_in.data(), url_in.size());
  auto [begin, end] = UserInfoSpan(url);
  if (begin == absl::string_view::npos) return std::string(url);
  return absl::StrCat(url.substr(0, begin), "***@", url.substr(end));
}

bool NoProxyMatches(std::string_view host_in, std::string_view no_proxy) {
  std::string host = absl::AsciiStrToLower(absl::string_view(host_in.data(), host_in.size()));
  for (absl::string_view entry :
       absl::StrSplit(absl::string_view(no_proxy.data(), no_proxy.size()), ',')) {
    std::string e = absl::AsciiStrToLower(absl::StripAsciiWhitespace(entry));
    if (e.empty()) continue;
    if (e == "*") return true;
    if (size_t colon = e.rfind(':');
        colon != std::string::npos && e.find(']') == std::string::npos && e.find(':') == colon) {
      e = e.substr(0, colon);  // host:port: the port is ignored
    }
    if (!e.empty() && e[0] == '.') e = e.substr(1);
    if (host == e || (host.size() > e.size() && absl::EndsWith(host, "." + e))) return true;
  }
  return false;
}

namespace {

using Strand = asio::strand<asio::io_context::executor_type>;

bool IsIpAddress(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// One TCP (or TLS) connection. Every operation on it runs on its strand.
struct Connection {
  Connection(asio::io_context& ioc, std::string origin_in)
      : strand(asio::make_strand(ioc)), resolver(strand), origin(std::move(origin_in)) {}

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  // Calls f with the stream to read and write: the TLS stream or the plain one.
  template <class F>
  void Visit(F&& f) {
    if (tls) {
      f(*tls);
    } else {
      f(*plain);
    }
  }
  void Close() {
    beast::error_code ec;
    resolver.cancel();
    if (tls || plain) lowest().socket().close(ec);
  }

  Strand strand;
  tcp::resolver resolver;
  std::string origin;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  bool connected = false;
  Clock::time_point idle_since;
};

}  // namespace

struct HttpClient::Impl {
  explicit Impl(HttpClientOptions o)
      : options(std::move(o)),
        ssl_ctx(ssl::context::tls_client),
        work(asio::make_work_guard(ioc)) {}

  std::shared_ptr<Connection> Acquire(const ParsedUrl& url, bool* reused) {
    std::lock_guard lock(pool_mu);
    auto& idle = pool[url.origin];
    auto now = Clock::now();
    while (!idle.empty()) {
      auto conn = std::move(idle.back());
      idle.pop_back();
      if (now - conn->idle_since < options.idle_timeout) {
        *reused = true;
        return conn;
      }
      asio::post(conn->strand, [conn] { conn->Close(); });
    }
    *reused = false;
    return std::make_shared<Connection>(ioc, url.origin);
  }

  void Release(std::shared_ptr<Connection> conn) {
    conn->idle_since = Clock::now();
    std::lock_guard lock(pool_mu);
    auto& idle = pool[conn->origin];
    if (idle.size() >= options.max_idle_per_origin) {
      conn->Close();
      return;
    }
    idle.push_back(std::move(conn));
  }

  HttpClientOptions options;
  asio::io_context ioc;
  ssl::context ssl_ctx;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> threads;
  std::mutex pool_mu;
  std::map<std::string, std::vector<std::shared_ptr<Connection>>> pool;
  std::atomic<int64_t> opened{0};
  std::atomic<int64_t> stale_retries{0};
  std::optional<ParsedUrl> proxy;   // from options.https_proxy
  std::string proxy_authorization;  // "Basic ..." when the proxy URL carried user info
};

namespace {

// One request/response. Steps run on the current connection's strand, one at a time; only
// Cancel() comes from other threads (it posts onto the strand).
class Exchange : public HttpExchange, public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(HttpClient::Impl& client, ParsedUrl url, HttpRequest request, HttpHandler handler)
      : client_(client),
        url_(std::move(url)),
        request_(std::move(request)),
        handler_(std::move(handler)) {
    http::verb verb = http::string_to_verb(request_.method);
    message_.method(verb == http::verb::unknown ? http::verb::post : verb);
    message_.target(url_.target);
    message_.version(11);
    bool default_port = url_.port == (url_.tls ? "443" : "80");
    std::string host = url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;
    message_.set(http::field::host, default_port ? host : absl::StrCat(host, ":", url_.port));
    message_.set(http::field::user_agent, "anima-llm-broker/" ANIMA_VERSION);
    bool has_encoding = false;
    for (const auto& [name, value] : request_.headers) {
      if (absl::EqualsIgnoreCase(name, "accept-encoding")) has_encoding = true;
      message_.set(name, value);
    }
    if (!has_encoding) message_.set(http::field::accept_encoding, "identity");
    message_.keep_alive(true);
    message_.body() = std::move(request_.body);
    message_.prepare_payload();
  }

  void Begin(std::shared_ptr<Connection> conn, bool reused) {
    {
      std::lock_guard lock(mu_);
      conn_ = conn;
    }
    reused_ = reused;
    asio::post(conn->strand, [self = shared_from_this()] { self->Step(); });
  }

  void Cancel() override {
    if (cancelled_.exchange(true)) return;
    PostCancel();
  }

 private:
  // Closes the current connection on its strand. After a stale retry switched connections the
  // close is re-posted to the new connection's strand.
  void PostCancel() {
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(mu_);
      conn = conn_;
    }
    if (conn == nullptr || done_) return;
    asio::post(conn->strand, [self = shared_from_this(), conn] {
      // Once complete, the connection may be back in the pool serving another exchange.
      if (self->done_) return;
      bool current;
      {
        std::lock_guard lock(self->mu_);
        current = self->conn_ == conn;
      }
      if (!current) return self->PostCancel();
      conn->Close();
      self->Fail(absl::CancelledError("cancelled"));
    });
  }

  Connection& conn() { return *conn_; }

  void Step() {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (conn().connected) return Write();
    auto deadline = std::min(request_.deadline, Clock::now() + request_.connect_timeout);
    phase_deadline_ = deadline;
    phase_ = "connect timeout";
    tunnelled_ = false;
    proxied_ = url_.tls && client_.proxy.has_value() &&
               !NoProxyMatches(url_.host, client_.options.no_proxy);
    const ParsedUrl& to = proxied_ ? *client_.proxy : url_;
    conn().resolver.async_resolve(
        to.host, to.port, beast::bind_front_handler(&Exchange::OnResolve, shared_from_this()));
  }

  void OnResolve(beast::error_code ec, tcp::resolver::results_type results) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) {
      return Fail(absl::UnavailableError(absl::StrCat(
          "resolve ", proxied_ ? client_.proxy->host : url_.host, ": ", ec.message())));
    }
    Connection& c = conn();
    if (url_.tls) {
      c.tls.emplace(c.strand, client_.ssl_ctx);
      SSL* ssl = c.tls->native_handle();
      if (IsIpAddress(url_.host)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), url_.host.c_str());
      } else {
        // SNI with the bare host name (no port), and the name the certificate must match.
        SSL_set_tlsext_host_name(ssl, url_.host.c_str());
        SSL_set1_host(ssl, url_.host.c_str());
      }
      c.tls->set_verify_mode(ssl::verify_peer);
    } else {
      c.plain.emplace(c.strand);
    }
    ExpireAt(phase_deadline_);
    c.lowest().async_connect(results,
                             beast::bind_front_handler(&Exchange::OnConnect, shared_from_this()));
  }

  void OnConnect(beast::error_code ec, const tcp::endpoint&) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) {
      return Fail(TransportError(
          "connect to " + (proxied_ ? "proxy " + client_.proxy->origin : url_.origin), ec));
    }
    client_.opened.fetch_add(1);
    if (client_.options.on_connection_opened) client_.options.on_connection_opened(url_.origin);
    beast::error_code ignored;
    conn().lowest().socket().set_option(tcp::no_delay(true), ignored);
    if (!url_.tls) {
      conn().connected = true;
      return Write();
    }
    if (proxied_) return OpenTunnel();
    ExpireAt(phase_deadline_);
    conn().tls->async_handshake(
        ssl::stream_base::client,
        beast::bind_front_handler(&Exchange::OnHandshake, shared_from_this()));
  }

  // CONNECT host:port through the proxy; TLS with the origin starts once it answers 2xx.
  void OpenTunnel() {
    std::string authority =
        absl::StrCat(url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host,
                     ":", url_.port);
    connect_request_ = absl::StrCat("CONNECT ", authority, " HTTP/1.1\r\nHost: ", authority,
                                    "\r\nUser-Agent: anima-llm-broker/" ANIMA_VERSION "\r\n");
    if (!client_.proxy_authorization.empty()) {
      absl::StrAppend(&connect_request_, "Proxy-Authorization: ", client_.proxy_authorization,
                      "\r\n");
    }
    connect_request_ += "\r\n";
    ExpireAt(phase_deadline_);
    asio::async_write(conn().lowest(), asio::buffer(connect_request_),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (self->cancelled_) return self->Fail(absl::CancelledError("cancelled"));
                        if (ec) return self->Fail(self->TransportError("CONNECT to the proxy", ec));
                        self->connect_parser_.emplace();
                        self->connect_parser_->skip(true);  // a CONNECT answer has no body
                        http::async_read_header(
                            self->conn().lowest(), self->connect_buffer_, *self->connect_parser_,
                            beast::bind_front_handler(&Exchange::OnTunnel, self));
                      });
  }

  void OnTunnel(beast::error_code ec, size_t) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) return Fail(TransportError("CONNECT to the proxy", ec));
    unsigned status = connect_parser_->get().result_int();
    if (status == 407) {
      return Fail(absl::UnavailableError(absl::StrCat(
          "proxy ", client_.proxy->origin, " wants authentication (HTTP 407): ",
          client_.proxy_authorization.empty() ? "give user:password in HTTPS_PROXY"
                                              : "it refused the user:password of HTTPS_PROXY")));
    }
    if (status < 200 || status > 299) {
      return Fail(absl::UnavailableError(absl::StrCat("proxy ", client_.proxy->origin,
                                                      " refused CONNECT to ", url_.host, ":",
                                                      url_.port, " with HTTP ", status)));
    }
    tunnelled_ = true;
    ExpireAt(phase_deadline_);
    conn().tls->async_handshake(
        ssl::stream_base::client,
        beast::bind_front_handler(&Exchange::OnHandshake, shared_from_this()));
  }

  void OnHandshake(beast::error_code ec) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) return Fail(TransportError("TLS handshake with " + url_.host, ec));
    conn().connected = true;
    Write();
  }

  void Write() {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    phase_deadline_ = request_.deadline;
    phase_ = "deadline";
    ExpireAt(phase_deadline_);
    conn().Visit([&](auto& stream) {
      http::async_write(stream, message_,
                        beast::bind_front_handler(&Exchange::OnWrite, shared_from_this()));
    });
  }

  void OnWrite(beast::error_code ec, size_t) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) {
      if (reused_ && !retried_ && ec != beast::error::timeout) return RetryFresh();
      return Fail(TransportError("send to " + url_.origin, ec));
    }
    parser_.emplace();
    // Not boost::none: Boost 1.74 compares Content-Length against the optional and fails.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    auto first_byte = Clock::now() + request_.first_byte_timeout;
    if (first_byte < request_.deadline) {
      phase_deadline_ = first_byte;
      phase_ = "first byte timeout";
    }
    ExpireAt(phase_deadline_);
    conn().Visit([&](auto& stream) {
      http::async_read_header(stream, conn().buffer, *parser_,
                              beast::bind_front_handler(&Exchange::OnHeader, shared_from_this()));
    });
  }

  void OnHeader(beast::error_code ec, size_t) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec) {
      // A reused connection that the server had closed fails before any byte: nothing was
      // processed, so the request goes once more on a fresh connection.
      if (reused_ && !retried_ && !parser_->got_some() && ec != beast::error::timeout) {
        return RetryFresh();
      }
      return Fail(TransportError("read response from " + url_.origin, ec));
    }
    HttpResponseHead head;
    const auto& msg = parser_->get();
    head.status = static_cast<int>(msg.result_int());
    for (const auto& field : msg) {
      head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    got_head_ = true;
    if (handler_.on_head) handler_.on_head(head);
    phase_deadline_ = request_.deadline;
    phase_ = "deadline";
    ReadBody();
  }

  void ReadBody() {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (parser_->is_done()) return Complete();
    auto& body = parser_->get().body();
    body.data = read_buffer_.data();
    body.size = read_buffer_.size();
    phase_deadline_ = request_.deadline;
    phase_ = "deadline";
    if (request_.idle_timeout.count() > 0) {
      auto idle_end = Clock::now() + request_.idle_timeout;
      if (idle_end < phase_deadline_) {
        phase_deadline_ = idle_end;
        phase_ = "idle timeout";
      }
    }
    ExpireAt(phase_deadline_);
    conn().Visit([&](auto& stream) {
      http::async_read_some(stream, conn().buffer, *parser_,
                            beast::bind_front_handler(&Exchange::OnBody, shared_from_this()));
    });
  }

  void OnBody(beast::error_code ec, size_t) {
    if (cancelled_) return Fail(absl::CancelledError("cancelled"));
    if (ec == http::error::need_buffer) ec = {};
    size_t got = read_buffer_.size() - parser_->get().body().size;
    if (got > 0 && handler_.on_body) handler_.on_body(std::string_view(read_buffer_.data(), got));
    if (ec) return Fail(TransportError("read body from " + url_.origin, ec));
    ReadBody();
  }

  void Complete() {
    if (done_.exchange(true)) return;
    conn().lowest().expires_never();
    if (parser_->keep_alive() && !cancelled_) {
      client_.Release(conn_);
    } else {
      conn().Close();
    }
    Report(absl::OkStatus());
  }

  void RetryFresh() {
    retried_ = true;
    client_.stale_retries.fetch_add(1);
    conn().Close();
    auto fresh = std::make_shared<Connection>(client_.ioc, url_.origin);
    {
      std::lock_guard lock(mu_);
      conn_ = fresh;
    }
    reused_ = false;
    asio::post(fresh->strand, [self = shared_from_this()] { self->Step(); });
  }

  absl::Status TransportError(const std::string& what, beast::error_code ec) {
    if (ec == beast::error::timeout) {
      return absl::DeadlineExceededError(absl::StrCat(phase_, " (", what, ")"));
    }
    if (ec.category() == asio::error::get_ssl_category() ||
        ec.category() == ssl::error::get_stream_category()) {
      return absl::UnavailableError(absl::StrCat(what, ": TLS error: ", ec.message()));
    }
    return absl::UnavailableError(absl::StrCat(what, ": ", ec.message()));
  }

  void Fail(absl::Status status) {
    if (done_.exchange(true)) return;
    if (conn_ != nullptr) conn().Close();
    Report(std::move(status));
  }

  // Calls on_complete, dropping the handler first: it usually holds its owner, which holds this
  // exchange, and that cycle must not outlive the exchange.
  void Report(absl::Status status) {
    HttpHandler handler = std::move(handler_);
    handler_ = HttpHandler();
    if (handler.on_complete) handler.on_complete(std::move(status));
  }

  void ExpireAt(Clock::time_point deadline) {
    if (deadline == Clock::time_point::max()) {
      conn().lowest().expires_never();
    } else {
      conn().lowest().expires_at(deadline);
    }
  }

  HttpClient::Impl& client_;
  bool proxied_ = false;  // this connection goes through the CONNECT proxy
  bool tunnelled_ = false;
  std::string connect_request_;
  beast::flat_buffer connect_buffer_;
  std::optional<http::response_parser<http::empty_body>> connect_parser_;
  ParsedUrl url_;
  HttpRequest request_;
  HttpHandler handler_;
  http::request<http::string_body> message_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> read_buffer_;

  std::mutex mu_;                     // guards conn_ for Cancel()
  std::shared_ptr<Connection> conn_;  // written under mu_, read on the strand
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> done_{false};  // on_complete was called
  // Strand-only state.
  bool reused_ = false;
  bool retried_ = false;
  bool got_head_ = false;
  Clock::time_point phase_deadline_ = Clock::time_point::max();
  std::string phase_ = "deadline";
};

class FailedExchange : public HttpExchange {
 public:
  void Cancel() override {}
};

class AsioScheduler : public Scheduler {
 public:
  explicit AsioScheduler(asio::io_context& ioc) : ioc_(ioc) {}
  void RunAfter(std::chrono::milliseconds delay, std::function<void()> fn) override {
    auto timer = std::make_shared<asio::steady_timer>(ioc_, delay);
    timer->async_wait([timer, fn = std::move(fn)](beast::error_code ec) {
      if (!ec) fn();
    });
  }

 private:
  asio::io_context& ioc_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<HttpClient>> HttpClient::Create(HttpClientOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  beast::error_code ec;
  if (impl->options.ca_file.empty()) {
    impl->ssl_ctx.set_default_verify_paths(ec);
    if (ec)
      return absl::FailedPreconditionError("cannot load the system CA bundle: " + ec.message());
  } else {
    impl->ssl_ctx.load_verify_file(impl->options.ca_file, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load CA file ", impl->options.ca_file, ": ", ec.message()));
    }
  }
  if (!impl->options.https_proxy.empty()) {
    // Never in a message: the URL may carry a password.
    std::string shown = RedactUserInfo(impl->options.https_proxy);
    auto split = SplitProxyCredentials(impl->options.https_proxy);
    if (!split.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("https proxy ", shown, ": ", split.status().message()));
    }
    auto proxy = ParseUrl(split->url);
    if (!proxy.ok() || proxy->tls) {
      return absl::InvalidArgumentError(
          absl::StrCat("https proxy ", shown, ": expected http://[user:password@]host:port",
                       proxy.ok() ? "" : absl::StrCat(" (", proxy.status().message(), ")")));
    }
    impl->proxy = *proxy;
    if (split->user_password) {
      impl->proxy_authorization = "Basic " + absl::Base64Escape(*split->user_password);
    }
  }
  impl->ssl_ctx.set_verify_mode(ssl::verify_peer);
  SSL_CTX_set_min_proto_version(impl->ssl_ctx.native_handle(), TLS1_2_VERSION);
  int threads = std::max(1, impl->options.threads);
  for (int i = 0; i < threads; ++i) {
    impl->threads.emplace_back([ioc = &impl->ioc] { ioc->run(); });
  }
  return std::shared_ptr<HttpClient>(new HttpClient(std::move(impl)));
}

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpClient::~HttpClient() {
  // The last owner may let go on one of the client's own threads (a finished call holding the
  // provider holding this client), which cannot join itself: then a helper thread stops and
  // joins them once the current handler returns, and frees the state after.
  Impl* impl = impl_.release();
  auto shutdown = [impl] {
    impl->work.reset();
    impl->ioc.stop();
    for (auto& t : impl->threads) t.join();
    {
      std::lock_guard lock(impl->pool_mu);
      impl->pool.clear();
    }
    delete impl;
  };
  bool on_own_thread = false;
  for (const auto& t : impl->threads) {
    if (t.get_id() == std::this_thread::get_id()) on_own_thread = true;
  }
  if (on_own_thread) {
    std::thread(shutdown).detach();
  } else {
    shutdown();
  }
}

std::shared_ptr<HttpExchange> HttpClient::Send(HttpRequest request, HttpHandler handler) {
  auto url = ParseUrl(request.url);
  if (!url.ok()) {
    asio::post(impl_->ioc, [handler = std::move(handler), status = url.status()] {
      if (handler.on_complete) handler.on_complete(status);
    });
    return std::make_shared<FailedExchange>();
  }
  bool reused = false;
  auto conn = impl_->Acquire(*url, &reused);
  auto exchange =
      std::make_shared<Exchange>(*impl_, *std::move(url), std::move(request), std::move(handler));
  exchange->Begin(std::move(conn), reused);
  return exchange;
}

std::shared_ptr<Scheduler> HttpClient::scheduler() {
  return std::make_shared<AsioScheduler>(impl_->ioc);
}

int64_t HttpClient::connections_opened() const { return impl_->opened.load(); }
int64_t HttpClient::stale_retries() const { return impl_->stale_retries.load(); }

}  // namespace anima::broker
