#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

namespace anima::cli {

// What the terminal shows of one self-coding job, from its frames (PROTOCOL.md §3): the last
// stage, attempt, percent and message, and the last seq (to watch again after a disconnect).
// Pure: it renders strings and never writes, so both outputs are tested without a terminal.
class JobProgress {
 public:
  explicit JobProgress(int max_attempts = 0) : max_attempts_(max_attempts) {}

  // Takes a self_coding_progress frame. False when it is one already seen (seq not above the
  // last), which a re-watch from after_seq never sends but a careless server might.
  bool Update(const nlohmann::json& progress);

  // The one-line bar for a terminal `width` columns wide, to be written after "\r" (the caller
  // clears the rest of the line):
  //   [##########----------]  50%  testing  attempt 2/3  0:12  running 5 tests
  // Never wider than `width` (the message is cut first, then the elapsed time, then the bar).
  std::string Bar(std::chrono::seconds elapsed, int width) const;

  // One plain line per event, for output that is not a terminal:
  //   0:12  50%  testing  attempt 2/3: running 5 tests
  std::string Line(std::chrono::seconds elapsed) const;

  const std::string& stage() const { return stage_; }
  int percent() const { return percent_; }
  int attempt() const { return attempt_; }
  int64_t last_seq() const { return last_seq_; }

 private:
  std::string AttemptText() const;

  int max_attempts_;
  std::string stage_ = "queued";
  std::string message_;
  int attempt_ = 0;
  int percent_ = 0;
  int64_t last_seq_ = 0;
};

// "m:ss", or "h:mm:ss" from an hour.
std::string Elapsed(std::chrono::seconds elapsed);

// Strips what a terminal would act on (ESC, other C0 controls, DEL) from text a server sent, so a
// message cannot move the cursor or retitle the window. Tabs become spaces, newlines too.
std::string Printable(const std::string& text);

}  // namespace anima::cli
