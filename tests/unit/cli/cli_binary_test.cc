// Runs the anima-cli binary against an in-process fake gateway and checks what a user sees:
// stdout, stderr and the exit code.
#include <sys/wait.h>

#include <cstdlib>
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

}  // namespace
}  // namespace anima::cli
