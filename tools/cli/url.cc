#include "tools/cli/url.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace anima::cli {

std::string Url::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host;
  return absl::StrCat(h, ":", port);
}

absl::StatusOr<Url> ParseUrl(std::string_view text) {
  Url url;
  auto sep = text.find("://");
  if (sep == std::string_view::npos) {
    return absl::InvalidArgumentError("URL \"" + std::string(text) + "\" has no scheme://");
  }
  url.scheme = absl::AsciiStrToLower(std::string(text.substr(0, sep)));
  if (url.scheme == "ws" || url.scheme == "http") {
    url.port = "80";
  } else if (url.scheme == "wss" || url.scheme == "https") {
    url.port = "443";
    url.tls = true;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("URL scheme \"", url.scheme, "\" is not ws, wss, http or https"));
  }
  std::string_view rest = text.substr(sep + 3);
  if (rest.find('#') != std::string_view::npos) {
    return absl::InvalidArgumentError("URL fragments (#...) are not supported");
  }
  auto path_start = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, path_start);
  url.target = path_start == std::string_view::npos ? "/" : std::string(rest.substr(path_start));
  if (url.target[0] == '?') url.target.insert(0, "/");
  if (authority.find('@') != std::string_view::npos) {
    return absl::InvalidArgumentError("user info in URLs is not supported; use --token");
  }
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("IPv6 host is missing ']'");
    }
    url.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return absl::InvalidArgumentError("unexpected text after IPv6 host");
      port = after.substr(1);
    }
  } else {
    auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) return absl::InvalidArgumentError("URL has no host");
  if (!port.empty() || authority.ends_with(":")) {
    int value = 0;
    if (!absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &value) || value < 1 ||
        value > 65535 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return std::isdigit(c); })) {
      return absl::InvalidArgumentError("URL port \"" + std::string(port) + "\" is not 1-65535");
    }
    url.port = std::string(port);
  }
  return url;
}

bool IsLoopbackHost(std::string_view host) {
  if (absl::AsciiStrToLower(std::string(host)) == "localhost" || host == "::1") return true;
  std::vector<std::string> parts = absl::StrSplit(std::string(host), '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (const auto& p : parts) {
    int v = 0;
    if (p.empty() || p.size() > 3 || !absl::SimpleAtoi(p, &v) || v < 0 || v > 255) return false;
  }
  return true;
}

}  // namespace anima::cli
