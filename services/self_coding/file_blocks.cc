#include "services/self_coding/file_blocks.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "services/self_coding/workspace.h"

namespace anima::selfcoding {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (IsSpace(s.front()) || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (IsSpace(s.back()) || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

std::vector<std::string_view> SplitLines(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) {
      if (start < text.size()) lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// Strips a "file:", "filename:", "path:" (or "file =") label, if any.
std::string_view StripLabel(std::string_view s) {
  s = Trim(s);
  for (std::string_view label :
       {"filename", "file name", "filepath", "file path", "file", "path", "title", "name"}) {
    if (!StartsWithNoCase(s, label)) continue;
    std::string_view rest = Trim(s.substr(label.size()));
    if (!rest.empty() && (rest.front() == ':' || rest.front() == '=')) {
      return Trim(rest.substr(1));
    }
  }
  return s;
}

// Strips markdown decoration around a path: quotes, backticks, bold, trailing colons.
std::string_view StripDecoration(std::string_view s) {
  auto is_deco = [](char c) {
    return c == '`' || c == '*' || c == '"' || c == '\'' || c == ':' || c == '_' || IsSpace(c);
  };
  while (!s.empty() && is_deco(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_deco(s.back())) s.remove_suffix(1);
  return s;
}

// A path named by the line before a fence ("path: a.py", "**a.py**", "### 2. `a.py`",
// "Here is `a.py`:"), or nothing.
std::optional<std::string> PathFromHeading(std::string_view line) {
  std::string_view s = Trim(line);
  if (s.empty() || s.size() > 200) return std::nullopt;
  while (!s.empty() && (s.front() == '#' || s.front() == '>' || s.front() == '-' ||
                        s.front() == '+' || IsSpace(s.front()))) {
    s.remove_prefix(1);
  }
  // A list number: "2." or "2)".
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) digits++;
  if (digits > 0 && digits < s.size() && (s[digits] == '.' || s[digits] == ')')) {
    s = Trim(s.substr(digits + 1));
  }
  std::string_view candidate = StripDecoration(StripLabel(StripDecoration(s)));
  if (FileBlockParser::LooksLikePath(candidate)) return std::string(candidate);
  // "Here is `a.py`:" - a short sentence with exactly one backticked file name, ending in ':'.
  if (s.size() <= 100 && s.back() == ':') {
    size_t open = s.find('`');
    size_t close = open == std::string_view::npos ? open : s.find('`', open + 1);
    if (close != std::string_view::npos && s.find('`', close + 1) == std::string_view::npos) {
      std::string_view inner = s.substr(open + 1, close - open - 1);
      if (FileBlockParser::LooksLikePath(inner)) return std::string(inner);
    }
  }
  return std::nullopt;
}

// A path given by the block's first line as a comment ("# file: a.py", "// a.cpp").
std::optional<std::string> PathFromFirstLine(std::string_view line) {
  std::string_view s = Trim(line);
  bool comment = false;
  for (std::string_view open : {"<!--", "//", "/*", "#", "--", ";"}) {
    if (s.substr(0, open.size()) == open) {
      s.remove_prefix(open.size());
      comment = true;
      break;
    }
  }
  if (!comment) return std::nullopt;
  s = Trim(s);
  for (std::string_view close : {"-->", "*/"}) {
    if (s.size() >= close.size() && s.substr(s.size() - close.size()) == close) {
      s = Trim(s.substr(0, s.size() - close.size()));
    }
  }
  std::string_view candidate = StripDecoration(StripLabel(s));
  if (candidate.find(' ') != std::string_view::npos) return std::nullopt;
  // "# include <x.h>" or "#!/usr/bin/env" never name files; "#include" has no space but no dot.
  if (FileBlockParser::LooksLikePath(candidate)) return std::string(candidate);
  return std::nullopt;
}

struct Fence {
  char ch = 0;
  size_t len = 0;
  std::string_view info;
};

std::optional<Fence> OpeningFence(std::string_view line) {
  size_t indent = 0;
  while (indent < line.size() && line[indent] == ' ' && indent < 4) indent++;
  std::string_view s = line.substr(indent);
  if (s.empty() || (s[0] != '`' && s[0] != '~')) return std::nullopt;
  Fence f;
  f.ch = s[0];
  while (f.len < s.size() && s[f.len] == f.ch) f.len++;
  if (f.len < 3) return std::nullopt;
  f.info = Trim(s.substr(f.len));
  // A backtick fence's info string may not contain a backtick (CommonMark).
  if (f.ch == '`' && f.info.find('`') != std::string_view::npos) return std::nullopt;
  return f;
}

bool ClosesFence(std::string_view line, const Fence& open) {
  std::string_view s = Trim(line);
  if (s.size() < open.len) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return c == open.ch; });
}

// Splits the info string into the language and the path it names, if any.
void ParseInfo(std::string_view info, std::string* language, std::string* path) {
  std::vector<std::string_view> tokens;
  size_t i = 0;
  while (i < info.size()) {
    while (i < info.size() && IsSpace(info[i])) i++;
    size_t start = i;
    char quote = 0;
    while (i < info.size() && (quote != 0 || !IsSpace(info[i]))) {
      if (info[i] == '"' || info[i] == '\'')
        quote = quote == info[i] ? 0 : (quote ? quote : info[i]);
      i++;
    }
    if (i > start) tokens.push_back(info.substr(start, i - start));
  }
  for (size_t t = 0; t < tokens.size(); ++t) {
    std::string_view tok = tokens[t];
    size_t eq = tok.find('=');
    if (eq != std::string_view::npos) {
      std::string key = Lower(tok.substr(0, eq));
      std::string_view value = StripDecoration(tok.substr(eq + 1));
      if ((key == "title" || key == "file" || key == "filename" || key == "path" ||
           key == "name") &&
          path->empty() && !value.empty()) {
        *path = std::string(value);
      }
      continue;
    }
    if (t == 0) {
      // "python", "python:a.py", "a.py", "{.python}"
      size_t colon = tok.find(':');
      if (colon != std::string_view::npos) {
        *language = Lower(tok.substr(0, colon));
        std::string_view rest = StripDecoration(tok.substr(colon + 1));
        if (path->empty() && FileBlockParser::LooksLikePath(rest)) *path = std::string(rest);
      } else if (FileBlockParser::LooksLikePath(tok) && tokens.size() == 1 &&
                 tok.find('.') != std::string_view::npos && tok.front() != '.') {
        *path = std::string(StripDecoration(tok));
      } else {
        std::string lang = Lower(tok);
        while (!lang.empty() && (lang.front() == '{' || lang.front() == '.')) lang.erase(0, 1);
        while (!lang.empty() && lang.back() == '}') lang.pop_back();
        *language = lang;
      }
      continue;
    }
    std::string_view bare = StripDecoration(tok);
    if (path->empty() && FileBlockParser::LooksLikePath(bare)) *path = std::string(bare);
  }
}

}  // namespace

bool FileBlockParser::LooksLikePath(std::string_view token) {
  token = Trim(token);
  if (token.empty() || token.size() > 255) return false;
  for (char c : token) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' ||
              c == '/' || c == '+';
    if (!ok) return false;
  }
  if (token == "Makefile" || token == "Dockerfile" || token == "CMakeLists.txt") return true;
  std::string_view base =
      token.substr(token.rfind('/') == std::string_view::npos ? 0 : token.rfind('/') + 1);
  size_t dot = base.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 >= base.size()) return false;
  std::string_view ext = base.substr(dot + 1);
  if (ext.size() > 8) return false;
  // An extension has a letter: "3.11" or "1.2.3" are versions, not files.
  return std::any_of(ext.begin(), ext.end(),
                     [](char c) { return std::isalpha(static_cast<unsigned char>(c)); });
}

std::string FileBlockParser::Normalize(std::string_view path) {
  std::string_view s = StripDecoration(Trim(path));
  while (s.substr(0, 2) == "./") s = StripDecoration(s.substr(2));
  return std::string(s);
}

bool FileBlockParser::IsSafePath(std::string_view path) { return UnsafePathReason(path).empty(); }

ParsedFiles FileBlockParser::Parse(std::string_view text) const {
  ParsedFiles out;
  std::vector<std::string_view> lines = SplitLines(text);
  size_t i = 0;
  while (i < lines.size()) {
    std::optional<Fence> fence = OpeningFence(lines[i]);
    if (!fence) {
      i++;
      continue;
    }
    FileBlock block;
    std::string path;
    ParseInfo(fence->info, &block.language, &path);
    if (path.empty()) {
      // The nearest non-blank line above, if it is within two lines.
      for (size_t back = 1; back <= 2 && back <= i; ++back) {
        std::string_view above = Trim(lines[i - back]);
        if (above.empty()) continue;
        if (auto p = PathFromHeading(above)) path = *p;
        break;
      }
    }
    size_t body_start = i + 1;
    size_t j = body_start;
    while (j < lines.size() && !ClosesFence(lines[j], *fence)) j++;
    if (j == lines.size())
      out.warnings.push_back("a code block was not closed; it runs to the end");
    if (body_start < j) {
      if (auto p = PathFromFirstLine(lines[body_start])) {
        if (path.empty()) path = *p;
        // The comment names a file; drop it so "# file: x" never reaches a C++ compiler.
        if (Normalize(*p) == Normalize(path)) body_start++;
      }
    }
    for (size_t k = body_start; k < j; ++k) {
      std::string_view line = lines[k];
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      block.content.append(line);
      block.content.push_back('\n');
    }
    i = j + 1;
    if (path.empty()) {
      out.unnamed.push_back(std::move(block));
      continue;
    }
    block.path = Normalize(path);
    if (std::string reason = UnsafePathReason(block.path); !reason.empty()) {
      out.warnings.push_back("rejected unsafe path \"" + block.path.substr(0, 100) +
                             "\": " + reason);
      continue;
    }
    auto existing = std::find_if(out.files.begin(), out.files.end(),
                                 [&](const FileBlock& f) { return f.path == block.path; });
    if (existing != out.files.end()) {
      out.warnings.push_back(block.path + " appeared twice; the last one is used");
      *existing = std::move(block);
    } else {
      out.files.push_back(std::move(block));
    }
  }
  return out;
}

}  // namespace anima::selfcoding
