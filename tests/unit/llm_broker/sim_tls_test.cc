// The broker's providers over the simulator's TLS front with a test CA: certificate verification
// and SNI (the certificate is chosen by the name the client sends; the default one names another
// host, so only a correct SNI passes verification).
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/common/tls_front.h"
#include "services/llm_broker/gemini_provider.h"
#include "services/llm_broker/http_client.h"
#include "services/llm_broker/openai_provider.h"
#include "tools/llm_sim/gemini_api.h"
#include "tools/llm_sim/openai_api.h"
#include "tools/llm_sim/sim_server.h"

namespace anima::broker {
namespace {

using namespace std::chrono_literals;

class SimTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::filesystem::temp_directory_path() / ("anima-sim-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_ / "sni");
    std::string d = dir_.string();
    // A CA; "localhost" (in sni/, chosen by SNI) and a default certificate for another name.
    std::string script =
        "set -e; cd '" + d +
        "'; "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout ca.key -out ca.pem -days 3650 -subj '/CN=Anima Sim Test CA' "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign "
        ">/dev/null 2>&1; "
        "for leaf in sni/localhost:DNS:localhost default:DNS:default.example.test; do "
        "name=${leaf%%:*}; san=${leaf#*:}; "
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-keyout $name.key -out $name.csr -subj /CN=x >/dev/null 2>&1; "
        "printf 'subjectAltName=%s\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' "
        "$san > $name.ext; "
        "openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out $name.pem -days 3650 -extfile $name.ext >/dev/null 2>&1; "
        "rm $name.csr $name.ext; done";
    ok_ = std::system(script.c_str()) == 0;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_); }

  void SetUp() override {
    if (!ok_) GTEST_SKIP() << "openssl could not make the test certificates";
    auto config = std::make_shared<sim::SimConfig>();
    std::vector<std::unique_ptr<sim::ProviderApi>> apis;
    apis.push_back(std::make_unique<sim::OpenAiApi>(config));
    apis.push_back(std::make_unique<sim::GeminiApi>(config));
    sim::SimServerOptions options;
    options.port = 0;
    auto server =
        sim::SimServer::Start(options, std::move(apis), std::make_shared<prometheus::Registry>());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    common::TlsFrontOptions tls;
    tls.cert_file = (dir_ / "default.pem").string();
    tls.key_file = (dir_ / "default.key").string();
    auto sni = common::LoadSniCertDir((dir_ / "sni").string());
    ASSERT_TRUE(sni.ok());
    tls.sni_certs = *sni;
    tls.backend_port = server_->port();
    auto front = common::TlsFront::Start(tls);
    ASSERT_TRUE(front.ok()) << front.status();
    front_ = *std::move(front);
  }
  void TearDown() override {
    if (front_) front_->Stop();
    if (server_) server_->Stop();
  }

  std::optional<ProviderOutcome> Call(Provider& provider, bool stream) {
    ChatRequest request;
    request.model = provider.default_model();
    request.messages = {{"user", "Hello over TLS"}};
    request.stream = stream;
    std::mutex mu;
    std::condition_variable cv;
    std::optional<ProviderOutcome> out;
    ProviderSink sink;
    sink.on_done = [&](ProviderOutcome o) {
      std::lock_guard lock(mu);
      out = std::move(o);
      cv.notify_all();
    };
    provider.Start(request, sink);
    std::unique_lock lock(mu);
    EXPECT_TRUE(cv.wait_for(lock, 20s, [&] { return out.has_value(); }));
    return out;
  }

  std::string Base() const { return "https://localhost:" + std::to_string(front_->port()); }

  static inline std::filesystem::path dir_;
  static inline bool ok_ = false;
  std::unique_ptr<sim::SimServer> server_;
  std::unique_ptr<common::TlsFront> front_;
};

TEST_F(SimTlsTest, ProvidersVerifyTheSimulatorsCertificateChosenBySni) {
  HttpClientOptions http;
  http.ca_file = (dir_ / "ca.pem").string();
  auto client = *HttpClient::Create(http);
  OpenAiProviderOptions openai;
  openai.base_url = Base() + "/v1";
  openai.api_key = "k";
  OpenAiProvider openai_provider(openai, client);
  GeminiProviderOptions gemini;
  gemini.base_url = Base() + "/v1beta";
  gemini.api_key = "k";
  GeminiProvider gemini_provider(gemini, client);
  for (bool stream : {false, true}) {
    for (Provider* provider : std::vector<Provider*>{&openai_provider, &gemini_provider}) {
      auto out = Call(*provider, stream);
      ASSERT_TRUE(out.has_value());
      ASSERT_TRUE(std::holds_alternative<ChatResult>(*out))
          << provider->name() << ": " << std::get<ProviderError>(*out).message;
      EXPECT_FALSE(std::get<ChatResult>(*out).text.empty());
    }
  }
}

TEST_F(SimTlsTest, WithoutTheCaOrWithTheWrongNameVerificationFails) {
  OpenAiProviderOptions openai;
  openai.api_key = "k";
  {
    auto client = *HttpClient::Create({});  // the system bundle does not know the test CA
    openai.base_url = Base() + "/v1";
    OpenAiProvider provider(openai, client);
    auto out = Call(provider, false);
    ASSERT_TRUE(out && std::holds_alternative<ProviderError>(*out));
    EXPECT_EQ(std::get<ProviderError>(*out).code, "tls");
  }
  // By IP there is no SNI: the default certificate (another name) is served and rejected.
  HttpClientOptions http;
  http.ca_file = (dir_ / "ca.pem").string();
  auto client = *HttpClient::Create(http);
  openai.base_url = "https://127.0.0.1:" + std::to_string(front_->port()) + "/v1";
  OpenAiProvider provider(openai, client);
  auto out = Call(provider, false);
  ASSERT_TRUE(out && std::holds_alternative<ProviderError>(*out));
  EXPECT_EQ(std::get<ProviderError>(*out).code, "tls");
}

}  // namespace
}  // namespace anima::broker
