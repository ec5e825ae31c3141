// Feeds the input to SseParser whole and split at positions derived from the input, and checks
// that both give the same events (or both fail).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "services/llm_broker/sse_parser.h"

namespace {

using anima::broker::SseEvent;
using anima::broker::SseParser;

bool Same(const std::vector<SseEvent>& a, const std::vector<SseEvent>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].data != b[i].data || a[i].event != b[i].event || a[i].id != b[i].id ||
        a[i].retry_ms != b[i].retry_ms) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  constexpr size_t kLimit = 4096;  // small, so the size guard is exercised too

  SseParser whole(kLimit);
  std::vector<SseEvent> whole_events;
  bool whole_ok = whole.Feed(input, whole_events).ok();
  whole_ok = whole_ok && whole.Finish(whole_events).ok();

  // Piece lengths cycle through the input's own bytes (1..16).
  SseParser split(kLimit);
  std::vector<SseEvent> split_events;
  bool split_ok = true;
  size_t pos = 0;
  size_t i = 0;
  while (pos < input.size() && split_ok) {
    size_t len = 1 + (static_cast<unsigned char>(input[i++ % input.size()]) % 16);
    split_ok = split.Feed(std::string_view(input).substr(pos, len), split_events).ok();
    pos += len;
  }
  split_ok = split_ok && split.Finish(split_events).ok();

  if (whole_ok != split_ok) std::abort();
  if (whole_ok && !Same(whole_events, split_events)) std::abort();
  return 0;
}
