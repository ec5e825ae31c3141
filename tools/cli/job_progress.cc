#include "tools/cli/job_progress.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/cli/tables.h"

namespace anima::cli {

namespace {

constexpr int kBarCells = 20;
constexpr int kMinBarCells = 10;

int IntField(const nlohmann::json& frame, const char* name, int fallback) {
  auto it = frame.find(name);
  if (it == frame.end() || !it->is_number_integer()) return fallback;
  return static_cast<int>(std::clamp<int64_t>(it->get<int64_t>(), 0, 1 << 30));
}

}  // namespace

std::string Elapsed(std::chrono::seconds elapsed) {
  int64_t s = std::max<int64_t>(0, elapsed.count());
  if (s >= 3600) return absl::StrFormat("%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  return absl::StrFormat("%d:%02d", s / 60, s % 60);
}

std::string Printable(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    auto u = static_cast<unsigned char>(c);
    if (c == '\t' || c == '\n' || c == '\r') {
      out += ' ';
    } else if (u >= 0x20 && u != 0x7F) {
      out += c;
    }
  }
  return out;
}

bool JobProgress::Update(const nlohmann::json& progress) {
  auto seq_it = progress.find("seq");
  if (seq_it != progress.end() && seq_it->is_number_integer()) {
    int64_t seq = seq_it->get<int64_t>();
    if (seq <= last_seq_) return false;
    last_seq_ = seq;
  }
  auto stage = progress.find("stage");
  if (stage != progress.end() && stage->is_string()) stage_ = Printable(stage->get<std::string>());
  auto message = progress.find("message");
  message_ = message != progress.end() && message->is_string()
                 ? Printable(message->get<std::string>())
                 : "";
  attempt_ = IntField(progress, "attempt", attempt_);
  percent_ = std::min(100, IntField(progress, "percent", percent_));
  return true;
}

std::string JobProgress::AttemptText() const {
  if (attempt_ <= 0) return "";
  return max_attempts_ > 0 ? absl::StrCat("attempt ", attempt_, "/", max_attempts_)
                           : absl::StrCat("attempt ", attempt_);
}

std::string JobProgress::Bar(std::chrono::seconds elapsed, int width) const {
  const size_t w = static_cast<size_t>(std::max(1, width));
  std::string status = absl::StrFormat("%3d%%  %s", percent_, stage_);
  if (std::string attempt = AttemptText(); !attempt.empty())
    absl::StrAppend(&status, "  ", attempt);
  auto bar = [this](int cells) {
    int filled = percent_ * cells / 100;
    return absl::StrCat("[", std::string(filled, '#'), std::string(cells - filled, '-'), "]");
  };
  std::string time = Elapsed(elapsed);
  std::string line = absl::StrCat(bar(kBarCells), " ", status, "  ", time);
  if (Columns(line) < w && !message_.empty()) {
    std::string with_message = absl::StrCat(line, "  ", message_);
    return CutToColumns(with_message, w);
  }
  if (Columns(line) <= w) return line;
  line = absl::StrCat(bar(kBarCells), " ", status);
  if (Columns(line) <= w) return line;
  line = absl::StrCat(bar(kMinBarCells), " ", status);
  return CutToColumns(line, w);
}

std::string JobProgress::Line(std::chrono::seconds elapsed) const {
  std::string line = absl::StrFormat("%s  %3d%%  %s", Elapsed(elapsed), percent_, stage_);
  if (std::string attempt = AttemptText(); !attempt.empty()) absl::StrAppend(&line, "  ", attempt);
  if (!message_.empty()) absl::StrAppend(&line, ": ", message_);
  return line;
}

}  // namespace anima::cli
