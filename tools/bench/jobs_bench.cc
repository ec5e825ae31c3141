// anima-jobs-bench: how fast workers take self-coding jobs from the shared queue. Queues --jobs
// jobs of --principals principals in a job store (PostgreSQL with --postgres, else SQLite in
// --sqlite), then --workers threads, each a worker as a self-coding replica runs it, claim a job
// (SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), write its final event under the lease and
// claim the next, until the queue is empty. Prints jobs created and claimed per second, and the
// claim latency. Every job must be claimed exactly once; the bench exits 1 if one is not.
//
//   anima-jobs-bench --postgres=postgresql://anima:...@127.0.0.1:5432/anima --jobs=2000
//   anima-jobs-bench --sqlite=/tmp/jobs.db --workers=2
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "services/common/flags.h"
#include "services/self_coding/postgres_job_store.h"
#include "services/self_coding/sqlite_job_store.h"
#include "services/store/postgres_client.h"

namespace {

using Clock = std::chrono::steady_clock;
using anima::selfcoding::JobStore;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int Run(int argc, char** argv) {
  std::string postgres, sqlite = "/tmp/anima-jobs-bench.db";
  int jobs = 2000, workers = 2, principals = 10;
  anima::common::FlagSet flags("anima-jobs-bench");
  flags.Add("postgres", &postgres, "", "PostgreSQL URL (empty: SQLite)");
  flags.Add("sqlite", &sqlite, "", "SQLite file, removed first (without --postgres)");
  flags.Add("jobs", &jobs, "", "jobs to queue and claim");
  flags.Add("workers", &workers, "", "claiming threads");
  flags.Add("principals", &principals, "", "principals the jobs are spread over");
  if (auto s = flags.Parse(argc, argv); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (jobs < 1 || workers < 1 || principals < 1) {
    std::fprintf(stderr, "--jobs, --workers and --principals must be at least 1\n");
    return 2;
  }

  std::unique_ptr<JobStore> store;
  if (!postgres.empty()) {
    anima::store::PostgresOptions options;
    options.url = postgres;
    options.connections = workers + 1;
    auto client = anima::store::PostgresClient::Create(options, nullptr);
    if (!client.ok()) {
      std::fprintf(stderr, "%s\n", std::string(client.status().message()).c_str());
      return 1;
    }
    auto opened = anima::selfcoding::PostgresJobStore::Open(std::move(*client));
    if (!opened.ok()) {
      std::fprintf(stderr, "%s\n", std::string(opened.status().message()).c_str());
      return 1;
    }
    store = std::move(*opened);
  } else {
    std::remove(sqlite.c_str());
    auto opened = anima::selfcoding::SqliteJobStore::Open(sqlite);
    if (!opened.ok()) {
      std::fprintf(stderr, "%s\n", std::string(opened.status().message()).c_str());
      return 1;
    }
    store = std::move(*opened);
  }

  // A run id keeps the jobs of two runs on one database apart.
  std::string run = std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  auto created_start = Clock::now();
  for (int i = 0; i < jobs; ++i) {
    anima::selfcoding::JobRecord job;
    job.job_id = "bench-" + run + "-" + std::to_string(i);
    job.principal = "p" + std::to_string(i % principals);
    job.status = anima::selfcoding::kQueued;
    job.spec.set_task("bench");
    job.created_at = "2026-01-01T00:00:00Z";
    job.updated_at = job.created_at;
    job.created_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    if (auto s = store->Create(job); !s.ok()) {
      std::fprintf(stderr, "create: %s\n", std::string(s.message()).c_str());
      return 1;
    }
  }
  double create_s = Seconds(Clock::now() - created_start);

  std::mutex mu;
  std::multiset<std::string> claimed;
  std::vector<double> claim_ms;
  std::atomic<int> errors{0};
  auto claim_start = Clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      std::string worker = "bench-worker-" + std::to_string(w);
      std::vector<double> mine;
      std::vector<std::string> ids;
      for (;;) {
        auto t0 = Clock::now();
        auto got = store->Claim(worker, std::chrono::seconds(30));
        mine.push_back(Seconds(Clock::now() - t0) * 1000);
        if (!got.ok()) {
          ++errors;
          continue;
        }
        if (!got->has_value()) break;
        const auto& job = **got;
        anima::v1::SelfCodingProgress event;
        event.set_job_id(job.job.job_id);
        event.set_seq(job.job.last_seq + 1);
        event.set_stage("done");
        event.set_percent(100);
        anima::selfcoding::JobUpdate update;
        update.status = anima::selfcoding::kSucceeded;
        anima::v1::SelfCodingResult result;
        result.set_job_id(job.job.job_id);
        result.set_status(anima::selfcoding::kSucceeded);
        update.result = result;
        if (auto s = store->AppendLeased(job.lease, event, update, false); !s.ok()) ++errors;
        ids.push_back(job.job.job_id);
      }
      std::lock_guard lock(mu);
      claimed.insert(ids.begin(), ids.end());
      claim_ms.insert(claim_ms.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  double claim_s = Seconds(Clock::now() - claim_start);

  std::set<std::string> distinct(claimed.begin(), claimed.end());
  std::printf("store %s, %d jobs of %d principals, %d workers\n",
              postgres.empty() ? "sqlite" : "postgres", jobs, principals, workers);
  std::printf("created: %.0f jobs/s\n", jobs / create_s);
  std::printf("claimed and finished: %.0f jobs/s (%zu jobs, %d errors)\n",
              static_cast<double>(claimed.size()) / claim_s, claimed.size(), errors.load());
  std::printf("claim latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms\n", Percentile(claim_ms, 0.5),
              Percentile(claim_ms, 0.99), Percentile(claim_ms, 1.0));
  if (distinct.size() != claimed.size() || static_cast<int>(claimed.size()) != jobs) {
    std::fprintf(stderr, "FAILED: %zu claims of %zu distinct jobs, %d queued\n", claimed.size(),
                 distinct.size(), jobs);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
