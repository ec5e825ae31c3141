// Runs the anima-cli binary against an in-process fake gateway and checks what a user sees:
// stdout, stderr and the exit code.
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/unit/bench/fake_servers.h"

namespace anima::cli {
namespace {

struct CliRun {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string Quote(const std::string& arg) {
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

CliRun RunCli(const std::vector<std::string>& args, const std::string& stdin_text = "") {
  const char* bin_dir = std::getenv("ANIMA_BIN_DIR");
  const std::string dir = ::testing::TempDir();
  const std::string in = dir + "/cli_in.txt", out = dir + "/cli_out.txt",
                    err = dir + "/cli_err.txt";
  std::ofstream(in) << stdin_text;
  std::string command = Quote(std::string(bin_dir ? bin_dir : "build/bin") + "/anima-cli");
  for (const auto& a : args) command += " " + Quote(a);
  command += " <" + in + " >" + out + " 2>" + err;
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(out), ReadFile(err)};
}

std::string CliPath() {
  const char* bin_dir = std::getenv("ANIMA_BIN_DIR");
  return std::string(bin_dir ? bin_dir : "build/bin") + "/anima-cli";
}

// Runs anima-cli on a pseudo-terminal `columns` wide: what a person at a terminal would see.
CliRun RunCliOnTerminal(const std::vector<std::string>& args, int columns) {
  winsize size{};
  size.ws_row = 24;
  size.ws_col = static_cast<unsigned short>(columns);
  int terminal = -1;
  const std::string path = CliPath();
  pid_t pid = ::forkpty(&terminal, nullptr, nullptr, &size);
  if (pid == 0) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("anima-cli"));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(path.c_str(), argv.data());
    ::_exit(127);
  }
  CliRun run;
  if (pid < 0) return run;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(terminal, buffer, sizeof buffer);
    if (n > 0) {
      run.out.append(buffer, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EIO once the child has exited and closed its side
    }
  }
  ::close(terminal);
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class CliBinaryTest : public ::testing::Test {
 protected:
  bench::testing::FakeGateway gateway_;
};

TEST_F(CliBinaryTest, ChatPrintsTheReplyAndASummary) {
  CliRun r = RunCli({"chat", "--url", gateway_.url(), "hello", "there"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "echo: hello there\n");
  EXPECT_NE(r.err.find("provider=openai model=gpt-4o-mini"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("usage=1+2=3"), std::string::npos) << r.err;
}

TEST_F(CliBinaryTest, StreamedChatPrintsTheDeltas) {
  CliRun r = RunCli({"chat", "--stream", "--url", gateway_.url(), "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "echo: hi\n");
}

TEST_F(CliBinaryTest, ChatErrorFrameExitsNonZeroWithTheCode) {
  CliRun r = RunCli({"chat", "--url", gateway_.url(), "please fail"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("error: rate_limited: slow"), std::string::npos) << r.err;
}

TEST_F(CliBinaryTest, InteractiveChatAnswersEveryLineUntilEof) {
  CliRun r = RunCli({"chat", "--url", gateway_.url()}, "one\n\ntwo\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "echo: one\necho: two\n");
  EXPECT_EQ(gateway_.chats(), 2);
}

TEST_F(CliBinaryTest, SendPrintsTheAnswerNotTheWelcomeOrBroadcasts) {
  CliRun r = RunCli({"send", "--compact", "--url", gateway_.url(), R"({"type":"ping","id":"p1"})"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"id\":\"p1\",\"type\":\"pong\"}\n");
}

TEST_F(CliBinaryTest, SendFromStdinWaitsForEveryTerminalFrame) {
  CliRun r = RunCli({"send", "--compact", "--url", gateway_.url(), "-"},
                    "{\"type\":\"ping\",\"id\":\"a\"}\n"
                    "{\"type\":\"chat\",\"id\":\"b\",\"message\":\"x\",\"stream\":true}\n"
                    "not json\n");
  EXPECT_EQ(r.exit_code, 1) << "an error frame answered one of them: " << r.err;
  EXPECT_NE(r.out.find(R"({"id":"a","type":"pong"})"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"("type":"chat_delta")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"("type":"chat_response")"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(R"("code":"invalid_json")"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("welcome"), std::string::npos) << r.out;
}

TEST_F(CliBinaryTest, SendAllPrintsBroadcastsUntilTheTimeout) {
  CliRun r = RunCli({"send", "--all", "--compact", "--verbose", "--timeout-ms", "2000", "--url",
                     gateway_.url(), R"({"type":"ping","id":"p"})"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("welcome"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("consciousness_state"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pong"), std::string::npos) << r.out;
}

TEST_F(CliBinaryTest, RawBinaryFrameEndsWithTheErrorItGets) {
  CliRun r = RunCli({"send", "--raw-binary", "--compact", "--url", gateway_.url(),
                     R"({"type":"ping","id":"b"})"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("invalid_message"), std::string::npos) << r.out;
}

TEST_F(CliBinaryTest, StatePrintsTheAnswer) {
  CliRun r = RunCli({"state", "--compact", "--url", gateway_.url()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"harmony\":1.0,\"id\":\"cli-state\",\"type\":\"consciousness_state\"}\n");
}

TEST_F(CliBinaryTest, StateIsATableUnlessJsonIsAskedFor) {
  CliRun table = RunCli({"state", "--url", gateway_.url()});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_TRUE(Has(table.out, "harmony 1.000")) << table.out;
  EXPECT_TRUE(Has(table.out, "MODULE  KIND  STATUS  IN FLIGHT  REQ/S  ERRORS  P95 MS  DETAIL\n"))
      << table.out;
  CliRun json = RunCli({"state", "--json", "--url", gateway_.url()});
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_TRUE(Has(json.out, "\"type\": \"consciousness_state\"")) << json.out;
}

TEST_F(CliBinaryTest, JobsListsThemAsATable) {
  CliRun r = RunCli({"jobs", "--url", gateway_.url()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "JOB       STATUS     ATTEMPTS  LANGUAGE  UPDATED              TASK\n"))
      << r.out;
  EXPECT_TRUE(Has(r.out,
                  "job-fake  succeeded         2  python    2026-12-01 10:01:00  "
                  "write f]0;pwned quickly\n"))
      << r.out;
  EXPECT_FALSE(Has(r.out, "\x1b")) << "a task's escapes are not printed";
  EXPECT_FALSE(Has(r.out, "PRINCIPAL"));

  CliRun all = RunCli({"jobs", "--all", "--url", gateway_.url()});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_TRUE(Has(all.out, "PRINCIPAL")) << all.out;
  EXPECT_TRUE(Has(all.out, "failed (tests failed after 3 attempts)")) << all.out;
  EXPECT_TRUE(Has(all.out, "alice")) << all.out;
  EXPECT_TRUE(Has(all.out, std::string(59, 'x') + "…\n")) << "long tasks are cut: " << all.out;

  CliRun none = RunCli({"jobs", "--status", "failed", "--url", gateway_.url()});
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, "no jobs\n");
  CliRun json = RunCli({"jobs", "--compact", "--url", gateway_.url()});
  EXPECT_TRUE(Has(json.out, "\"type\":\"self_coding_jobs\"")) << json.out;
  EXPECT_EQ(RunCli({"jobs", "extra", "--url", gateway_.url()}).exit_code, 2);
}

TEST_F(CliBinaryTest, ConnectionRefusedAndBadUsage) {
  int closed_port = 0;
  {
    bench::testing::FakeGateway other;
    closed_port = other.port();
  }
  CliRun refused =
      RunCli({"state", "--url", "ws://127.0.0.1:" + std::to_string(closed_port) + "/"});
  EXPECT_EQ(refused.exit_code, 4);
  EXPECT_NE(refused.err.find("connect"), std::string::npos) << refused.err;
  EXPECT_EQ(RunCli({"dance"}).exit_code, 2);
  EXPECT_EQ(RunCli({"state", "--url", "ftp://x/"}).exit_code, 2);
  EXPECT_EQ(RunCli({"--help"}).exit_code, 0);
}

TEST_F(CliBinaryTest, CodeWithoutATerminalPrintsALinePerEventThenWritesTheFiles) {
  const std::string dir = ::testing::TempDir() + "/code_plain";
  std::filesystem::remove_all(dir);
  const std::string out = dir + "/out";
  CliRun r = RunCli({"code", "--url", gateway_.url(), "--out", out, "write", "f"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "job job-fake accepted\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "   0%  queued: queued\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "  50%  retrying  attempt 1/3: 1 failed ]0;pwned[2J\n")) << r.out;
  EXPECT_TRUE(Has(r.out, " 100%  succeeded  attempt 2/3: done\n")) << r.out;
  EXPECT_FALSE(Has(r.out, "\x1b")) << "no escapes when stdout is not a terminal";
  EXPECT_FALSE(Has(r.out, "\r"));
  EXPECT_FALSE(Has(r.out, "\x07"));
  EXPECT_TRUE(Has(r.out, "succeeded after 2 attempts in 0:0")) << r.out;
  EXPECT_TRUE(Has(r.out, "tests 2 passed, 0 failed")) << r.out;
  EXPECT_EQ(ReadFile(out + "/solution.py"), "def f():\n    return 1\n");
  EXPECT_EQ(ReadFile(out + "/pkg/util.py"), "X = 1");
  // Paths the server sent that lead out of --out are refused, each said on stderr.
  EXPECT_FALSE(std::filesystem::exists(dir + "/escape.py"));
  EXPECT_TRUE(Has(r.err, "not written (not a plain relative path): ../escape.py")) << r.err;
  EXPECT_TRUE(Has(r.err, "not written (not a plain relative path): /etc/abs.py")) << r.err;
}

TEST_F(CliBinaryTest, CodeSendsTheTestsTheFilesAndTheLanguage) {
  const std::string dir = ::testing::TempDir() + "/code_inputs";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/ws/lib");
  std::ofstream(dir + "/tests.py") << "def test_x(): pass\n";
  std::ofstream(dir + "/ws/lib/a.py") << "A = 1\n";
  std::filesystem::create_symlink("/etc/passwd", dir + "/ws/passwd");
  CliRun r = RunCli({"code", "--verbose", "--url", gateway_.url(), "--tests", dir + "/tests.py",
                     "--files", dir + "/ws", "--language", "cpp", "--max-attempts", "2", "t"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // --verbose echoes the frame sent.
  EXPECT_TRUE(Has(r.err, R"("tests":"def test_x(): pass\n")")) << r.err;
  EXPECT_TRUE(Has(r.err, R"("files":{"lib/a.py":"A = 1\n"})")) << "no symlink followed: " << r.err;
  EXPECT_TRUE(Has(r.err, R"("language":"cpp")")) << r.err;
  EXPECT_TRUE(Has(r.err, R"("max_attempts":2)")) << r.err;
  EXPECT_TRUE(Has(r.out, "attempt 2/2")) << r.out;

  EXPECT_EQ(RunCli({"code", "--url", gateway_.url(), "--tests", dir + "/missing", "t"}).exit_code,
            2);
  EXPECT_EQ(RunCli({"code", "--url", gateway_.url(), "--files", dir + "/tests.py", "t"}).exit_code,
            2);
  EXPECT_EQ(RunCli({"code", "--url", gateway_.url()}).exit_code, 2);

  // --request: the fields of a frame in a file; a flag overrides its field.
  std::ofstream(dir + "/request.json")
      << R"({"type":"self_coding_request","id":"x","task":"from file","tests":"T","language":"python"})";
  CliRun from_file = RunCli({"code", "--verbose", "--url", gateway_.url(), "--request",
                             dir + "/request.json", "--language", "cpp"});
  EXPECT_EQ(from_file.exit_code, 0) << from_file.err;
  EXPECT_TRUE(Has(from_file.err, R"("task":"from file")")) << from_file.err;
  EXPECT_TRUE(Has(from_file.err, R"("tests":"T")")) << from_file.err;
  EXPECT_TRUE(Has(from_file.err, R"("language":"cpp")")) << from_file.err;
  EXPECT_TRUE(Has(from_file.err, R"("id":"code")")) << from_file.err;
  std::ofstream(dir + "/bad.json") << "[1,2";
  EXPECT_EQ(RunCli({"code", "--url", gateway_.url(), "--request", dir + "/bad.json"}).exit_code, 2);
}

TEST_F(CliBinaryTest, CodeThatFailsExitsOneWithTheReasonAndTheOutputTail) {
  CliRun r = RunCli({"code", "--url", gateway_.url(), "fail me"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(Has(r.out, "failed after 2 attempts")) << r.out;
  EXPECT_TRUE(Has(r.out, "reason: tests failed after 2 attempts")) << r.out;
  EXPECT_TRUE(Has(r.out, "E   assert 1 == 2")) << r.out;
}

TEST_F(CliBinaryTest, WatchGoesOnAfterTheLastEventSeen) {
  CliRun r = RunCli({"watch", "--url", gateway_.url(), "--after", "4", "job-fake"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(Has(r.out, "retrying")) << "event 4 was seen before: " << r.out;
  // A watch does not know the job's max_attempts: the attempt is shown alone.
  EXPECT_TRUE(Has(r.out, "  80%  testing  attempt 2: 2 tests\n")) << r.out;
  // Without --out the files are printed.
  EXPECT_TRUE(Has(r.out, "==> solution.py <==\ndef f():\n    return 1\n")) << r.out;

  CliRun unknown = RunCli({"watch", "--url", gateway_.url(), "job-nope"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_TRUE(Has(unknown.err, "not_found: no such job")) << unknown.err;
  EXPECT_EQ(RunCli({"watch", "--url", gateway_.url()}).exit_code, 2);
}

TEST_F(CliBinaryTest, CodeOnATerminalRedrawsOneBarInPlace) {
  CliRun r = RunCliOnTerminal({"code", "--url", gateway_.url(), "write", "f"}, 100);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  // The bar is redrawn at the start of the line and the rest of the line cleared.
  EXPECT_TRUE(Has(r.out, "\r[##########----------]  50%  retrying  attempt 1/3  0:0")) << r.out;
  EXPECT_TRUE(Has(r.out, "\r[####################] 100%  succeeded  attempt 2/3  0:0")) << r.out;
  EXPECT_TRUE(Has(r.out, "\x1b[K")) << r.out;
  // Only its own escape sequence reaches the terminal: the server's title and clear-screen do not.
  size_t escapes = 0, own = 0;
  for (size_t i = r.out.find('\x1b'); i != std::string::npos; i = r.out.find('\x1b', i + 1)) {
    ++escapes;
    own += r.out.compare(i, 3, "\x1b[K") == 0;
  }
  EXPECT_EQ(escapes, own) << r.out;
  EXPECT_FALSE(Has(r.out, "\x07"));
  // The bar is gone before the result is printed on a line of its own.
  EXPECT_TRUE(Has(r.out, "\r\x1b[Ksucceeded after 2 attempts")) << r.out;
  // Every bar fits the terminal's width (one column is left for the cursor).
  for (size_t i = r.out.find("\r["); i != std::string::npos; i = r.out.find("\r[", i + 1)) {
    std::string bar = r.out.substr(i + 1, r.out.find("\x1b[K", i) - i - 1);
    size_t columns = 0;
    for (char c : bar) columns += (c & 0xC0) != 0x80;
    EXPECT_LE(columns, 99u) << bar;
  }
}

}  // namespace
}  // namespace anima::cli
