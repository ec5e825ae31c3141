#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace anima::broker {

// One dispatched server-sent event. `data` is the raw bytes of the joined `data:` lines (never
// decoded: a UTF-8 character split across reads stays intact). `event` is empty when the stream
// sent no `event:` field (the SSE default type "message").
struct SseEvent {
  std::string event;
  std::string data;
  std::string id;  // the last event id seen so far in the stream (it persists across events)
  std::optional<int64_t> retry_ms;
};

// An incremental parser for text/event-stream bodies (the WHATWG algorithm, on bytes):
//  - lines end in CR, LF or CRLF, also when the CR ends one Feed() and the LF starts the next;
//  - lines starting with ':' are comments; `field:value` strips one leading space of the value;
//  - several `data:` lines are joined with '\n'; a blank line dispatches; events whose data is
//    empty are skipped (a keep-alive after an `id:` must not produce an event);
//  - lines may be arbitrarily long, but one event (its pending line plus its data) may not pass
//    `max_event_bytes`: Feed() then fails with RESOURCE_EXHAUSTED and the parser stays failed.
// Not thread-safe; one parser per stream.
class SseParser {
 public:
  static constexpr size_t kDefaultMaxEventBytes = 4 * 1024 * 1024;

  explicit SseParser(size_t max_event_bytes = kDefaultMaxEventBytes);

  // Consumes `bytes`; complete events are appended to `out`.
  absl::Status Feed(std::string_view bytes, std::vector<SseEvent>& out);
  // The body ended: a final line without terminator is processed and a pending event with data is
  // dispatched (Gemini's last event may lack the blank line).
  absl::Status Finish(std::vector<SseEvent>& out);

  const std::string& last_event_id() const { return last_id_; }
  std::optional<int64_t> retry_ms() const { return retry_ms_; }

 private:
  void ProcessLine(std::string_view line, std::vector<SseEvent>& out);
  void Dispatch(std::vector<SseEvent>& out);
  absl::Status CheckSize() const;

  size_t max_event_bytes_;
  std::string line_;      // the incomplete current line
  bool skip_lf_ = false;  // the previous byte was CR: a leading LF belongs to that line break
  std::string data_;
  bool has_data_ = false;  // at least one data: line since the last dispatch
  std::string event_type_;
  std::string last_id_;
  std::optional<int64_t> retry_ms_;
  absl::Status status_;
};

}  // namespace anima::broker
