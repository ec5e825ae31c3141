#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace anima::wordcount {

// The example module's logic: {"type":"word_count","text":"..."} -> the result frame
// {"type":"word_count_result","words":N,"characters":N,"lines":N}. Words are runs of
// non-whitespace; characters are UTF-8 code points. A frame without a string `text` is an error
// (InvalidArgument, naming the field).
absl::StatusOr<std::string> CountWords(const std::string& frame_json);

}  // namespace anima::wordcount
