// AgentSandboxClient against tests/support/fake_kube_api.py over real HTTPS.
#include "services/self_coding/agent_sandbox_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"
#include "tests/support/fake_kube_api.h"

namespace anima::selfcoding {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::FakeKubeApi;
using testing::FakeKubeApiOptions;

constexpr char kNamespace[] = "anima";
constexpr char kReplica[] = "anima-self-coding-0";
constexpr char kClaimsPath[] =
    "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/anima/sandboxclaims";

bool ValidLabelValue(const std::string& value) {
  static const std::regex pattern("^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$");
  return value.size() <= 63 && std::regex_match(value, pattern);
}

// Whether something accepts TCP connections at ip:port.
bool Accepts(const std::string& ip, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// The API requests the fake received with this method and path.
std::vector<json> RequestsTo(FakeKubeApi& fake, const std::string& method,
                             const std::string& path) {
  auto requests = fake.Requests();
  EXPECT_TRUE(requests.ok()) << requests.status();
  std::vector<json> out;
  if (!requests.ok()) return out;
  for (const json& r : *requests) {
    if (r["method"] == method && r["path"] == path) out.push_back(r);
  }
  return out;
}

std::set<std::string> ClaimNames(FakeKubeApi& fake) {
  auto claims = fake.Claims();
  EXPECT_TRUE(claims.ok()) << claims.status();
  std::set<std::string> names;
  if (!claims.ok()) return names;
  for (const json& c : *claims) names.insert(c["metadata"]["name"].get<std::string>());
  return names;
}

// Collects the `waiting` sentences of a Claim call.
struct Waiting {
  std::mutex mu;
  std::vector<std::string> said;
  std::function<void(const std::string&)> callback() {
    return [this](const std::string& s) {
      std::lock_guard lock(mu);
      said.push_back(s);
    };
  }
  std::string all() {
    std::lock_guard lock(mu);
    std::string out;
    for (const auto& s : said) out += s + "\n";
    return out;
  }
};

class AgentSandboxClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (FakeKubeApi::Python().empty()) return;
    suite_dir_ = new std::string(
        (fs::temp_directory_path() / ("anima-kube-test-" + std::to_string(getpid()))).string());
    // One CA for every fake of the suite (saves openssl runs), and one that signed nothing here.
    ASSERT_TRUE(FakeKubeApi::MakeTls(*suite_dir_ + "/tls").ok());
    ASSERT_TRUE(FakeKubeApi::MakeTls(*suite_dir_ + "/other-tls").ok());
  }
  static void TearDownTestSuite() {
    if (suite_dir_ == nullptr) return;
    std::error_code ignored;
    fs::remove_all(*suite_dir_, ignored);
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  void SetUp() override {
    if (FakeKubeApi::Python().empty()) GTEST_SKIP() << "python3 is missing";
    // Everything any logger says, at every level, to check that the token never shows.
    previous_logger_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::trace);
    spdlog::set_default_logger(logger);
  }

  void TearDown() override {
    if (previous_logger_ == nullptr) return;
    spdlog::set_default_logger(previous_logger_);
    if (fake_ != nullptr) {
      EXPECT_EQ(log_.str().find(fake_->token()), std::string::npos) << log_.str();
    }
  }

  void StartFake(FakeKubeApiOptions options = {}) {
    options.tls_dir = *suite_dir_ + "/tls";
    auto fake = FakeKubeApi::Start(std::move(options));
    ASSERT_TRUE(fake.ok()) << fake.status();
    fake_ = *std::move(fake);
  }

  AgentSandboxOptions Options() {
    AgentSandboxOptions options;
    options.api.url = fake_->url();
    options.api.token_file = fake_->token_file();
    options.api.ca_file = fake_->ca_file();
    options.api.namespace_name = kNamespace;
    options.warm_pool = "anima-runner-test";
    options.replica = kReplica;
    options.ready_timeout = std::chrono::seconds(10);
    options.poll_interval = std::chrono::milliseconds(20);
    return options;
  }

  std::unique_ptr<AgentSandboxClient> NewClient(AgentSandboxOptions options) {
    auto client = AgentSandboxClient::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  void Control(const json& changes) { ASSERT_TRUE(fake_->Control(changes).ok()); }

  // An error a user sees: never with the token in it.
  void ExpectNoToken(const absl::Status& status) {
    EXPECT_EQ(std::string(status.message()).find(fake_->token()), std::string::npos) << status;
  }

  static std::string* suite_dir_;
  std::shared_ptr<spdlog::logger> previous_logger_;
  std::ostringstream log_;
  std::unique_ptr<FakeKubeApi> fake_;
};

std::string* AgentSandboxClientTest::suite_dir_ = nullptr;

TEST_F(AgentSandboxClientTest, CreatesALabelledClaimForThePoolThatExpiresAfterMaxAge) {
  StartFake();
  auto options = Options();
  options.max_age = std::chrono::hours(2);
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  const std::string hostile_job =
      "Job/../../etc; rm -rf / \xe2\x98\x83 " + std::string(80, 'x') + "--";
  Waiting waiting;
  auto claim = client->Claim(hostile_job, nullptr, waiting.callback());
  ASSERT_TRUE(claim.ok()) << claim.status();
  EXPECT_TRUE(std::regex_match(claim->name, std::regex("^anima-[0-9a-f]{16}$"))) << claim->name;
  EXPECT_EQ(claim->pod_ip, "127.0.0.2");
  EXPECT_EQ(claim->sandbox_name, claim->name);
  EXPECT_TRUE(client->last_error().ok());
  ASSERT_FALSE(waiting.said.empty());
  EXPECT_EQ(waiting.said[0], "waiting for a sandbox pod (claim " + claim->name + ")");

  auto posts = RequestsTo(*fake_, "POST", kClaimsPath);
  ASSERT_EQ(posts.size(), 1u);
  const json& post = posts[0];
  EXPECT_TRUE(post["auth_ok"]);
  EXPECT_EQ(post["accept"], "application/json");
  EXPECT_EQ(post["content_type"], "application/json");
  const json& body = post["body"];
  EXPECT_EQ(body["apiVersion"], "extensions.agents.x-k8s.io/v1beta1");
  EXPECT_EQ(body["kind"], "SandboxClaim");
  EXPECT_EQ(body["metadata"]["name"], claim->name);
  EXPECT_EQ(body["spec"]["warmPoolRef"]["name"], "anima-runner-test");
  EXPECT_EQ(body["spec"]["lifecycle"]["shutdownPolicy"], "Delete");
  absl::Time shutdown;
  std::string error;
  ASSERT_TRUE(absl::ParseTime(absl::RFC3339_full,
                              body["spec"]["lifecycle"]["shutdownTime"].get<std::string>(),
                              &shutdown, &error))
      << error;
  EXPECT_LT(absl::AbsDuration(shutdown - (absl::Now() + absl::Hours(2))), absl::Minutes(2));

  const json& labels = body["metadata"]["labels"];
  EXPECT_EQ(labels["app.kubernetes.io/managed-by"], "anima-self-coding");
  EXPECT_EQ(labels["anima.dev/replica"], kReplica);
  std::string job_label = labels["anima.dev/job"];
  EXPECT_TRUE(ValidLabelValue(job_label)) << job_label;
  EXPECT_EQ(job_label.rfind("Job", 0), 0u) << job_label;  // still recognisable

  // The capturing sink works: the claim's name was logged (and the token, checked in TearDown,
  // was not).
  EXPECT_NE(log_.str().find(claim->name), std::string::npos) << log_.str();
}

TEST_F(AgentSandboxClientTest, WaitsUntilTheClaimIsReadyWithAPodIp) {
  FakeKubeApiOptions fake_options;
  fake_options.ready_delay_ms = 600000;
  StartFake(fake_options);
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  Waiting waiting;
  std::promise<void> told_not_ready;
  std::once_flag once;
  auto result = std::async(std::launch::async, [&] {
    return client->Claim("job-1", nullptr, [&](const std::string& s) {
      waiting.callback()(s);
      if (s.find("NotReady") != std::string::npos) {
        std::call_once(once, [&] { told_not_ready.set_value(); });
      }
    });
  });
  // Not Ready yet: still waiting. Then the pod comes up.
  told_not_ready.get_future().wait();
  EXPECT_NE(result.wait_for(std::chrono::milliseconds(100)), std::future_status::ready);
  Control({{"ready_delay_ms", 0}});
  auto claim = result.get();
  ASSERT_TRUE(claim.ok()) << claim.status();
  EXPECT_EQ(claim->pod_ip, "127.0.0.2");
  // It polled while the claim was not Ready, and said so once (not once per poll).
  auto gets = RequestsTo(*fake_, "GET", std::string(kClaimsPath) + "/" + claim->name);
  EXPECT_GE(gets.size(), 2u);
  EXPECT_EQ(waiting.said.size(), 2u) << waiting.all();
  EXPECT_NE(
      waiting.all().find("(claim " + claim->name + "): DependenciesNotReady: Pod is not Ready"),
      std::string::npos)
      << waiting.all();
  EXPECT_TRUE(RequestsTo(*fake_, "DELETE", std::string(kClaimsPath) + "/" + claim->name).empty());
  EXPECT_EQ(ClaimNames(*fake_), std::set<std::string>{claim->name});
}

TEST_F(AgentSandboxClientTest, TimeoutIsDeadlineExceededAndDeletesTheClaim) {
  StartFake();
  Control({{"never_ready", {{"reason", "SandboxNotReady"}, {"message", "0 of 2 warm pods free"}}}});
  auto options = Options();
  options.ready_timeout = std::chrono::milliseconds(300);
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  Waiting waiting;
  auto claim = client->Claim("job-1", nullptr, waiting.callback());
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kDeadlineExceeded) << claim.status();
  EXPECT_NE(claim.status().message().find("SandboxNotReady: 0 of 2 warm pods free"),
            std::string::npos)
      << claim.status();
  EXPECT_NE(waiting.all().find("SandboxNotReady: 0 of 2 warm pods free"), std::string::npos)
      << waiting.all();
  auto posts = RequestsTo(*fake_, "POST", kClaimsPath);
  ASSERT_EQ(posts.size(), 1u);
  std::string name = posts[0]["body"]["metadata"]["name"];
  EXPECT_NE(claim.status().message().find(name), std::string::npos) << claim.status();
  auto deletes = RequestsTo(*fake_, "DELETE", std::string(kClaimsPath) + "/" + name);
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(deletes[0]["body"]["propagationPolicy"], "Foreground");
  EXPECT_EQ(deletes[0]["body"]["kind"], "DeleteOptions");
  EXPECT_TRUE(ClaimNames(*fake_).empty());
  // A pool without a free pod is not trouble with the API.
  EXPECT_TRUE(client->last_error().ok()) << client->last_error();
}

TEST_F(AgentSandboxClientTest, CancellationStopsTheWaitAndDeletesTheClaim) {
  StartFake();
  Control({{"never_ready", {{"reason", "SandboxNotReady"}, {"message", "pool empty"}}}});
  auto options = Options();
  // Without a prompt wake-up the wait would sleep through this poll interval.
  options.poll_interval = std::chrono::minutes(5);
  options.ready_timeout = std::chrono::minutes(10);
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  CancelToken cancel;
  std::promise<void> told_not_ready;
  std::once_flag once;
  auto result = std::async(std::launch::async, [&] {
    return client->Claim("job-1", &cancel, [&](const std::string& s) {
      if (s.find("SandboxNotReady") != std::string::npos) {
        std::call_once(once, [&] { told_not_ready.set_value(); });
      }
    });
  });
  told_not_ready.get_future().wait();
  cancel.Cancel();
  // A hang guard far above any run's wait, not a timing claim.
  ASSERT_EQ(result.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto claim = result.get();
  EXPECT_EQ(claim.status().code(), absl::StatusCode::kCancelled) << claim.status();
  EXPECT_EQ(RequestsTo(*fake_, "POST", kClaimsPath).size(), 1u);
  EXPECT_TRUE(ClaimNames(*fake_).empty());

  // Cancelled before it starts: no claim is left either.
  auto again = client->Claim("job-2", &cancel, nullptr);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kCancelled) << again.status();
  EXPECT_EQ(RequestsTo(*fake_, "POST", kClaimsPath).size(), 1u);
  EXPECT_TRUE(ClaimNames(*fake_).empty());
}

TEST_F(AgentSandboxClientTest, ConflictOnCreateIsRetriedWithANewName) {
  StartFake();
  Control({{"fail_creates", {{"count", 2}, {"status", 409}}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_TRUE(claim.ok()) << claim.status();
  auto posts = RequestsTo(*fake_, "POST", kClaimsPath);
  ASSERT_EQ(posts.size(), 3u);
  std::set<std::string> names;
  for (const json& post : posts) names.insert(post["body"]["metadata"]["name"].get<std::string>());
  EXPECT_EQ(names.size(), 3u);
  EXPECT_EQ(posts[2]["body"]["metadata"]["name"], claim->name);
  EXPECT_EQ(ClaimNames(*fake_), std::set<std::string>{claim->name});
}

TEST_F(AgentSandboxClientTest, ConflictsWithoutEndAreAlreadyExists) {
  StartFake();
  Control({{"fail_creates", {{"count", 100}, {"status", 409}}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  EXPECT_EQ(claim.status().code(), absl::StatusCode::kAlreadyExists) << claim.status();
  EXPECT_NE(claim.status().message().find("HTTP 409 AlreadyExists"), std::string::npos)
      << claim.status();
  EXPECT_EQ(RequestsTo(*fake_, "POST", kClaimsPath).size(), 4u);  // the first and 3 retries
}

TEST_F(AgentSandboxClientTest, ServerErrorIsUnavailableWithTheStatusMessage) {
  StartFake();
  Control({{"fail_creates", {{"count", 1}, {"status", 500}}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kUnavailable) << claim.status();
  EXPECT_NE(claim.status().message().find("HTTP 500 InternalError"), std::string::npos)
      << claim.status();
  EXPECT_NE(claim.status().message().find("etcdserver: request timed out"), std::string::npos)
      << claim.status();
  EXPECT_EQ(client->last_error().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(ClaimNames(*fake_).empty());

  // The next call works, and last_error says so.
  ASSERT_TRUE(client->Claim("job-2", nullptr, nullptr).ok());
  EXPECT_TRUE(client->last_error().ok()) << client->last_error();
}

TEST_F(AgentSandboxClientTest, RejectedTokenIsPermissionDeniedWithoutTheToken) {
  StartFake();
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  // The API server stops accepting this token (revoked, or the service account was replaced).
  Control({{"token", "another-token-entirely"}});
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kPermissionDenied) << claim.status();
  std::string message(claim.status().message());
  EXPECT_NE(message.find("HTTP 401"), std::string::npos) << message;
  EXPECT_NE(message.find("may not create sandboxclaims in namespace anima"), std::string::npos)
      << message;
  ExpectNoToken(claim.status());
  ExpectNoToken(client->last_error());
  auto posts = RequestsTo(*fake_, "POST", kClaimsPath);
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_TRUE(posts[0]["auth"]);
}

TEST_F(AgentSandboxClientTest, RbacRefusalIsPermissionDenied) {
  StartFake();
  Control({{"forbidden_namespaces", {kNamespace}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kPermissionDenied) << claim.status();
  EXPECT_NE(claim.status().message().find("HTTP 403 Forbidden"), std::string::npos)
      << claim.status();
  EXPECT_NE(claim.status().message().find("cannot create resource \"sandboxclaims\""),
            std::string::npos)
      << claim.status();
  auto orphans = client->DeleteOrphans(true);
  EXPECT_EQ(orphans.status().code(), absl::StatusCode::kPermissionDenied) << orphans.status();
  EXPECT_NE(orphans.status().message().find("may not list"), std::string::npos) << orphans.status();
}

TEST_F(AgentSandboxClientTest, MissingAgentSandboxIsFailedPrecondition) {
  StartFake();
  Control({{"crd_installed", false}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kFailedPrecondition) << claim.status();
  EXPECT_NE(claim.status().message().find(
                "Agent Sandbox is not installed (no sandboxclaims.extensions.agents.x-k8s.io)"),
            std::string::npos)
      << claim.status();
  EXPECT_NE(claim.status().message().find("HTTP 404"), std::string::npos) << claim.status();
  EXPECT_EQ(client->DeleteOrphans(false).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(AgentSandboxClientTest, MissingNamespaceIsFailedPrecondition) {
  StartFake();
  Control({{"missing_namespaces", {kNamespace}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kFailedPrecondition) << claim.status();
  EXPECT_NE(claim.status().message().find("namespace anima does not exist"), std::string::npos)
      << claim.status();
}

TEST_F(AgentSandboxClientTest, ApiServerBlipsWhileWaitingAreRidden) {
  StartFake();
  Control({{"fail_gets", {{"count", 2}, {"status", 503}}}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_TRUE(claim.ok()) << claim.status();
  EXPECT_EQ(RequestsTo(*fake_, "GET", std::string(kClaimsPath) + "/" + claim->name).size(), 3u);
  EXPECT_TRUE(client->last_error().ok()) << client->last_error();
}

TEST_F(AgentSandboxClientTest, ApiServerErrorsThroughoutTheWaitTimeOutNamingThem) {
  StartFake();
  Control({{"fail_gets", {{"count", 1000000}, {"status", 503}}}});
  auto options = Options();
  options.ready_timeout = std::chrono::milliseconds(300);
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kDeadlineExceeded) << claim.status();
  EXPECT_NE(claim.status().message().find("HTTP 503 ServiceUnavailable"), std::string::npos)
      << claim.status();
  EXPECT_EQ(client->last_error().code(), absl::StatusCode::kUnavailable) << client->last_error();
  EXPECT_TRUE(ClaimNames(*fake_).empty());
}

TEST_F(AgentSandboxClientTest, ClaimVanishingWhileWaitingIsUnavailable) {
  StartFake();
  Control({{"never_ready", {{"reason", "SandboxNotReady"}, {"message", "pending"}}},
           {"vanish_after_ms", 150}});
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kUnavailable) << claim.status();
  EXPECT_NE(claim.status().message().find("disappeared"), std::string::npos) << claim.status();
}

TEST_F(AgentSandboxClientTest, ReleaseDeletesAndAGoneClaimIsFine) {
  StartFake();
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_TRUE(claim.ok()) << claim.status();
  EXPECT_TRUE(client->Release(claim->name).ok());
  EXPECT_TRUE(ClaimNames(*fake_).empty());
  auto deletes = RequestsTo(*fake_, "DELETE", std::string(kClaimsPath) + "/" + claim->name);
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(deletes[0]["body"]["propagationPolicy"], "Foreground");
  // Again, and one that never existed: both already gone.
  EXPECT_TRUE(client->Release(claim->name).ok());
  EXPECT_TRUE(client->Release("anima-0000000000000000").ok());
  EXPECT_TRUE(client->last_error().ok());
}

TEST_F(AgentSandboxClientTest, DeleteOrphansTakesOldOnesAndThisReplicasOnly) {
  StartFake();
  auto labels = [](const std::string& replica) {
    return json{{"app.kubernetes.io/managed-by", "anima-self-coding"},
                {"anima.dev/replica", replica}};
  };
  auto seed = [&](const std::string& name, json claim_labels, int age_seconds,
                  const std::string& ns = kNamespace) {
    Control({{"add_claim",
              {{"namespace", ns},
               {"name", name},
               {"labels", std::move(claim_labels)},
               {"age_seconds", age_seconds}}}});
  };
  seed("old-other", labels("anima-self-coding-1"), 7200);
  seed("young-own", labels(kReplica), 10);
  seed("young-other", labels("anima-self-coding-1"), 10);
  seed("old-unmanaged", json{{"anima.dev/replica", kReplica}}, 7200);
  seed("old-elsewhere", labels(kReplica), 7200, "other-namespace");
  auto options = Options();
  options.max_age = std::chrono::hours(1);
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);

  auto deleted = client->DeleteOrphans(/*include_own=*/true);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 2);
  EXPECT_EQ(ClaimNames(*fake_),
            (std::set<std::string>{"young-other", "old-unmanaged", "old-elsewhere"}));
  auto lists = RequestsTo(*fake_, "GET", kClaimsPath);
  ASSERT_EQ(lists.size(), 1u);
  EXPECT_EQ(lists[0]["query"]["labelSelector"][0],
            "app.kubernetes.io/managed-by=anima-self-coding");

  // While running, this replica's own claims are in use: only the old one goes.
  seed("old-other-2", labels("anima-self-coding-2"), 4000);
  seed("young-own-2", labels(kReplica), 10);
  deleted = client->DeleteOrphans(/*include_own=*/false);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 1);
  EXPECT_EQ(ClaimNames(*fake_), (std::set<std::string>{"young-other", "old-unmanaged",
                                                       "old-elsewhere", "young-own-2"}));
}

TEST_F(AgentSandboxClientTest, RotatedTokenIsReadAgain) {
  StartFake();
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->DeleteOrphans(false).ok());
  // The kubelet writes a fresh token; the API server no longer takes the old one.
  const std::string rotated = "rotated-token-" + std::to_string(getpid());
  Control({{"token", rotated}});
  auto before = fs::last_write_time(fake_->token_file());
  {
    std::ofstream out(fake_->token_file(), std::ios::trunc);
    out << rotated << "\n";
  }
  fs::last_write_time(fake_->token_file(), before + std::chrono::seconds(2));
  auto deleted = client->DeleteOrphans(false);
  EXPECT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(log_.str().find(rotated), std::string::npos);
}

TEST_F(AgentSandboxClientTest, UntrustedCertificateIsUnavailableNamingTls) {
  StartFake();
  auto options = Options();
  options.api.ca_file = *suite_dir_ + "/other-tls/ca.crt";
  auto client = NewClient(options);
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_EQ(claim.status().code(), absl::StatusCode::kUnavailable) << claim.status();
  std::string message(claim.status().message());
  EXPECT_TRUE(message.find("TLS") != std::string::npos ||
              message.find("certificate") != std::string::npos)
      << message;
  ExpectNoToken(claim.status());
  // Nothing reached the API (the handshake failed before any request).
  auto requests = fake_->Requests();
  ASSERT_TRUE(requests.ok());
  EXPECT_TRUE(requests->empty()) << requests->dump();
}

TEST_F(AgentSandboxClientTest, ClaimsPodsThatRunTheRunner) {
  const int port = FreePort();
  // A stand-in for anima-sandbox-runner: listens on the pod IP the claim got.
  std::string runner = FakeKubeApi::Python() +
                       " -c 'import socket, sys, time; s = socket.socket(); "
                       "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); time.sleep(600)' "
                       "{ip} {port}";
  FakeKubeApiOptions fake_options;
  fake_options.runner_cmd = runner;
  fake_options.runner_port = port;
  StartFake(fake_options);
  auto client = NewClient(Options());
  ASSERT_NE(client, nullptr);
  auto claim = client->Claim("job-1", nullptr, nullptr);
  ASSERT_TRUE(claim.ok()) << claim.status();
  EXPECT_TRUE(Accepts(claim->pod_ip, port)) << claim->pod_ip;
  ASSERT_TRUE(client->Release(claim->name).ok());
  // The fake stopped the runner with the claim (it waits for the process to exit).
  EXPECT_FALSE(Accepts(claim->pod_ip, port));
}

TEST_F(AgentSandboxClientTest, CreateRefusesBadOptions) {
  StartFake();
  auto options = Options();
  options.api.url = "http://127.0.0.1:6443";
  EXPECT_EQ(AgentSandboxClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options();
  options.api.namespace_name = "../kube-system";
  EXPECT_EQ(AgentSandboxClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options();
  options.replica = "";
  EXPECT_EQ(AgentSandboxClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = Options();
  options.api.token_file = fake_->dir() + "/no-such-token";
  auto missing = AgentSandboxClient::Create(options);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("no-such-token"), std::string::npos)
      << missing.status();
}

// Sets (or with nullptr unsets) an environment variable for the scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(InClusterApiTest, SaysWhatIsMissing) {
  {
    ScopedEnv host("KUBERNETES_SERVICE_HOST", nullptr);
    ScopedEnv port("KUBERNETES_SERVICE_PORT", nullptr);
    auto api = InClusterApi();
    ASSERT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(api.status().message().find("KUBERNETES_SERVICE_HOST"), std::string::npos)
        << api.status();
  }
  ScopedEnv host("KUBERNETES_SERVICE_HOST", "fd00:10:96::1");
  ScopedEnv port("KUBERNETES_SERVICE_PORT", "443");
  fs::path dir = fs::temp_directory_path() / ("anima-sa-test-" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto api = InClusterApi(dir.string());
  ASSERT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(api.status().message().find("token"), std::string::npos) << api.status();
  EXPECT_NE(api.status().message().find("automountServiceAccountToken"), std::string::npos)
      << api.status();

  std::ofstream(dir / "token") << "t";
  std::ofstream(dir / "ca.crt") << "pem";
  api = InClusterApi(dir.string());
  ASSERT_EQ(api.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(api.status().message().find("namespace"), std::string::npos) << api.status();

  std::ofstream(dir / "namespace") << "team-a\n";
  api = InClusterApi(dir.string());
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_EQ(api->url, "https://[fd00:10:96::1]:443");
  EXPECT_EQ(api->namespace_name, "team-a");
  EXPECT_EQ(api->token_file, (dir / "token").string());
  EXPECT_EQ(api->ca_file, (dir / "ca.crt").string());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace anima::selfcoding
