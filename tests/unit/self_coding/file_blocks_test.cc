#include "services/self_coding/file_blocks.h"

#include <gtest/gtest.h>

namespace anima::selfcoding {
namespace {

ParsedFiles Parse(const std::string& text) { return FileBlockParser().Parse(text); }

TEST(FileBlockParser, TitleAttributeInTheInfoString) {
  auto out = Parse("Here you go.\n```python title=\"app/main.py\"\nprint(1)\n```\nDone.");
  ASSERT_EQ(out.files.size(), 1u);
  EXPECT_EQ(out.files[0].path, "app/main.py");
  EXPECT_EQ(out.files[0].language, "python");
  EXPECT_EQ(out.files[0].content, "print(1)\n");
}

TEST(FileBlockParser, PathAfterTheLanguageOrInsteadOfIt) {
  auto out = Parse(
      "```python solution.py\na = 1\n```\n```cpp:src/x.cpp\nint x;\n```\n"
      "```util.h\n#pragma once\n```\n```python filename='q.py'\nq = 2\n```\n");
  ASSERT_EQ(out.files.size(), 4u);
  EXPECT_EQ(out.files[0].path, "solution.py");
  EXPECT_EQ(out.files[1].path, "src/x.cpp");
  EXPECT_EQ(out.files[1].language, "cpp");
  EXPECT_EQ(out.files[2].path, "util.h");
  EXPECT_EQ(out.files[2].content, "#pragma once\n");
  EXPECT_EQ(out.files[3].path, "q.py");
}

TEST(FileBlockParser, PathOnTheLineBeforeTheFence) {
  auto out = Parse(
      "path: a.py\n```python\na = 1\n```\n\n**b.py**\n```python\nb = 2\n```\n"
      "### 3. `c/d.py`\n\n```python\nd = 4\n```\nFile: e.cpp\n```\nint e;\n```\n"
      "Here is `f.py`:\n```\nf = 6\n```\n");
  ASSERT_EQ(out.files.size(), 5u) << (out.unnamed.empty() ? "" : out.unnamed[0].content);
  EXPECT_EQ(out.files[0].path, "a.py");
  EXPECT_EQ(out.files[1].path, "b.py");
  EXPECT_EQ(out.files[2].path, "c/d.py");
  EXPECT_EQ(out.files[3].path, "e.cpp");
  EXPECT_EQ(out.files[4].path, "f.py");
}

TEST(FileBlockParser, PathAsAFirstLineCommentIsRemovedFromTheFile) {
  auto out = Parse(
      "```cpp\n// file: solution.h\n#pragma once\nint f();\n```\n"
      "```python\n# solution.py\nx = 1\n```\n"
      "```html\n<!-- file: index.html -->\n<p></p>\n```\n");
  ASSERT_EQ(out.files.size(), 3u);
  EXPECT_EQ(out.files[0].path, "solution.h");
  EXPECT_EQ(out.files[0].content, "#pragma once\nint f();\n");
  EXPECT_EQ(out.files[1].path, "solution.py");
  EXPECT_EQ(out.files[1].content, "x = 1\n");
  EXPECT_EQ(out.files[2].path, "index.html");
}

TEST(FileBlockParser, OrdinaryCommentsAndIncludesAreNotPaths) {
  auto out = Parse(
      "```cpp\n#include <vector>\nint main() {}\n```\n"
      "```python\n# compute the sum\nx = 1\n```\nThe result is:\n```\n42\n```\n");
  EXPECT_TRUE(out.files.empty());
  ASSERT_EQ(out.unnamed.size(), 3u);
  EXPECT_EQ(out.unnamed[0].content, "#include <vector>\nint main() {}\n");
  EXPECT_EQ(out.unnamed[0].language, "cpp");
}

TEST(FileBlockParser, UnsafePathsAreRejected) {
  auto out = Parse(
      "```python title=\"../evil.py\"\nx\n```\n```python title=\"/etc/passwd\"\nx\n```\n"
      "```python title=\"a\\\\b.py\"\nx\n```\n```python title=\"./ok/fine.py\"\nx\n```\n");
  ASSERT_EQ(out.files.size(), 1u);
  EXPECT_EQ(out.files[0].path, "ok/fine.py");
  EXPECT_EQ(out.warnings.size(), 3u);
}

TEST(FileBlockParser, NestedFencesTildesAndUnclosedBlocks) {
  auto out = Parse(
      "````markdown title=\"README.md\"\n```python\nx = 1\n```\n````\n"
      "~~~python title=\"t.py\"\ny = 2\n~~~\n```python title=\"last.py\"\nz = 3\n");
  ASSERT_EQ(out.files.size(), 3u);
  EXPECT_EQ(out.files[0].content, "```python\nx = 1\n```\n");
  EXPECT_EQ(out.files[1].path, "t.py");
  EXPECT_EQ(out.files[2].path, "last.py");
  EXPECT_EQ(out.files[2].content, "z = 3\n");
  EXPECT_FALSE(out.warnings.empty());
}

TEST(FileBlockParser, LaterDuplicateWinsAndCrLfIsNormalised) {
  auto out =
      Parse("```python title=\"a.py\"\r\nold\r\n```\r\n```python title=\"a.py\"\r\nnew\r\n```\r\n");
  ASSERT_EQ(out.files.size(), 1u);
  EXPECT_EQ(out.files[0].content, "new\n");
  EXPECT_EQ(out.warnings.size(), 1u);
}

TEST(FileBlockParser, PathHelpers) {
  EXPECT_TRUE(FileBlockParser::LooksLikePath("a.py"));
  EXPECT_TRUE(FileBlockParser::LooksLikePath("src/a_b-c.cpp"));
  EXPECT_TRUE(FileBlockParser::LooksLikePath("Makefile"));
  EXPECT_FALSE(FileBlockParser::LooksLikePath("python"));
  EXPECT_FALSE(FileBlockParser::LooksLikePath("3.11"));
  EXPECT_FALSE(FileBlockParser::LooksLikePath("hello world.py"));
  EXPECT_TRUE(FileBlockParser::IsSafePath("a/b.py"));
  EXPECT_FALSE(FileBlockParser::IsSafePath("a/../b.py"));
  EXPECT_FALSE(FileBlockParser::IsSafePath("a//b.py"));
  EXPECT_FALSE(FileBlockParser::IsSafePath(""));
  EXPECT_FALSE(FileBlockParser::IsSafePath("C:evil"));
  EXPECT_EQ(FileBlockParser::Normalize("./`a.py`"), "a.py");
}

TEST(FileBlockParser, NoFencesMeansNoFiles) {
  auto out = Parse("I cannot help with that.");
  EXPECT_TRUE(out.files.empty());
  EXPECT_TRUE(out.unnamed.empty());
}

TEST(FileBlockParser, RefusesPathsThatReadAsOptionsOrResponseFiles) {
  auto out = Parse(
      "```cpp title=\"-o.cpp\"\nint a;\n```\n```cpp title=\"src/@flags.cpp\"\nint b;\n```\n"
      "```cpp title=\"ok-1@2.cpp\"\nint c;\n```\n");
  ASSERT_EQ(out.files.size(), 1u);
  EXPECT_EQ(out.files[0].path, "ok-1@2.cpp");
  ASSERT_EQ(out.warnings.size(), 2u);
  EXPECT_NE(out.warnings[0].find("starts with '-' or '@'"), std::string::npos) << out.warnings[0];
  EXPECT_FALSE(FileBlockParser::IsSafePath("-rf"));
  EXPECT_FALSE(FileBlockParser::IsSafePath("a/@b"));
  EXPECT_TRUE(FileBlockParser::IsSafePath("a/b-c@d.py"));
}

}  // namespace
}  // namespace anima::selfcoding
