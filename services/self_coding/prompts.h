#pragma once

#include <map>
#include <string>

#include "anima/v1/self_coding.pb.h"

namespace anima::selfcoding {

// What a language needs: the file the tests live in, the file a lone unnamed block becomes, and
// how the prompt describes them.
struct LanguageProfile {
  std::string name;          // python, cpp
  std::string display;       // "Python 3", "C++20"
  std::string tests_file;    // test_main.py, test_main.cpp
  std::string default_file;  // solution.py, solution.h
  std::string fence;         // python, cpp
  bool compiled = false;
};

// Null for an unsupported language; "" means python.
const LanguageProfile* FindLanguage(const std::string& language);

// Why the previous attempt failed, for the retry prompt.
struct Feedback {
  std::string stage;                         // generating, writing, building, testing
  std::string reason;                        // one line
  std::string output;                        // the tail of the compiler or test output
  std::map<std::string, std::string> files;  // what the model wrote last time
};

// The system prompt: whole files, fenced, each with its path.
std::string SystemPrompt(const LanguageProfile& lang);

// The user message of an attempt. The first attempt starts with kFirstAttemptMarker, retries with
// kRetryMarker (the simulator's rules and the docs rely on both phrases).
std::string AttemptPrompt(const anima::v1::SubmitRequest& spec, const LanguageProfile& lang,
                          int attempt, const Feedback* feedback);

inline constexpr char kFirstAttemptMarker[] = "Self-coding task, first attempt.";
inline constexpr char kRetryMarker[] = "Self-coding task, retry: the previous attempt failed.";

}  // namespace anima::selfcoding
