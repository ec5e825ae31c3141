#include "services/llm_broker/sse_parser.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace anima::broker {

SseParser::SseParser(size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

absl::Status SseParser::CheckSize() const {
  if (line_.size() + data_.size() > max_event_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server-sent event larger than ", max_event_bytes_, " bytes"));
  }
  return absl::OkStatus();
}

absl::Status SseParser::Feed(std::string_view bytes, std::vector<SseEvent>& out) {
  if (!status_.ok()) return status_;
  size_t pos = 0;
  if (skip_lf_ && !bytes.empty()) {
    skip_lf_ = false;
    if (bytes[0] == '\n') pos = 1;
  }
  while (pos < bytes.size()) {
    // Find the next CR or LF.
    size_t end = pos;
    while (end < bytes.size() && bytes[end] != '\r' && bytes[end] != '\n') ++end;
    if (end == bytes.size()) {
      line_.append(bytes.data() + pos, end - pos);
      if (status_ = CheckSize(); !status_.ok()) return status_;
      break;
    }
    std::string_view piece = bytes.substr(pos, end - pos);
    if (line_.empty()) {
      if (piece.size() + data_.size() > max_event_bytes_) {
        status_ = absl::ResourceExhaustedError(
            absl::StrCat("server-sent event larger than ", max_event_bytes_, " bytes"));
        return status_;
      }
      ProcessLine(piece, out);
    } else {
      line_.append(piece);
      if (status_ = CheckSize(); !status_.ok()) return status_;
      std::string line = std::move(line_);
      line_.clear();
      ProcessLine(line, out);
    }
    if (status_ = CheckSize(); !status_.ok()) return status_;
    if (bytes[end] == '\r') {
      if (end + 1 < bytes.size()) {
        pos = bytes[end + 1] == '\n' ? end + 2 : end + 1;
      } else {
        skip_lf_ = true;  // the LF, if any, comes with the next Feed()
        pos = end + 1;
      }
    } else {
      pos = end + 1;
    }
  }
  return absl::OkStatus();
}

absl::Status SseParser::Finish(std::vector<SseEvent>& out) {
  if (!status_.ok()) return status_;
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    ProcessLine(line, out);
  }
  Dispatch(out);
  skip_lf_ = false;
  return absl::OkStatus();
}

void SseParser::ProcessLine(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    Dispatch(out);
    return;
  }
  if (line[0] == ':') return;  // comment / keep-alive
  std::string_view field = line;
  std::string_view value;
  if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) data_.push_back('\n');
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    event_type_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_id_.assign(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() <= 12 &&
        value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ms_ = std::stoll(std::string(value));
    }
  }
  // Any other field is ignored, as the specification says.
}

void SseParser::Dispatch(std::vector<SseEvent>& out) {
  if (has_data_ && !data_.empty()) {
    SseEvent event;
    event.event = std::move(event_type_);
    event.data = std::move(data_);
    event.id = last_id_;
    event.retry_ms = retry_ms_;
    out.push_back(std::move(event));
  }
  data_.clear();
  has_data_ = false;
  event_type_.clear();
}

}  // namespace anima::broker
