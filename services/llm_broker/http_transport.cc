#include "services/llm_broker/http_transport.h"

#include "absl/strings/match.h"

namespace anima::broker {

std::optional<std::string> HttpResponseHead::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) return value;
  }
  return std::nullopt;
}

}  // namespace anima::broker
