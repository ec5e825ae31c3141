#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "gateway/auth.h"
#include "gateway/token_bucket.h"

namespace anima::gateway {

// What the front doors know of a request before anything is dispatched.
struct AccessRequest {
  std::string_view origin = {};         // the Origin header ("" when absent: not a browser)
  std::string_view host = {};           // the Host header
  std::string_view authorization = {};  // the Authorization header
  std::string_view protocols = {};      // Sec-WebSocket-Protocol
  std::string_view target = {};         // the request target, for ?token= on upgrades
  bool websocket = false;
  std::string client_address = {};  // the peer's IP, for throttling failed auth
};

// The answer of the front door: a principal to act for, or the HTTP refusal.
struct AccessDecision {
  std::shared_ptr<const Principal> principal;  // null when refused
  std::optional<std::chrono::system_clock::time_point> expires;
  std::string key_hash;          // Authenticator::Grant::key_hash
  bool via_subprotocol = false;  // the token came as anima.bearer.<token>
  int http_status = 200;
  std::string message;
  std::chrono::milliseconds retry_after{0};
  // For metrics: "origin", "throttled", "missing", "invalid" (auth failures).
  std::string reason;
  bool ok() const { return principal != nullptr; }
};

// The one policy both front doors (WebSocket upgrades and the HTTP API) apply before a request
// costs anything: the browser Origin, then failed-auth throttling per client address, then the
// token. Plain logic: no sockets, an injected clock; thread-safe.
class AccessPolicy {
 public:
  struct Options {
    // Origins a browser page may connect from besides the gateway's own (Origin == the
    // http(s)://Host of the request). "*" allows any. Requests without Origin are not from
    // browsers and pass.
    std::vector<std::string> allowed_origins;
    // Failed authentications per client address: a burst of this many, refilled at
    // auth_failures_per_second; past it, requests are refused 429 without checking the token.
    int auth_failure_burst = 20;
    double auth_failures_per_second = 1.0;
    size_t max_tracked_addresses = 65536;
    // Behind a proxy every peer is the proxy: the client's address is then taken from
    // X-Forwarded-For, this many entries from its right (the entries the proxies appended;
    // Google's L7 load balancer appends "<client>, <load balancer>": 2). 0: the peer address.
    int forwarded_hops = 0;
  };
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `auth` null: auth is off and every request acts for Authenticator::Local().
  AccessPolicy(std::shared_ptr<Authenticator> auth, Options options,
               Clock clock = std::chrono::steady_clock::now);

  AccessDecision Check(const AccessRequest& request);

  // The address failed auth is throttled by: `peer`, or with forwarded_hops the entry of
  // `forwarded_for` that many from the right (the peer when the header has fewer entries).
  std::string ClientAddress(std::string_view peer, std::string_view forwarded_for) const;

  bool auth_enabled() const { return auth_ != nullptr; }
  Authenticator* auth() const { return auth_.get(); }
  bool OriginAllowed(std::string_view origin, std::string_view host) const;

 private:
  bool Throttled(const std::string& address, std::chrono::milliseconds* retry_after);
  void RecordFailure(const std::string& address);

  const std::shared_ptr<Authenticator> auth_;
  const Options options_;
  Clock clock_;
  std::mutex mu_;
  std::unordered_map<std::string, TokenBucket> failures_;  // by client address
};

// A token bucket several threads share (new connections per second over the whole gateway).
class SharedRateLimiter {
 public:
  explicit SharedRateLimiter(int per_second)
      : bucket_(per_second, std::chrono::seconds(1), std::chrono::steady_clock::now()) {}
  // True and a token taken, or false with the wait until the next token in `retry_after`.
  bool Take(std::chrono::milliseconds* retry_after) {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (bucket_.TryTake(now)) return true;
    *retry_after = std::max(std::chrono::milliseconds(1), bucket_.WaitFor(now));
    return false;
  }

 private:
  std::mutex mu_;
  TokenBucket bucket_;
};

}  // namespace anima::gateway
