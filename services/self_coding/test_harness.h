#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace anima::selfcoding {

// How test results get from a sandboxed run to the pipeline without the code under test being
// able to claim a pass. The harness (the Python runner, or a main() wrapper linked into the C++
// test binary) reads a per-run nonce from stdin before any workspace code runs, so that code
// cannot find it in argv, the environment or a file; after the tests it writes one line with the
// nonce to fd 3 (SandboxCommand::report), never to stdout. A run without that line (the code
// printed "passed" itself, called exit() or os._exit() mid-way, or wrote a line with another
// nonce) did not pass, whatever its exit status. Code that reads the harness's own memory could
// still forge it: this stops a model that games the result, not a deliberate exploit, which the
// sandbox contains instead.

inline constexpr char kPythonHarnessFile[] = "_anima_run_tests.py";
inline constexpr char kCppHarnessFile[] = "_anima_harness.cpp";
inline constexpr char kCppTestBinary[] = "test_main";

// The files the harness needs in the workspace, by language: {path, content}.
std::vector<std::pair<std::string, std::string>> HarnessFiles(bool compiled);
// Whether the model or the caller may not write `path` (the harness's own files).
bool IsHarnessFile(std::string_view path);
// Compiles `sources` (workspace-relative) and the harness into kCppTestBinary.
std::vector<std::string> CppBuildCommand(const std::vector<std::string>& sources);
// Runs the tests.
std::vector<std::string> TestCommand(bool compiled);

// 128 random bits as hex, from the kernel's generator.
std::string NewNonce();

struct ReportedResult {
  int passed = 0;
  int failed = 0;
  std::optional<int> exit_code;  // C++: what the tests' main() returned
};

// The result line carrying `nonce` in what the run wrote to fd 3, if there is one.
std::optional<ReportedResult> ParseReport(std::string_view report, std::string_view nonce);

}  // namespace anima::selfcoding
