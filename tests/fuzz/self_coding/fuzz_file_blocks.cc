// Fuzzes the file-block parser: any input must parse without crashing, and every file it returns
// must have a safe path.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "services/self_coding/file_blocks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = anima::selfcoding::FileBlockParser().Parse(text);
  for (const auto& file : parsed.files) {
    if (!anima::selfcoding::FileBlockParser::IsSafePath(file.path)) std::abort();
  }
  return 0;
}
