#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace anima::selfcoding {

// A file the model wrote: a fenced code block and the path it was given.
struct FileBlock {
  std::string path;      // relative, normalised ("src/a.py"); empty when the block named none
  std::string language;  // the fence's language tag, lower case; may be empty
  std::string content;   // the block's text, ending with a newline unless empty
};

struct ParsedFiles {
  std::vector<FileBlock> files;       // blocks with a safe path, in order; a later duplicate wins
  std::vector<FileBlock> unnamed;     // blocks that named no path
  std::vector<std::string> warnings;  // rejected paths, duplicates, an unclosed fence
};

// Finds the files in a model's reply. Models name files in many ways; all of these work:
//
//   ```python title="app/main.py"      ```python app/main.py      ```app/main.py   ```cpp:a.cpp
//   path: a.py / File: a.py / **a.py** / ### `a.py` / `a.py`:   on the line before the fence
//   # file: a.py / // a.cpp / <!-- file: a.html -->              as the block's first line
//
// Fences are ``` or ~~~ (three or more, closed by the same character at least as long; an
// unclosed fence runs to the end). Paths must be relative and stay inside the workspace: absolute
// paths, "..", backslashes, control characters and components starting with '-' or '@' are
// rejected with a warning that says why. Plain, stateless and safe on any input (it is fuzzed).
class FileBlockParser {
 public:
  ParsedFiles Parse(std::string_view text) const;

  // A relative path without "..", empty parts, backslashes, control characters or a component
  // starting with '-' or '@', at most 255 bytes (UnsafePathReason() says why not); "./" prefixes
  // are allowed by Normalize().
  static bool IsSafePath(std::string_view path);
  // Strips "./" prefixes and surrounding quotes or backticks; does not validate.
  static std::string Normalize(std::string_view path);
  // Whether `token` looks like a file name rather than a word or a language tag ("a.py",
  // "src/x.cpp", "Makefile").
  static bool LooksLikePath(std::string_view token);
};

}  // namespace anima::selfcoding
