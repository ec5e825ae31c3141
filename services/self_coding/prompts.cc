#include "services/self_coding/prompts.h"

#include "absl/strings/str_cat.h"

namespace anima::selfcoding {
namespace {

const LanguageProfile kPython{
    "python", "Python 3 (standard library only)", "test_main.py", "solution.py", "python", false};
const LanguageProfile kCpp{
    "cpp", "C++20 (g++, standard library only)", "test_main.cpp", "solution.h", "cpp", true};

constexpr size_t kMaxPreviousFilesBytes = 24 * 1024;

void AppendFence(std::string* out, const std::string& path, const std::string& fence,
                 const std::string& content) {
  absl::StrAppend(out, "```", fence, " title=\"", path, "\"\n", content);
  if (!content.empty() && content.back() != '\n') out->push_back('\n');
  out->append("```\n");
}

}  // namespace

const LanguageProfile* FindLanguage(const std::string& language) {
  if (language.empty() || language == "python" || language == "python3" || language == "py") {
    return &kPython;
  }
  if (language == "cpp" || language == "c++" || language == "cxx") return &kCpp;
  return nullptr;
}

std::string SystemPrompt(const LanguageProfile& lang) {
  return absl::StrCat(
      "You are a careful software engineer writing ", lang.display,
      ". Think briefly about a plan, then answer with complete files only: every file in its own "
      "fenced code block whose info string names the file, like ```",
      lang.fence, " title=\"", lang.default_file,
      "\". Always give whole files, never fragments or diffs. Do not use the network.");
}

std::string AttemptPrompt(const anima::v1::SubmitRequest& spec, const LanguageProfile& lang,
                          int attempt, const Feedback* feedback) {
  std::string out = feedback == nullptr ? kFirstAttemptMarker : kRetryMarker;
  int max_attempts = spec.max_attempts() > 0 ? spec.max_attempts() : 3;
  absl::StrAppend(&out, " Attempt ", attempt, " of ", max_attempts, ".\n\nLanguage: ", lang.display,
                  "\n\nTask:\n", spec.task(), "\n");
  if (!spec.files().empty()) {
    out +=
        "\nThe workspace already holds these files (you may change them by writing them "
        "again in full):\n";
    for (const auto& [path, content] : spec.files()) AppendFence(&out, path, lang.fence, content);
  }
  if (!spec.tests().empty()) {
    absl::StrAppend(&out, "\nYour code must pass these tests, saved as ", lang.tests_file,
                    " (do not write that file yourself):\n");
    AppendFence(&out, lang.tests_file, lang.fence, spec.tests());
  } else {
    absl::StrAppend(&out, "\nNo tests were given: also write ", lang.tests_file,
                    " with tests that check the task",
                    lang.compiled ? " and a main() that returns non-zero on failure"
                                  : " (plain assert statements or test_ functions)",
                    ".\n");
  }
  if (lang.compiled) {
    absl::StrAppend(&out,
                    "\nEvery .cpp file in the workspace is compiled and linked together with "
                    "g++ -std=c++20; ",
                    spec.tests().empty() ? "" : "the tests have main(), so write none; ",
                    "put declarations in ", lang.default_file, ".\n");
  } else {
    absl::StrAppend(&out,
                    "\nThe tests run with python3 from the workspace directory; put the code in ",
                    lang.default_file, " unless the task names other files.\n");
  }
  if (feedback != nullptr) {
    absl::StrAppend(&out, "\nThe previous attempt failed while ", feedback->stage, ": ",
                    feedback->reason, "\n");
    if (!feedback->output.empty()) {
      absl::StrAppend(&out, "Output (the end of it):\n```text\n", feedback->output);
      if (feedback->output.back() != '\n') out.push_back('\n');
      out += "```\n";
    }
    if (!feedback->files.empty()) {
      out += "\nYour previous files were:\n";
      size_t budget = kMaxPreviousFilesBytes;
      for (const auto& [path, content] : feedback->files) {
        if (content.size() > budget) break;
        budget -= content.size();
        AppendFence(&out, path, lang.fence, content);
      }
    }
    out += "\nFix the problem and answer with the corrected complete files.\n";
  } else {
    out += "\nAnswer with the complete files.\n";
  }
  return out;
}

}  // namespace anima::selfcoding
