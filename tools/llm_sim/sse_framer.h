#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/llm_sim/response_plan.h"
#include "tools/llm_sim/scenario.h"

namespace anima::sim {

// One SSE event before framing: its data payload and the delay before it is sent.
struct SseEvent {
  std::string data;
  std::chrono::milliseconds delay{0};
};

// Turns events into the writes of a stream, applying the framing modifiers of a scenario:
// line endings, `data:` spacing, comments, id/retry fields, grouping several events per write,
// and splitting writes at random offsets (always between CR and LF and inside multibyte UTF-8
// characters) or byte by byte. `seed` makes the random splits reproducible. Concatenating the
// writes always gives a stream an SSE decoder reads as the same events.
std::vector<BodyWrite> FrameEvents(const std::vector<SseEvent>& events, const Modifiers& modifiers,
                                   uint64_t seed);

// Splits one byte string as the split_bytes / byte_by_byte modifiers do (exposed for tests).
std::vector<std::string> SplitBytes(const std::string& bytes, bool byte_by_byte, uint64_t seed);

}  // namespace anima::sim
