#pragma once

#include <string_view>

namespace anima::gateway {

// One file of the web console (gateway/console/), embedded in the binary at build time by
// cmake/EmbedConsole.cmake.
struct ConsoleAsset {
  std::string_view path;          // the URL path it is served at: "/", "/console/console.js", …
  std::string_view content_type;  // with charset for text
  std::string_view etag;          // quoted: the first 80 bits of the file's SHA-256
  std::string_view body;
};

// The asset served at `path` ("/index.html" is "/"), or nullptr.
const ConsoleAsset* FindConsoleAsset(std::string_view path);

}  // namespace anima::gateway
