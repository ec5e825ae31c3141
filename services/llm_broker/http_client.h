#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "services/llm_broker/http_transport.h"
#include "services/llm_broker/strategy.h"

namespace anima::broker {

struct HttpClientOptions {
  // PEM file of trusted CAs; empty: the system's default verify paths (the CA bundle).
  std::string ca_file;
  size_t max_idle_per_origin = 32;
  // Pooled connections idle for longer are not reused (servers and load balancers close them).
  std::chrono::milliseconds idle_timeout{30000};
  int threads = 2;
  // Called (on a client thread) for every new connection, with its origin (scheme://host:port).
  std::function<void(const std::string& origin)> on_connection_opened;
  // An http:// proxy for https origins (HTTPS_PROXY): the connection is a CONNECT tunnel
  // through it, and TLS (SNI, verification) is end to end with the origin. Empty: direct.
  // Plain-http origins never use it. User info in the URL (http://user:pass@host:port,
  // percent-encoded as curl takes it) is sent as Proxy-Authorization: Basic on every CONNECT.
  std::string https_proxy;
  // NO_PROXY: comma-separated hosts that bypass the proxy. "example.com" and ".example.com" match
  // the host and its subdomains, "*" matches every host; ports are ignored.
  std::string no_proxy;
};

// Whether `host` is exempt from the proxy by a NO_PROXY list (see HttpClientOptions::no_proxy).
bool NoProxyMatches(std::string_view host, std::string_view no_proxy);

// A proxy URL's user info split off: `url` without it, and the percent-decoded credentials.
struct ProxyCredentials {
  std::string url;
  std::optional<std::string> user_password;  // "user:password", for Basic authentication
};
absl::StatusOr<ProxyCredentials> SplitProxyCredentials(std::string_view url);
// `url` with any user info replaced by "***@", for logs and error messages.
std::string RedactUserInfo(std::string_view url);

// HTTP/1.1 over Boost.Beast and OpenSSL: https with certificate and hostname verification and SNI
// (the bare host name), plain http, a keep-alive pool per origin, one transparent retry on a
// fresh connection when a reused one fails before any response byte, incremental body delivery
// (chunked, Content-Length or read-until-close), connect / first-byte / total timeouts, and
// cancellation by closing the socket, and an optional CONNECT proxy for https origins. A connection
// returns to the pool only when its response was read to the end and both sides allow keep-alive.
// Sends Accept-Encoding: identity unless the request sets it.
//
// Owns an io_context and `threads` threads. Thread-safe. Destroy it only after every exchange has
// completed or been abandoned (its destructor stops the threads; pending callbacks are dropped).
class HttpClient : public HttpTransport {
 public:
  static absl::StatusOr<std::shared_ptr<HttpClient>> Create(HttpClientOptions options);
  ~HttpClient() override;

  std::shared_ptr<HttpExchange> Send(HttpRequest request, HttpHandler handler) override;

  // Timers on this client's threads, for strategies.
  std::shared_ptr<Scheduler> scheduler();

  int64_t connections_opened() const;
  int64_t stale_retries() const;

  struct Impl;

 private:
  explicit HttpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The parts of an http(s) URL. `port` is explicit or the scheme's default; `origin` is
// scheme://host:port; `target` starts with '/'.
struct ParsedUrl {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;
  std::string origin;
};
absl::StatusOr<ParsedUrl> ParseUrl(std::string_view url);

}  // namespace anima::broker
