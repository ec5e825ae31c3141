// anima-self-coding: jobs that write, build and test code in a sandbox (anima.v1.SelfCoding).
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "services/common/flags.h"
#include "services/common/grpc_server.h"
#include "services/common/metrics.h"
#include "services/common/process.h"
#include "services/common/service_flags.h"
#include "services/self_coding/blocking_executor.h"
#include "services/self_coding/broker_client.h"
#include "services/self_coding/data_dir.h"
#include "services/self_coding/job_manager.h"
#include "services/self_coding/pipeline.h"
#include "services/self_coding/postgres_job_store.h"
#include "services/self_coding/sandbox.h"
#include "services/self_coding/sandbox_setup.h"
#include "services/self_coding/self_coding_metrics.h"
#include "services/self_coding/self_coding_service.h"
#include "services/self_coding/sqlite_job_store.h"
#include "spdlog/spdlog.h"

namespace {

struct Options {
  anima::common::ServiceFlags service{.port = 50053, .metrics_port = 9103};
  std::string broker = "127.0.0.1:50052";
  int64_t broker_timeout_ms = 120000;
  std::string model;
  std::string data_dir = ".anima/self-coding";
  int workers = 2;
  int queue_size = 16;
  int max_queued_per_principal = 0;
  anima::selfcoding::SandboxSetup sandbox;
  int64_t test_timeout_ms = 30000;
  int test_cpu_s = 10;
  int test_memory_mb = 1024;
  int workspace_max_mb = 64;
  int workspace_max_files = 10000;
  int retention_days = 7;
  int retention_jobs = 1000;
  std::string postgres;
  int64_t lease_ms = 15000;
  int64_t heartbeat_ms = 5000;
};

int Run(int argc, char** argv) {
  anima::common::BlockShutdownSignals();
  Options o;
  anima::common::FlagSet flags("anima-self-coding");
  anima::common::AddServiceFlags(flags, "ANIMA_SELF_CODING", "gRPC port (0 picks a free one)",
                                 &o.service);
  flags.Add("broker", &o.broker, "ANIMA_SELF_CODING_BROKER", "llm-broker gRPC address");
  flags.Add("broker-timeout-ms", &o.broker_timeout_ms, "ANIMA_SELF_CODING_BROKER_TIMEOUT_MS",
            "deadline of one broker call");
  flags.Add("model", &o.model, "ANIMA_SELF_CODING_MODEL", "model to ask (empty: broker default)");
  flags.Add("data-dir", &o.data_dir, "ANIMA_SELF_CODING_DATA_DIR",
            "where the job database and the workspaces live");
  flags.Add("workers", &o.workers, "ANIMA_SELF_CODING_WORKERS", "jobs run at the same time");
  flags.Add("queue-size", &o.queue_size, "ANIMA_SELF_CODING_QUEUE_SIZE",
            "jobs waiting at most; more are refused (overloaded)");
  flags.Add("max-queued-per-principal", &o.max_queued_per_principal,
            "ANIMA_SELF_CODING_MAX_QUEUED_PER_PRINCIPAL",
            "jobs one principal may have waiting, so others find room (0: half of --queue-size)");
  anima::selfcoding::AddSandboxFlags(flags, &o.sandbox);
  flags.Add("test-timeout-ms", &o.test_timeout_ms, "ANIMA_SELF_CODING_TEST_TIMEOUT_MS",
            "wall time of one test run");
  flags.Add("test-cpu-s", &o.test_cpu_s, "ANIMA_SELF_CODING_TEST_CPU_S",
            "CPU seconds of one test process");
  flags.Add("test-memory-mb", &o.test_memory_mb, "ANIMA_SELF_CODING_TEST_MEMORY_MB",
            "address space of one test process");
  flags.Add("workspace-max-mb", &o.workspace_max_mb, "ANIMA_SELF_CODING_WORKSPACE_MAX_MB",
            "bytes one attempt's workspace holds, written files and build and test output");
  flags.Add("workspace-max-files", &o.workspace_max_files, "ANIMA_SELF_CODING_WORKSPACE_MAX_FILES",
            "files and directories one attempt's workspace holds");
  flags.Add("retention-days", &o.retention_days, "ANIMA_SELF_CODING_RETENTION_DAYS",
            "ended jobs older than this are pruned");
  flags.Add("retention-jobs", &o.retention_jobs, "ANIMA_SELF_CODING_RETENTION_JOBS",
            "jobs kept at most; the oldest ended ones are pruned");
  flags.Add("postgres", &o.postgres, "ANIMA_POSTGRES_URL",
            "jobs and events in this PostgreSQL (postgresql://user:password@host:port/db), shared "
            "by every replica; empty: SQLite in --data-dir");
  flags.Add("lease-ms", &o.lease_ms, "ANIMA_SELF_CODING_LEASE_MS",
            "a running job whose worker sends no heartbeat for this long is claimed again");
  flags.Add("heartbeat-ms", &o.heartbeat_ms, "ANIMA_SELF_CODING_HEARTBEAT_MS",
            "how often the leases of running jobs are renewed (at most half of --lease-ms)");
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    std::cerr << "anima-self-coding: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  auto bad = [](const std::string& message) {
    std::cerr << "anima-self-coding: " << message << "\n";
    return 2;
  };
  if (o.workers < 1 || o.workers > 64) return bad("--workers must be from 1 to 64");
  if (o.queue_size < 1) return bad("--queue-size must be positive");
  if (o.max_queued_per_principal < 0 || o.max_queued_per_principal > o.queue_size) {
    return bad("--max-queued-per-principal must be from 0 to --queue-size");
  }
  if (o.broker_timeout_ms < 1 || o.test_timeout_ms < 100 || o.test_cpu_s < 1 ||
      o.test_memory_mb < 64) {
    return bad(
        "--broker-timeout-ms, --test-timeout-ms (>= 100), --test-cpu-s and "
        "--test-memory-mb (>= 64) must be positive");
  }
  if (o.workspace_max_mb < 1 || o.workspace_max_files < 16) {
    return bad("--workspace-max-mb must be positive and --workspace-max-files at least 16");
  }
  if (o.retention_days < 1 || o.retention_jobs < 1) {
    return bad("--retention-days and --retention-jobs must be positive");
  }
  if (o.data_dir.empty()) return bad("--data-dir must not be empty");
  if (o.lease_ms < 200 || o.heartbeat_ms < 50 || o.heartbeat_ms * 2 > o.lease_ms) {
    return bad("--lease-ms must be at least 200 and --heartbeat-ms from 50 to half of it");
  }
  if (auto s = anima::common::InitService(o.service, "self-coding"); !s.ok()) {
    return bad(std::string(s.message()));
  }

  // Owned by this uid, 0700, no symlink on the way: refused otherwise (data_dir.h).
  auto data_dir = anima::selfcoding::PrepareDataDir(o.data_dir);
  if (!data_dir.ok()) {
    spdlog::error("{}", std::string(data_dir.status().message()));
    return 1;
  }
  o.data_dir = *data_dir;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(o.data_dir) / "work", ec);
  if (ec) {
    spdlog::error("cannot create {}/work: {}", o.data_dir, std::string(ec.message()));
    return 1;
  }
  if (const char* secret = std::getenv("ANIMA_RUNNER_SECRET")) o.sandbox.runner_secret = secret;
  anima::selfcoding::PipelineOptions pipeline_options;
  pipeline_options.model = o.model;
  pipeline_options.test_limits.wall_time = std::chrono::milliseconds(o.test_timeout_ms);
  pipeline_options.test_limits.cpu_seconds = o.test_cpu_s;
  pipeline_options.test_limits.memory_bytes = int64_t{o.test_memory_mb} << 20;
  pipeline_options.workspace_limits.max_bytes = int64_t{o.workspace_max_mb} << 20;
  pipeline_options.workspace_limits.max_files = o.workspace_max_files;
  // A runner under bubblewrap holds every command to limits below its own: the larger of the
  // build's and the tests'.
  o.sandbox.command_ceiling =
      anima::selfcoding::MaxLimits(pipeline_options.build_limits, pipeline_options.test_limits);
  auto sandboxes = anima::selfcoding::MakeSandboxes(o.sandbox);
  if (!sandboxes.ok()) return bad(std::string(sandboxes.status().message()));
  anima::selfcoding::Sandbox* sandbox = sandboxes->sandbox.get();
  if (o.sandbox.mode == "none") {
    spdlog::warn(
        "!!! --sandbox=none: generated code runs UNSANDBOXED with this service's "
        "rights and network. Use only for development. !!!");
  } else if (auto s = sandbox->Available(); !s.ok()) {
    spdlog::error("sandbox {} unavailable, self-coding jobs will be refused: {}", sandbox->name(),
                  std::string(s.message()));
  }
  // Proves the whole path (a workspace, a file, python3) in the background; the sandbox module
  // reports its outcome.
  anima::selfcoding::SandboxCanary canary(sandbox,
                                          (std::filesystem::path(o.data_dir) / "work").string());

  auto metrics = anima::common::StartMetricsServer(o.service);
  if (!metrics.ok()) {
    spdlog::error("{}", std::string(metrics.status().message()));
    return 1;
  }
  // The job store: PostgreSQL shared by every replica, or SQLite for this one alone.
  std::unique_ptr<anima::selfcoding::JobStore> store;
  std::string store_name;
  if (!o.postgres.empty()) {
    anima::store::PostgresOptions pg;
    pg.url = o.postgres;
    // Workers write events, the executor serves RPCs, the heartbeat renews leases.
    pg.connections = o.workers + 4;
    pg.application_name = "anima-self-coding";
    auto client = anima::store::PostgresClient::Create(pg, &(*metrics)->registry());
    if (!client.ok()) return bad("--postgres: " + std::string(client.status().message()));
    store_name = "postgres " + (*client)->endpoint();
    auto opened = anima::selfcoding::PostgresJobStore::Open(std::move(*client));
    if (!opened.ok()) {
      spdlog::error("job store {}: {}", store_name, std::string(opened.status().message()));
      return 1;
    }
    store = std::move(*opened);
  } else {
    std::string path = (std::filesystem::path(o.data_dir) / "jobs.db").string();
    auto opened = anima::selfcoding::SqliteJobStore::Open(path);
    if (!opened.ok()) {
      spdlog::error("{}", std::string(opened.status().message()));
      return 1;
    }
    store = std::move(*opened);
    store_name = "sqlite " + path;
  }
  anima::selfcoding::SelfCodingMetrics job_metrics((*metrics)->registry());
  auto broker = anima::selfcoding::MakeGrpcBrokerClient(
      anima::common::MakeChannel(o.broker, &(*metrics)->registry()),
      std::chrono::milliseconds(o.broker_timeout_ms));

  anima::selfcoding::JobPipeline pipeline(broker.get(), sandbox, pipeline_options);

  anima::selfcoding::ManagerOptions manager_options;
  manager_options.workers = o.workers;
  manager_options.queue_size = o.queue_size;
  manager_options.max_queued_per_principal = o.max_queued_per_principal;
  manager_options.work_dir = (std::filesystem::path(o.data_dir) / "work").string();
  manager_options.retention_age = std::chrono::hours(24 * o.retention_days);
  manager_options.retention_jobs = o.retention_jobs;
  manager_options.lease = std::chrono::milliseconds(o.lease_ms);
  manager_options.heartbeat = std::chrono::milliseconds(o.heartbeat_ms);
  manager_options.poll = std::min(std::chrono::milliseconds(2000), manager_options.heartbeat);
  anima::selfcoding::JobManager manager(store.get(), &pipeline, sandbox, manager_options,
                                        &job_metrics);
  if (auto s = manager.Start(); !s.ok()) {
    spdlog::error("cannot start the job manager: {}", std::string(s.message()));
    return 1;
  }

  // Store calls leave the gRPC callback threads for these. Declared before the server, so it
  // goes after the server has finished every call.
  anima::selfcoding::BlockingExecutor executor(8, 1024);
  anima::selfcoding::SelfCodingService service(&manager, &executor);
  anima::selfcoding::SelfCodingIntrospection introspection(&manager, &executor, &canary);
  auto server =
      anima::common::GrpcServer::Start(o.service.bind + ":" + std::to_string(o.service.port),
                                       {&service, &introspection}, (*metrics)->registry());
  if (!server.ok()) {
    spdlog::error("{}", std::string(server.status().message()));
    return 1;
  }
  spdlog::info(
      "listening on {}:{} (gRPC), metrics on :{}, llm-broker at {}, sandbox {}, "
      "{} workers, queue {}, jobs in {}, data in {}",
      o.service.bind, (*server)->port(), (*metrics)->port(), o.broker, sandbox->name(), o.workers,
      o.queue_size, store_name, o.data_dir);
  if (auto s = anima::common::WriteReadyFile(
          o.service.ready_file, {{"grpc", (*server)->port()}, {"metrics", (*metrics)->port()}});
      !s.ok()) {
    spdlog::error("{}", std::string(s.message()));
    return 1;
  }

  int sig = anima::common::WaitForShutdownSignal();
  spdlog::info("signal {}: draining", sig);
  // Running jobs go back to the queue first (another replica, or this one after a restart,
  // continues them); open Watch streams then end UNAVAILABLE, so clients watch again elsewhere.
  manager.Stop();
  (*server)->Shutdown(std::chrono::seconds(5));
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return anima::common::RunMain("anima-self-coding", Run, argc, argv);
}
