#include "tools/word_count/word_count.h"

#include "nlohmann/json.hpp"

namespace anima::wordcount {

absl::StatusOr<std::string> CountWords(const std::string& frame_json) {
  auto frame = nlohmann::json::parse(frame_json, nullptr, false);
  if (!frame.is_object()) return absl::InvalidArgumentError("the frame is not a JSON object");
  auto text = frame.find("text");
  if (text == frame.end() || !text->is_string()) {
    return absl::InvalidArgumentError("word_count.text: required string");
  }
  const std::string& s = text->get_ref<const std::string&>();
  int64_t words = 0, characters = 0, lines = s.empty() ? 0 : 1;
  bool in_word = false;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++characters;  // count code points, not continuation bytes
    if (c == '\n') ++lines;
    bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  nlohmann::json out = {{"type", "word_count_result"},
                        {"words", words},
                        {"characters", characters},
                        {"lines", lines}};
  return out.dump();
}

}  // namespace anima::wordcount
