#include "services/self_coding/test_harness.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/common/identity.h"

namespace anima::selfcoding {
namespace {

// Runs the tests module and counts: test_* functions without parameters, unittest cases, and the
// module's own top-level asserts (one test when there is nothing else). Started with `python3 -I`,
// so nothing of the workspace is on sys.path until the nonce has been read.
constexpr char kPythonRunner[] = R"py(import os, sys
_nonce = sys.stdin.readline().strip()
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.close(_devnull)
_write, _report = os.write, 3
os.set_inheritable(_report, False)


def _finish(passed, failed):
    print("ANIMA_TESTS passed=%d failed=%d" % (passed, failed))
    sys.stdout.flush()
    _write(_report, ("ANIMA_RESULT %s passed=%d failed=%d\n" % (_nonce, passed, failed)).encode())
    sys.exit(1 if failed else 0)


import importlib.util, inspect, traceback, unittest
sys.path.insert(0, ".")
passed = failed = 0
spec = importlib.util.spec_from_file_location("test_main", "test_main.py")
mod = importlib.util.module_from_spec(spec)
sys.modules["test_main"] = mod
try:
    spec.loader.exec_module(mod)
except BaseException:
    traceback.print_exc()
    _finish(0, 1)
for name, fn in list(vars(mod).items()):
    if not name.startswith("test") or not inspect.isfunction(fn):
        continue
    try:
        required = [p for p in inspect.signature(fn).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        required = []
    if required:
        continue
    try:
        fn()
        passed += 1
        print("PASS", name)
    except BaseException:
        failed += 1
        print("FAIL", name)
        traceback.print_exc()
suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
if suite.countTestCases():
    r = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    bad = len(r.failures) + len(r.errors)
    failed += bad
    passed += r.testsRun - bad
if passed + failed == 0:
    passed = 1
_finish(passed, failed)
)py";

// Linked with -Wl,--wrap=main: the startup code calls __wrap_main, which calls the tests' main()
// and reports what it returned. The nonce is read by a constructor of priority 101, which runs
// before the static initialisers of the workspace's code.
constexpr char kCppHarness[] = R"cpp(#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

                                     namespace {
                                     char nonce[80];

                                     __attribute__((constructor(101))) void AnimaReadNonce() {
                                       unsigned n = 0;
                                       char c;
                                       while (n + 1 < sizeof(nonce) && read(0, &c, 1) == 1 && c != '\n') nonce[n++] = c;
                                       nonce[n] = 0;
                                       int devnull = open("/dev/null", O_RDONLY);
                                       if (devnull >= 0) {
                                         dup2(devnull, 0);
                                         close(devnull);
                                       }
                                       fcntl(3, F_SETFD, FD_CLOEXEC);
                                     }
                                     }  // namespace

                                     extern "C" int __real_main(int, char**, char**);
                                     extern "C" int __wrap_main(int argc, char** argv, char** envp) {
                                       int rc = __real_main(argc, argv, envp);
                                       std::fflush(nullptr);
                                       char line[160];
                                       int len = std::snprintf(line, sizeof(line), "ANIMA_RESULT %s exit=%d\n", nonce, rc);
                                       if (len > 0 && write(3, line, static_cast<size_t>(len)) < 0) return 125;
                                       return rc;
                                     }
)cpp";

}  // namespace

std::vector<std::pair<std::string, std::string>> HarnessFiles(bool compiled) {
  if (compiled) return {{kCppHarnessFile, kCppHarness}};
  return {{kPythonHarnessFile, kPythonRunner}};
}

bool IsHarnessFile(std::string_view path) {
  return path == kPythonHarnessFile || path == kCppHarnessFile;
}

std::vector<std::string> CppBuildCommand(const std::vector<std::string>& sources) {
  std::vector<std::string> argv = {"g++",          "-std=c++20",      "-O1",          "-Wall", "-o",
                                   kCppTestBinary, "-Wl,--wrap=main", kCppHarnessFile};
  argv.insert(argv.end(), sources.begin(), sources.end());
  return argv;
}

std::vector<std::string> TestCommand(bool compiled) {
  if (compiled) return {std::string("./") + kCppTestBinary};
  // -I: no script directory or user site on sys.path, no PYTHON* variables; -u -B as -I ignores
  // PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE.
  return {"python3", "-I", "-u", "-B", kPythonHarnessFile};
}

std::string NewNonce() { return common::RandomHex(16); }

std::optional<ReportedResult> ParseReport(std::string_view report_view,
                                          std::string_view nonce_view) {
  absl::string_view report(report_view.data(), report_view.size());
  absl::string_view nonce(nonce_view.data(), nonce_view.size());
  if (nonce.empty()) return std::nullopt;
  for (absl::string_view line : absl::StrSplit(report, '\n')) {
    if (!absl::ConsumePrefix(&line, "ANIMA_RESULT ") || !absl::ConsumePrefix(&line, nonce) ||
        !absl::ConsumePrefix(&line, " ")) {
      continue;
    }
    ReportedResult result;
    bool valid = true;
    for (absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      int value = 0;
      std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(field, '=');
      if (!absl::SimpleAtoi(kv.second, &value)) {
        valid = false;
      } else if (kv.first == "passed") {
        result.passed = value;
      } else if (kv.first == "failed") {
        result.failed = value;
      } else if (kv.first == "exit") {
        result.exit_code = value;
      }
    }
    if (valid) return result;
  }
  return std::nullopt;
}

}  // namespace anima::selfcoding
