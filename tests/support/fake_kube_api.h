#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace anima::broker {
class HttpClient;
}

namespace anima::testing {

struct FakeKubeApiOptions {
  // The bearer token it accepts (also written to token_file()).
  std::string token = "fake-sa-token-6f1d3c2b9a";
  // How long a new claim stays not Ready.
  int ready_delay_ms = 0;
  // Started for each claim ({ip}, {port}, {name} substituted), which becomes Ready once
  // {ip}:{runner_port} accepts connections. Empty: none.
  std::string runner_cmd;
  int runner_port = 7070;
  // Where the CA and the server certificate are made, or found when a previous fake made them
  // (saves the openssl runs). Empty: the fake's own directory.
  std::string tls_dir;
};

// tests/support/fake_kube_api.py (see its docstring: SandboxClaims over HTTPS, with behaviour
// knobs) run by python3 on a free port of 127.0.0.1, and its test hooks. Start() returns once it
// listens, or an error with the reason. The fake gets SIGTERM when the thread that started it
// exits (PR_SET_PDEATHSIG) and then stops the runners it started. Not thread-safe.
class FakeKubeApi {
 public:
  // The python3 to run it with ("" when there is none).
  static std::string Python();
  static absl::StatusOr<std::unique_ptr<FakeKubeApi>> Start(FakeKubeApiOptions options = {});
  // Makes a CA and a certificate in `dir` as the fake does (a CA no fake of another dir trusts).
  static absl::Status MakeTls(const std::string& dir);
  ~FakeKubeApi();  // stops the fake (and its runners) and removes its directory
  FakeKubeApi(const FakeKubeApi&) = delete;
  FakeKubeApi& operator=(const FakeKubeApi&) = delete;

  std::string url() const;  // https://127.0.0.1:<port>
  std::string ca_file() const;
  std::string token_file() const;
  const std::string& token() const { return options_.token; }
  const std::string& dir() const { return dir_; }

  // POST /_control (the knobs of fake_kube_api.py).
  absl::Status Control(const nlohmann::json& changes);
  // GET /_requests: the API requests received so far.
  absl::StatusOr<nlohmann::json> Requests();
  // GET /_claims: the claims it holds.
  absl::StatusOr<nlohmann::json> Claims();

 private:
  FakeKubeApi() = default;
  absl::StatusOr<nlohmann::json> Hook(const std::string& method, const std::string& path,
                                      const std::string& body);

  FakeKubeApiOptions options_;
  std::string dir_;
  std::string tls_dir_;
  int port_ = 0;
  int pid_ = -1;
  std::shared_ptr<broker::HttpClient> http_;
};

}  // namespace anima::testing
