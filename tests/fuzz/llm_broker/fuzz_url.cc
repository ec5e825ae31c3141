// URLs from configuration and the environment (provider base URLs, HTTPS_PROXY): ParseUrl,
// SplitProxyCredentials and RedactUserInfo must never crash, and the redacted form of a URL with
// user info must not contain its password.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "services/llm_broker/http_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  auto parsed = anima::broker::ParseUrl(input);
  if (parsed.ok() && parsed->host.empty()) std::abort();  // a URL without a host is an error
  std::string redacted = anima::broker::RedactUserInfo(input);
  auto split = anima::broker::SplitProxyCredentials(input);
  if (split.ok() && split->user_password) {
    // Everything between "://" and the last '@' before the path is gone from both forms.
    if (redacted.find("***@") == std::string::npos) std::abort();
    if (split->url.size() >= input.size()) std::abort();
    (void)anima::broker::ParseUrl(split->url);
  }
  return 0;
}
