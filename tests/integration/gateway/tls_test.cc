// wss:// and https:// on the gateway's --tls-port, with a CA and certificate made for the test by
// the openssl CLI: the real anima-gateway in front of an in-process fake router, reached by the
// real anima-cli over wss:// and by curl over https://, with and without the CA.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/gateway/fake_router.h"
#include "tests/integration/harness/harness.h"

namespace anima::testing {
namespace {

// Runs a shell command; returns its exit status and puts its stdout in *out.
int RunShell(const std::string& command, std::string* out = nullptr) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) text.append(buf, n);
  int status = ::pclose(pipe);
  if (out != nullptr) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class GatewayTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("anima-gw-tls");
    std::ofstream(dir_ + "/leaf.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    std::string d = dir_;
    ASSERT_EQ(RunShell("cd " + d +
                       " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem"
                       " -days 2 -subj /CN=anima-test-ca 2>/dev/null"
                       " && openssl req -newkey rsa:2048 -nodes -keyout gw.key -out gw.csr"
                       " -subj /CN=localhost 2>/dev/null"
                       " && openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
                       " -out gw.pem -days 2 -extfile leaf.ext 2>/dev/null"),
              0);
    router_ = gateway::testing::FakeRouter::Start();
    ASSERT_NE(router_, nullptr);
    gateway_ = Process::Start(
        "anima-gateway",
        {"--port=0", "--metrics-port=0", "--tls-port=0", "--handshake-timeout-ms=1000",
         "--tls-cert=" + d + "/gw.pem", "--tls-key=" + d + "/gw.key",
         "--router=127.0.0.1:" + std::to_string(router_->port())});
    ASSERT_NE(gateway_, nullptr);
    ASSERT_GT(gateway_->port("https"), 0);
  }

  std::string Cli(const std::string& args, int* status) {
    std::string out;
    *status = RunShell(BinDir() + "/anima-cli --compact --timeout-ms=10000 --url wss://127.0.0.1:" +
                           std::to_string(gateway_->port("https")) + "/ " + args + " 2>&1",
                       &out);
    return out;
  }

  std::string dir_;
  std::unique_ptr<gateway::testing::FakeRouter> router_;
  std::unique_ptr<Process> gateway_;
};

TEST_F(GatewayTlsTest, WssWorksWithTheCaAndIsRefusedWithoutIt) {
  int status = 0;
  std::string out =
      Cli("--ca-file=" + dir_ + "/ca.pem send '{\"type\":\"ping\",\"id\":\"p\"}'", &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("\"type\":\"pong\""), std::string::npos) << out;

  out = Cli("--ca-file=" + dir_ + "/ca.pem chat hello", &status);
  EXPECT_EQ(status, 0) << out;

  // Without the CA the certificate does not verify: no connection, nothing sent.
  out = Cli("send '{\"type\":\"ping\"}'", &status);
  EXPECT_EQ(status, 4) << out;
}

TEST_F(GatewayTlsTest, HttpsServesTheSameRoutes) {
  std::string code;
  std::string url = "https://127.0.0.1:" + std::to_string(gateway_->port("https"));
  ASSERT_EQ(RunShell("curl -s -o /dev/null -w '%{http_code}' --cacert " + dir_ + "/ca.pem " + url +
                         "/healthz",
                     &code),
            0);
  EXPECT_EQ(code, "200");
  // Unverified: curl refuses (exit 60), the gateway serves nothing in the clear on this port.
  EXPECT_EQ(RunShell("curl -s -o /dev/null " + url + "/healthz"), 60);
  EXPECT_NE(RunShell("curl -s -o /dev/null http://127.0.0.1:" +
                     std::to_string(gateway_->port("https")) + "/healthz --max-time 5"),
            0);
}

TEST_F(GatewayTlsTest, ASilentClientIsDroppedAfterTheHandshakeTimeout) {
  // Opens TCP to the TLS port and never says anything: the gateway drops it after its
  // --handshake-timeout-ms (1 s here), well before the 10 s default would.
  EXPECT_EQ(RunShell("timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" +
                     std::to_string(gateway_->port("https")) + "; cat <&3 >/dev/null'"),
            0);
}

}  // namespace
}  // namespace anima::testing
