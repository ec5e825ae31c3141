#include "tools/bench/metrics_text.h"

#include <charconv>

namespace anima::bench {

std::optional<double> SampleValue(std::string_view exposition, std::string_view name) {
  while (!exposition.empty()) {
    const size_t end = exposition.find('\n');
    const std::string_view line = exposition.substr(0, end);
    exposition = end == std::string_view::npos ? std::string_view() : exposition.substr(end + 1);
    if (line.size() <= name.size() || line.substr(0, name.size()) != name ||
        line[name.size()] != ' ') {
      continue;
    }
    std::string_view value_text = line.substr(name.size() + 1);
    value_text = value_text.substr(0, value_text.find(' '));
    double value = 0;
    const char* last = value_text.data() + value_text.size();
    auto [stop, ec] = std::from_chars(value_text.data(), last, value);
    if (ec != std::errc() || stop != last) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

}  // namespace anima::bench
