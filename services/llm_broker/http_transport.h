#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace anima::broker {

struct HttpRequest {
  std::string method = "POST";
  std::string url;  // http://host[:port]/path or https://host[:port]/path
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds connect_timeout{5000};
  // From the end of sending the request to the response headers.
  std::chrono::milliseconds first_byte_timeout{30000};
  // Longest wait for the next piece of the body once the headers arrived (0: no limit): a stream
  // that goes silent fails instead of hanging until the deadline.
  std::chrono::milliseconds idle_timeout{0};
  // Absolute end of the whole exchange, body included.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct HttpResponseHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  // The value of the first header named `name` (case-insensitive), if present.
  std::optional<std::string> Header(std::string_view name) const;
};

// The callbacks of one exchange. They are never concurrent and come from the transport's threads.
//  - on_head: once, when the status line and headers arrived;
//  - on_body: zero or more pieces of the (de-chunked) body as they arrive;
//  - on_complete: exactly once, last. OK means the body was read to its end. Errors: CANCELLED
//    (Cancel()), DEADLINE_EXCEEDED (message "connect timeout", "first byte timeout",
//    "idle timeout" or "deadline"), UNAVAILABLE (resolve, connect, TLS, reset, truncated body),
//    INVALID_ARGUMENT (a bad URL). The message says which.
struct HttpHandler {
  std::function<void(const HttpResponseHead& head)> on_head;
  std::function<void(std::string_view bytes)> on_body;
  std::function<void(absl::Status status)> on_complete;
};

class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  // Thread-safe and idempotent: closes the connection; on_complete follows with CANCELLED unless
  // the exchange had already completed.
  virtual void Cancel() = 0;
};

// The narrow seam between providers and HTTP. HttpClient is the real one (Beast over OpenSSL);
// tests hand providers a fake.
class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual std::shared_ptr<HttpExchange> Send(HttpRequest request, HttpHandler handler) = 0;
};

}  // namespace anima::broker
