#include "tools/bench/runner.h"

#include <sys/resource.h>

#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include "absl/strings/str_cat.h"
#include "tools/bench/http_lane.h"

namespace anima::bench {

namespace asio = boost::asio;

namespace {

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;

}  // namespace

absl::StatusOr<BenchResult> RunLoad(const BenchConfig& config, const std::string& target) {
  const int lanes_n = std::max(1, config.connections);
  const int threads_n = std::clamp(config.threads, 1, lanes_n);
  const bool ws = target == "ws";

  LoadPlan plan;
  plan.open_loop = config.rate > 0;
  plan.rate = config.rate;
  plan.lanes = lanes_n;
  plan.in_flight = std::max(1, config.in_flight);
  std::atomic<int64_t> budget{config.requests};
  if (config.requests > 0) plan.budget = &budget;

  // Declaration order matters: lanes refer to their io_context and stats, so they are
  // destroyed first.
  std::vector<std::unique_ptr<asio::io_context>> ios;
  std::vector<LaneStats> stats(threads_n);
  std::vector<std::optional<WorkGuard>> guards(threads_n);
  for (int t = 0; t < threads_n; ++t) {
    ios.push_back(std::make_unique<asio::io_context>(1));
    guards[t].emplace(ios[t]->get_executor());
  }
  std::vector<std::unique_ptr<Lane>> lanes;
  cli::WsClientOptions ws_options;
  ws_options.bearer_token = config.token;
  ws_options.user_agent = "anima-bench/" ANIMA_VERSION;
  for (int i = 0; i < lanes_n; ++i) {
    const int t = i % threads_n;
    if (ws) {
      lanes.push_back(std::make_unique<WsLane>(*ios[t], i, plan, stats[t], config.ws_url,
                                               ws_options, config.load));
    } else {
      lanes.push_back(std::make_unique<HttpLane>(*ios[t], i, plan, stats[t], config.sim_url,
                                                 config.sim_key, config.load, plan.in_flight));
    }
  }

  std::vector<std::thread> threads;
  for (int t = 0; t < threads_n; ++t) threads.emplace_back([&io = *ios[t]] { io.run(); });

  // Phase 1: every connection is opened before the clock starts.
  std::latch connected(lanes_n);
  std::mutex mu;
  int failures = 0;
  std::string first_error;
  for (int i = 0; i < lanes_n; ++i) {
    asio::post(*ios[i % threads_n], [&, i] {
      lanes[i]->Connect([&](std::string error) {
        if (!error.empty()) {
          std::lock_guard<std::mutex> lock(mu);
          if (failures++ == 0) first_error = error;
        }
        connected.count_down();
      });
    });
  }
  connected.wait();

  if (failures > 0) {
    for (int i = 0; i < lanes_n; ++i) {
      asio::post(*ios[i % threads_n], [&, i] { lanes[i]->Abort(); });
    }
    for (auto& g : guards) g.reset();
    for (auto& th : threads) th.join();
    return absl::UnavailableError(absl::StrCat(failures, " of ", lanes_n, " ", target,
                                               " connection(s) failed: ", first_error));
  }

  // Phase 2: the plan's clock, then every lane starts on its own thread.
  const auto to_duration = [](double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  plan.start = Clock::now() + std::chrono::milliseconds(20);
  plan.record_from = plan.start + to_duration(config.warmup_s);
  plan.record_until = plan.record_from + to_duration(config.duration_s);
  plan.drain_until = plan.record_until + std::chrono::milliseconds(config.drain_ms);
  const double cpu_before = CpuSeconds();
  const Clock::time_point wall_before = Clock::now();
  for (int i = 0; i < lanes_n; ++i) {
    asio::post(*ios[i % threads_n], [&, i] { lanes[i]->Start(); });
  }
  for (auto& g : guards) g.reset();  // each io_context returns once its lanes are done
  // The watched processes' CPU from the start of the recorded window; the answers to the warmup's
  // last requests fall into it, those to the window's last ones (the drain) too.
  std::vector<std::optional<double>> watched_before;
  if (!config.watch.empty()) {
    std::this_thread::sleep_until(plan.record_from);
    for (const WatchedProcess& p : config.watch) {
      auto seconds = ProcessCpuSeconds(p.pid);
      watched_before.push_back(seconds.ok() ? std::optional<double>(*seconds) : std::nullopt);
    }
  }
  for (auto& th : threads) th.join();
  const double wall = std::chrono::duration<double>(Clock::now() - wall_before).count();
  const double cpu = CpuSeconds() - cpu_before;

  BenchResult result;
  RunSettings& s = result.settings;
  s.target = target;
  s.url = ws ? config.ws_url_text : config.sim_url_text;
  s.open_loop = plan.open_loop;
  s.rate = config.rate;
  s.connections = lanes_n;
  s.in_flight = plan.in_flight;
  s.threads = threads_n;
  s.stream = config.load.stream;
  s.duration_s = config.duration_s;
  s.warmup_s = config.warmup_s;
  s.requests_limit = config.requests;

  LatencyRecorder all;
  Clock::time_point last_answer = plan.record_from;
  int64_t limit_rate = 0, limit_in_flight = 0;
  for (const LaneStats& st : stats) {
    all.Merge(st.latency);
    result.sent += st.sent;
    result.ok += st.ok;
    for (const auto& [code, n] : st.errors) result.errors[code] += n;
    last_answer = std::max(last_answer, st.last_answer);
    limit_rate = std::max(limit_rate, st.limit_messages_per_second);
    limit_in_flight = std::max(limit_in_flight, st.limit_max_in_flight);
  }
  result.latency = Summarize(all);
  LatencyRecorder error_latency;
  for (const LaneStats& st : stats) error_latency.Merge(st.error_latency);
  result.error_latency = Summarize(error_latency);
  for (size_t i = 0; i < config.watch.size(); ++i) {
    const WatchedProcess& p = config.watch[i];
    auto after = ProcessCpuSeconds(p.pid);
    if (!watched_before[i] || !after.ok()) {
      result.notes.push_back(absl::StrCat("--cpu-pids: ", p.name, " (pid ", p.pid,
                                          ") was not running for the whole run"));
      continue;
    }
    result.process_cpu.push_back({p.name, *after - *watched_before[i]});
  }
  result.window_s = std::chrono::duration<double>(last_answer - plan.record_from).count();
  result.generator_cpu_percent = wall > 0 ? 100.0 * cpu / wall : 0;
  if (plan.open_loop && limit_rate > 0 && config.rate / lanes_n > limit_rate) {
    result.notes.push_back(absl::StrCat("the gateway allows ", limit_rate,
                                        " msg/s per connection; this run asked for ",
                                        config.rate / lanes_n, ": use more --connections"));
  }
  if (!plan.open_loop && limit_in_flight > 0 && plan.in_flight > limit_in_flight) {
    result.notes.push_back(absl::StrCat("the gateway allows ", limit_in_flight,
                                        " in flight per connection; --in-flight is ",
                                        plan.in_flight));
  }
  if (!plan.open_loop && ws && limit_rate > 0 &&
      result.sent > limit_rate * lanes_n * std::max(1.0, config.duration_s)) {
    result.notes.push_back(
        absl::StrCat("this closed-loop run sent more than the ", limit_rate,
                     " msg/s per connection the gateway advertises; where it enforces that, "
                     "expect rate_limited errors (use more --connections, or --rate)"));
  }
  if (result.generator_cpu_percent > 90.0 * threads_n) {
    result.notes.push_back(
        "the generator used its whole CPU budget: numbers include its own "
        "queueing; use more --threads if cores allow");
  }
  return result;
}

}  // namespace anima::bench
