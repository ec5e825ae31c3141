// Self-coding through anima-sandbox-runner, as on Kubernetes but on this machine: the real
// self-coding binary drives real runner binaries over gRPC, the runners started inside bubblewrap
// per attempt (--sandbox=runner-bwrap), at a fixed address (--sandbox=runner), or claimed from a
// fake Kubernetes API server that starts one per SandboxClaim (--sandbox=agent-sandbox). The
// model is the simulator behind the real broker.
#include <dirent.h>
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <fstream>
#include <set>
#include <thread>
#include <tuple>

#include "anima/v1/introspection.grpc.pb.h"
#include "anima/v1/self_coding.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/harness/harness.h"
#include "tests/integration/harness/system.h"
#include "tests/support/fake_kube_api.h"

namespace anima::testing {
namespace {

using nlohmann::json;

// The demo (fails once, then passes) plus tasks whose code games the result or hangs.
constexpr char kExtraRules[] = R"([
  {"match": "/Task:\\s+Forge task:/", "reply":
   "```python title=\"solution.py\"\nimport os\nprint('3 passed, 0 failed')\nos._exit(0)\n```\n"},
  {"match": "/Task:\\s+Hang task:/", "reply":
   "```python title=\"solution.py\"\nimport time\ntime.sleep(60)\ndef f():\n    return 1\n```\n"}
])";

std::string WriteRules() {
  json rules = json::parse(std::ifstream(SourceDir() + "/tests/testdata/self_coding_rules.json"));
  for (auto& rule : json::parse(kExtraRules)) rules["rules"].push_back(rule);
  std::string path = MakeTempDir("anima-runner-rules") + "/rules.json";
  std::ofstream(path) << rules.dump();
  return path;
}

anima::v1::SubmitRequest Demo() {
  json demo = json::parse(std::ifstream(SourceDir() + "/docs/examples/self-coding-demo.json"));
  anima::v1::SubmitRequest spec;
  spec.set_task(demo["task"].get<std::string>());
  spec.set_language(demo["language"].get<std::string>());
  spec.set_tests(demo["tests"].get<std::string>());
  spec.set_max_attempts(3);
  return spec;
}

anima::v1::SubmitRequest Task(const std::string& task) {
  anima::v1::SubmitRequest spec;
  spec.set_task(task);
  spec.set_tests("from solution import f\n\ndef test_f():\n    assert f() == 1\n");
  spec.set_max_attempts(1);
  return spec;
}

struct Job {
  grpc::Status status;  // of Submit, then of Watch
  std::vector<anima::v1::SelfCodingProgress> events;
  std::optional<anima::v1::SelfCodingResult> result;
};

// Submits `spec` and watches it to its result; `on_event` sees each progress event as it comes.
Job RunJob(const Process& service, const anima::v1::SubmitRequest& spec,
           const std::function<void(const anima::v1::SelfCodingProgress&)>& on_event = nullptr) {
  auto stub = anima::v1::SelfCoding::NewStub(
      grpc::CreateChannel(service.address("grpc"), grpc::InsecureChannelCredentials()));
  Job job;
  anima::v1::SubmitResponse submitted;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 20s);
    job.status = stub->Submit(&ctx, spec, &submitted);
    if (!job.status.ok()) return job;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 180s);
  anima::v1::WatchRequest watch;
  watch.set_job_id(submitted.job_id());
  auto reader = stub->Watch(&ctx, watch);
  anima::v1::JobEvent e;
  while (reader->Read(&e)) {
    if (e.has_progress()) {
      job.events.push_back(e.progress());
      if (on_event) on_event(e.progress());
    }
    if (e.has_result()) job.result = e.result();
  }
  job.status = reader->Finish();
  return job;
}

// The self-coding service's sandbox module, once the canary has an outcome.
anima::v1::ModuleStatus SandboxModule(const Process& service) {
  auto stub = anima::v1::Introspection::NewStub(
      grpc::CreateChannel(service.address("grpc"), grpc::InsecureChannelCredentials()));
  anima::v1::ModuleStatus module;
  Eventually(
      [&] {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + 5s);
        anima::v1::DescribeResponse response;
        if (!stub->Describe(&ctx, {}, &response).ok()) return false;
        for (const auto& m : response.modules()) {
          if (m.name() == "self-coding/sandbox") module = m;
        }
        return module.detail().find("canary job running") == std::string::npos &&
               !module.detail().empty();
      },
      60s);
  return module;
}

// The pids of processes whose command line starts with `prefix` and has `marker`.
std::vector<pid_t> Pids(const std::string& prefix, const std::string& marker) {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return pids;
  while (dirent* entry = readdir(proc)) {
    pid_t pid = static_cast<pid_t>(atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream in(std::string("/proc/") + entry->d_name + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), {});
    if (cmdline.rfind(prefix, 0) == 0 && cmdline.find(marker) != std::string::npos) {
      pids.push_back(pid);
    }
  }
  closedir(proc);
  return pids;
}

// Whether `ancestor` is `pid`'s parent, grandparent, ...
bool Descends(pid_t pid, pid_t ancestor) {
  for (int depth = 0; pid > 1 && depth < 32; ++depth) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    auto end = stat.rfind(')');  // the name may hold spaces and parentheses
    if (end == std::string::npos) return false;
    pid = static_cast<pid_t>(atoi(stat.c_str() + end + 4));  // ") S <ppid>"
    if (pid == ancestor) return true;
  }
  return false;
}

// The processes of `service` (and its sandboxes) whose command line starts with `prefix` and
// has `marker`: other tests may run sandboxes of their own meanwhile.
std::vector<pid_t> ServicePids(const Process& service, const std::string& prefix,
                               const std::string& marker) {
  std::vector<pid_t> pids;
  for (pid_t pid : Pids(prefix, marker)) {
    if (Descends(pid, service.pid())) pids.push_back(pid);
  }
  return pids;
}

// The runners `service` started with --sandbox=runner-bwrap: bubblewrap runs each from a
// read-only copy at /run/anima/program (SandboxCommand::program).
std::vector<pid_t> LocalRunnerPids(const Process& service) {
  return ServicePids(service, "/run/anima/program", "--exit-after-release");
}

bool HasStage(const Job& job, const std::string& stage) {
  for (const auto& e : job.events) {
    if (e.stage() == stage) return true;
  }
  return false;
}

// --- a runner per attempt inside bubblewrap --------------------------------------------------

class RunnerInBubblewrapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + WriteRules()}));
    ASSERT_TRUE(system_->StartBroker());
    service_ = Process::Start(
        "anima-self-coding",
        {"--port=0", "--metrics-port=0", "--broker=" + system_->broker()->address("grpc"),
         "--data-dir=" + MakeTempDir("anima-sc-runner"), "--sandbox=runner-bwrap",
         "--runner-binary=" + BinDir() + "/anima-sandbox-runner", "--workers=2"});
    ASSERT_NE(service_, nullptr);
  }
  static void TearDownTestSuite() {
    service_.reset();
    system_.reset();
  }
  static inline std::unique_ptr<System> system_;
  static inline std::unique_ptr<Process> service_;
};

TEST_F(RunnerInBubblewrapTest, TheCanaryPassesAndTheModuleNamesTheSandbox) {
  auto module = SandboxModule(*service_);
  EXPECT_EQ(module.health(), anima::v1::MODULE_HEALTH_HEALTHY) << module.detail();
  EXPECT_NE(module.detail().find("runner/bwrap"), std::string::npos) << module.detail();
  EXPECT_NE(module.detail().find("canary job passed"), std::string::npos) << module.detail();
}

TEST_F(RunnerInBubblewrapTest, TheDemoFailsOnceWithTheTestOutputFedBackThenSucceeds) {
  Job job = RunJob(*service_, Demo());
  ASSERT_TRUE(job.status.ok()) << job.status.error_message();
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "succeeded") << job.result->reason();
  EXPECT_EQ(job.result->attempts(), 2);
  EXPECT_EQ(job.result->tests().passed(), 3);
  EXPECT_TRUE(HasStage(job, "retrying"));
  // Attempt 1's failure came back from the runner with the tests' own output.
  bool fed_back = false;
  for (const auto& e : job.events) {
    if (e.stage() == "retrying" && e.message().find("failed") != std::string::npos) fed_back = true;
  }
  EXPECT_TRUE(fed_back);
  // Each attempt's runner exited with its release: none is left behind.
  EXPECT_TRUE(Eventually([] { return LocalRunnerPids(*service_).empty(); }, 10s));
}

TEST_F(RunnerInBubblewrapTest, CodeThatPrintsPassedAndExitsDoesNotPass) {
  Job job = RunJob(*service_, Task("Forge task: write f() returning 1 in solution.py."));
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "failed");
  EXPECT_NE(job.result->reason().find("without the harness reporting a result"), std::string::npos)
      << job.result->reason();
  EXPECT_EQ(job.result->tests().passed(), 0);
}

TEST_F(RunnerInBubblewrapTest, ARunnerKilledMidAttemptFailsTheAttemptNotTheService) {
  std::atomic<bool> killed{false};
  Job job =
      RunJob(*service_, Task("Hang task: write f() returning 1 in solution.py."),
             [&](const anima::v1::SelfCodingProgress& e) {
               if (e.stage() != "testing" || killed) return;
               // Once the tests are asleep in the runner's child, kill the runner under
               // them.
               ASSERT_TRUE(Eventually(
                   [] { return !ServicePids(*service_, "", "_anima_run_tests.py").empty(); }, 10s));
               for (pid_t pid : LocalRunnerPids(*service_)) kill(pid, SIGKILL);
               killed = true;
             });
  ASSERT_TRUE(killed);
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "failed");
  EXPECT_NE(job.result->reason().find("runner"), std::string::npos) << job.result->reason();
  EXPECT_NE(job.result->reason().find("went away"), std::string::npos) << job.result->reason();
  // The service goes on: the next job gets a runner of its own and passes.
  Job next = RunJob(*service_, Demo());
  ASSERT_TRUE(next.result);
  EXPECT_EQ(next.result->status(), "succeeded") << next.result->reason();
  EXPECT_TRUE(Eventually([] { return LocalRunnerPids(*service_).empty(); }, 10s));
}

// --- a runner at a fixed address, with and without the right secret ---------------------------

class StaticRunnerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + WriteRules()}));
    ASSERT_TRUE(system_->StartBroker());
    runner_ = Process::Start("anima-sandbox-runner",
                             {"--listen=127.0.0.1:0", "--workspace-dir=" + MakeTempDir("anima-rw")},
                             {{"ANIMA_RUNNER_SECRET", kSecret}});
    ASSERT_NE(runner_, nullptr);
  }
  static void TearDownTestSuite() {
    runner_.reset();
    system_.reset();
  }
  static std::unique_ptr<Process> StartService(const std::string& secret) {
    return Process::Start(
        "anima-self-coding",
        {"--port=0", "--metrics-port=0", "--broker=" + system_->broker()->address("grpc"),
         "--data-dir=" + MakeTempDir("anima-sc-static"), "--sandbox=runner",
         "--runner-addresses=" + runner_->address("grpc"), "--workers=1"},
        {{"ANIMA_RUNNER_SECRET", secret}});
  }
  static constexpr char kSecret[] = "0123456789abcdef0123456789abcdef-right";
  static inline std::unique_ptr<System> system_;
  static inline std::unique_ptr<Process> runner_;
};

TEST_F(StaticRunnerTest, TheRightSecretRunsTheDemo) {
  auto service = StartService(kSecret);
  ASSERT_NE(service, nullptr);
  Job job = RunJob(*service, Demo());
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "succeeded") << job.result->reason();
  EXPECT_EQ(SandboxModule(*service).health(), anima::v1::MODULE_HEALTH_HEALTHY);
}

TEST_F(StaticRunnerTest, AWrongSecretIsRefusedAndSaysSo) {
  auto service = StartService("0123456789abcdef0123456789abcdef-wrong");
  ASSERT_NE(service, nullptr);
  auto module = SandboxModule(*service);
  EXPECT_EQ(module.health(), anima::v1::MODULE_HEALTH_DEGRADED);
  EXPECT_NE(module.detail().find("canary job failed"), std::string::npos) << module.detail();
  Job job = RunJob(*service, Demo());
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "failed");
  EXPECT_NE(job.result->reason().find("refused the workspace"), std::string::npos)
      << job.result->reason();
  // The runner logged the refusals, never a secret.
  std::string log = runner_->Log();
  EXPECT_EQ(log.find("-wrong"), std::string::npos);
  EXPECT_EQ(log.find("-right"), std::string::npos);
}

// --- a runner per attempt in a pod claimed from Agent Sandbox (a fake API server) -------------

class AgentSandboxTest : public ::testing::Test {
 protected:
  static constexpr char kReplica[] = "sc-test-replica";

  static void SetUpTestSuite() {
    if (FakeKubeApi::Python().empty()) GTEST_SKIP() << "python3 is missing";
    system_ = std::make_unique<System>();
    ASSERT_TRUE(system_->StartSim({"--rules=" + WriteRules()}));
    ASSERT_TRUE(system_->StartBroker());
    // Each claim's "pod" is a runner on its own loopback address, all on one port.
    runner_port_ = 20000 + getpid() % 20000;
    FakeKubeApiOptions options;
    options.ready_delay_ms = 1200;
    options.runner_port = runner_port_;
    options.runner_cmd = BinDir() + "/anima-sandbox-runner --listen={ip}:{port} --workspace-dir=" +
                         MakeTempDir("anima-pods") + " --exit-after-release";
    auto kube = FakeKubeApi::Start(options);
    ASSERT_TRUE(kube.ok()) << kube.status();
    kube_ = *std::move(kube);
    // What a crashed replica left: an old claim of another replica, a young one of this
    // replica's name; and another replica's young one, which is not an orphan.
    for (auto [name, replica, age] :
         {std::tuple{"anima-old", "other", 7200}, std::tuple{"anima-mine", kReplica, 10},
          std::tuple{"anima-theirs", "other", 10}}) {
      ASSERT_TRUE(kube_
                      ->Control({{"add_claim",
                                  {{"namespace", "anima"},
                                   {"name", name},
                                   {"age_seconds", age},
                                   {"labels",
                                    {{"app.kubernetes.io/managed-by", "anima-self-coding"},
                                     {"anima.dev/replica", replica}}}}}})
                      .ok());
    }
    service_ = StartService({});
    ASSERT_NE(service_, nullptr);
  }
  static void TearDownTestSuite() {
    service_.reset();
    kube_.reset();
    system_.reset();
  }

  static std::unique_ptr<Process> StartService(std::vector<std::string> extra) {
    std::vector<std::string> flags = {"--port=0",
                                      "--metrics-port=0",
                                      "--broker=" + system_->broker()->address("grpc"),
                                      "--data-dir=" + MakeTempDir("anima-sc-agent"),
                                      "--sandbox=agent-sandbox",
                                      "--kube-api-url=" + kube_->url(),
                                      "--kube-token-file=" + kube_->token_file(),
                                      "--kube-ca-file=" + kube_->ca_file(),
                                      "--kube-namespace=anima",
                                      "--runner-port=" + std::to_string(runner_port_),
                                      "--workers=1"};
    flags.insert(flags.end(), extra.begin(), extra.end());
    return Process::Start("anima-self-coding", flags, {{"HOSTNAME", kReplica}});
  }

  static std::set<std::string> ClaimNames() {
    std::set<std::string> names;
    auto claims = kube_->Claims();
    if (!claims.ok()) return names;
    for (const auto& c : *claims) names.insert(c["metadata"]["name"].get<std::string>());
    return names;
  }

  static inline std::unique_ptr<System> system_;
  static inline std::unique_ptr<FakeKubeApi> kube_;
  static inline std::unique_ptr<Process> service_;
  static inline int runner_port_ = 0;
};

TEST_F(AgentSandboxTest, OrphanedClaimsAreDeletedAtStartAndOthersKept) {
  ASSERT_TRUE(Eventually([] { return !ClaimNames().contains("anima-old"); }, 10s));
  EXPECT_FALSE(ClaimNames().contains("anima-mine"));
  EXPECT_TRUE(ClaimNames().contains("anima-theirs"));
}

TEST_F(AgentSandboxTest, TheDemoRunsInClaimedPodsAndSaysWhileItWaits) {
  auto module = SandboxModule(*service_);
  EXPECT_EQ(module.health(), anima::v1::MODULE_HEALTH_HEALTHY) << module.detail();
  EXPECT_NE(module.detail().find("runner/agent-sandbox: canary job passed"), std::string::npos)
      << module.detail();
  ASSERT_TRUE(kube_->Control({{"reset_requests", true}}).ok());

  Job job = RunJob(*service_, Demo());
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "succeeded") << job.result->reason();
  EXPECT_EQ(job.result->attempts(), 2);
  // Each attempt waited for its claim (the pod takes 1.2 s to be Ready) and said so.
  int waits = 0;
  for (const auto& e : job.events) {
    if (e.stage() == "queued" &&
        e.message().find("waiting for a sandbox pod") != std::string::npos) {
      waits++;
    }
  }
  EXPECT_GE(waits, 2);
  // One claim per attempt, made as the template wants and deleted after.
  auto requests = kube_->Requests();
  ASSERT_TRUE(requests.ok());
  // (The canary's claim may be deleted after the log was reset: only the job's are counted.)
  std::set<std::string> created, deleted;
  for (const auto& r : *requests) {
    if (r["method"] == "POST") {
      created.insert(r["body"]["metadata"]["name"].get<std::string>());
      EXPECT_EQ(r["body"]["spec"]["warmPoolRef"]["name"], "anima-runner") << r.dump();
      EXPECT_EQ(r["body"]["metadata"]["labels"]["anima.dev/replica"], kReplica) << r.dump();
      EXPECT_TRUE(r["auth_ok"].get<bool>());
    }
    if (r["method"] == "DELETE") {
      std::string path = r["path"];
      deleted.insert(path.substr(path.rfind('/') + 1));
    }
  }
  EXPECT_EQ(created.size(), 2u);
  for (const auto& name : created) EXPECT_TRUE(deleted.contains(name)) << name;
  EXPECT_TRUE(
      Eventually([] { return ClaimNames() == std::set<std::string>{"anima-theirs"}; }, 10s));
}

TEST_F(AgentSandboxTest, AClaimThatNeverGetsReadyFailsTheAttemptWithItsReason) {
  ASSERT_TRUE(kube_
                  ->Control({{"never_ready",
                              {{"reason", "Unschedulable"},
                               {"message", "0/3 nodes are available: gVisor pool full"}}}})
                  .ok());
  auto service = StartService({"--agent-sandbox-ready-timeout-ms=1500"});
  ASSERT_NE(service, nullptr);
  Job job = RunJob(*service, Task("Forge task: write f() returning 1 in solution.py."));
  ASSERT_TRUE(kube_->Control({{"never_ready", nullptr}}).ok());
  ASSERT_TRUE(job.result);
  EXPECT_EQ(job.result->status(), "failed");
  EXPECT_NE(job.result->reason().find("gVisor pool full"), std::string::npos)
      << job.result->reason();
  EXPECT_TRUE(HasStage(job, "queued"));
  // Given up on, the claims are deleted: only the other replica's is left.
  EXPECT_TRUE(
      Eventually([] { return ClaimNames() == std::set<std::string>{"anima-theirs"}; }, 10s));
}

}  // namespace
}  // namespace anima::testing
