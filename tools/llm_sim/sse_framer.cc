#include "tools/llm_sim/sse_framer.h"

#include <random>

#include "absl/strings/str_cat.h"

namespace anima::sim {

namespace {

std::string FrameOne(const SseEvent& event, const Modifiers& m, int id) {
  const char* eol = m.crlf ? "\r\n" : "\n";
  const char* data_prefix = m.nospace ? "data:" : "data: ";
  std::string out;
  if (m.fields) absl::StrAppend(&out, m.nospace ? "id:" : "id: ", id, eol);
  absl::StrAppend(&out, data_prefix, event.data, eol, eol);
  return out;
}

std::string Comment(const Modifiers& m) {
  const char* eol = m.crlf ? "\r\n" : "\n";
  return absl::StrCat(": keep-alive", eol, eol);
}

// True when a write boundary at `i` (between bytes i-1 and i) must be forced: between CR and LF,
// and right after the lead byte of a multibyte UTF-8 character.
bool ForcedSplit(const std::string& s, size_t i) {
  unsigned char prev = static_cast<unsigned char>(s[i - 1]);
  if (prev == '\r' && s[i] == '\n') return true;
  return prev >= 0xC0;  // lead byte of a 2-, 3- or 4-byte sequence
}

}  // namespace

std::vector<std::string> SplitBytes(const std::string& bytes, bool byte_by_byte, uint64_t seed) {
  std::vector<std::string> pieces;
  if (byte_by_byte) {
    for (char c : bytes) pieces.emplace_back(1, c);
    return pieces;
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> length(1, 12);
  size_t start = 0;
  size_t next_cut = start + length(rng);
  for (size_t i = 1; i <= bytes.size(); ++i) {
    if (i == bytes.size() || i == next_cut || ForcedSplit(bytes, i)) {
      pieces.push_back(bytes.substr(start, i - start));
      start = i;
      next_cut = start + length(rng);
    }
  }
  return pieces;
}

std::vector<BodyWrite> FrameEvents(const std::vector<SseEvent>& events, const Modifiers& m,
                                   uint64_t seed) {
  // First group the framed events into logical writes (one per event, or several with `multi`).
  std::vector<BodyWrite> logical;
  if (m.fields)
    logical.push_back(
        {std::chrono::milliseconds(0), m.crlf ? "retry: 3000\r\n\r\n" : "retry: 3000\n\n"});
  constexpr size_t kEventsPerMultiWrite = 3;
  size_t in_group = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const SseEvent& event = events[i];
    std::string bytes;
    if (m.comments) bytes += Comment(m);
    bytes += FrameOne(event, m, static_cast<int>(i) + 1);
    // A delayed event always starts a new write, so the delay stays observable.
    bool join =
        m.multi && !logical.empty() && event.delay.count() == 0 && in_group < kEventsPerMultiWrite;
    if (join) {
      logical.back().bytes += bytes;
      ++in_group;
    } else {
      logical.push_back({event.delay, std::move(bytes)});
      in_group = 1;
    }
  }
  if (!m.split_bytes && !m.byte_by_byte) return logical;

  std::vector<BodyWrite> split;
  uint64_t piece_seed = seed;
  for (const BodyWrite& write : logical) {
    bool first = true;
    for (std::string& piece : SplitBytes(write.bytes, m.byte_by_byte, piece_seed++)) {
      split.push_back({first ? write.delay : std::chrono::milliseconds(0), std::move(piece)});
      first = false;
    }
  }
  return split;
}

}  // namespace anima::sim
