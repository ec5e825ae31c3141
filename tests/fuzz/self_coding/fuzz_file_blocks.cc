// Fuzzes the file-block parser: any input must parse without crashing, and every file it returns
// must have a path that stays in the workspace, checked here without IsSafePath (which Parse
// itself uses to drop unsafe blocks, so checking with it would prove nothing).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "services/self_coding/file_blocks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = anima::selfcoding::FileBlockParser().Parse(text);
  for (const auto& file : parsed.files) {
    const std::string& path = file.path;
    if (path.empty() || path.front() == '/') std::abort();
    if (path.find('\0') != std::string::npos || path.find('\\') != std::string::npos) std::abort();
    size_t begin = 0;
    while (begin <= path.size()) {  // no component is ".."
      size_t end = path.find('/', begin);
      if (end == std::string::npos) end = path.size();
      if (path.compare(begin, end - begin, "..") == 0) std::abort();
      begin = end + 1;
    }
  }
  return 0;
}
