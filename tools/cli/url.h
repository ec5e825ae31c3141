#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace anima::cli {

// A parsed ws://, wss://, http:// or https:// URL. `target` is the path with its query
// ("/" when the URL has none); `port` is filled with the scheme's default when absent.
struct Url {
  std::string scheme;  // lower case: "ws", "wss", "http" or "https"
  std::string host;    // without brackets for IPv6 literals
  std::string port;
  std::string target;
  bool tls = false;

  // "host:port" as sent in the Host header (IPv6 literals bracketed).
  std::string HostHeader() const;
};

// Parses `text`. Errors name what is wrong: unsupported scheme, missing host, bad port,
// user info (not supported), fragment.
absl::StatusOr<Url> ParseUrl(std::string_view text);

// True for "localhost", any 127.0.0.0/8 address and ::1: the hosts anima-bench may load.
bool IsLoopbackHost(std::string_view host);

}  // namespace anima::cli
