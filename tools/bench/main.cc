// anima-bench: a load generator for the gateway (WebSocket) and the simulator (HTTP) with exact
// latency percentiles. See docs/BENCHMARKS.md for the method.
#include <iostream>
#include <string>
#include <thread>

#include "nlohmann/json.hpp"

#include "services/common/flags.h"
#include "tools/bench/idle_scenario.h"
#include "tools/bench/overload_scenario.h"
#include "tools/bench/report.h"
#include "tools/bench/runner.h"
#include "tools/cli/url.h"

namespace {

constexpr char kAbout[] = R"(anima-bench [flags]

Sends chat messages at a fixed rate (--rate R, open loop, latency from the scheduled send time)
or as fast as answers come back (--rate 0, closed loop, --in-flight per connection), to the
gateway's WebSocket (--target ws), straight to the simulator (--target sim), or both in turn
(--target both, then the difference of each percentile is what Anima adds). It stops by itself
after --warmup + --duration seconds (or --requests recorded requests) and only loads loopback
hosts. Exit codes: 0 done, 1 no successful answer, 2 usage, 4 could not connect.

--scenario priority measures the router's priority promise: a steady trickle of high-priority
chat (--rate, default 20/s, over --connections) alone, then the same trickle while a flood of
low-priority frames (--flood-frame, by default word_count, which tools/word_count/router.json
routes at low priority) runs at full speed over --flood-connections x --flood-in-flight. It
reports the chat latency of both runs, their p99 ratio, and the flood's own numbers.

--scenario idle measures the gateway's memory per idle connection (DESIGN.md: 10,000 idle
WebSocket connections in under 100 MB). It reads process_resident_memory_bytes and
anima_gateway_connections from --metrics-url, opens --connections connections at --connect-rate
per second (an upgrade refused with HTTP 429 or 503 is tried again 250 ms later, at most 20
times, and counted), each open once its welcome frame arrives; reads the metrics again, holds
the connections idle for --hold seconds (pings are answered), reads them a last time and closes
everything. It reports the gateway's RSS before, with all open and at the end of the hold, per
connection, and what that makes at 10,000. Exit codes: 0 all held, 1 some connections failed or
were dropped, 2 usage (also: RLIMIT_NOFILE under connections + 64), 4 metrics unreadable.

--scenario overload measures what the whole path does past its capacity: a closed-loop run
(16 connections x 1 in flight) finds the capacity (or --capacity gives it), then one open-loop run per --steps
factor (default 0.1,0.5,1,1.5,2,3 x capacity). Per step: goodput and its share of capacity, the
accepted requests' p50/p99 and p99 over the first step's (unloaded), refusals (overloaded,
too_many_in_flight, rate_limited) and how fast they came back, and any other error.

--cpu-pids name=pid,... (any scenario but idle) reports each process's CPU per answered message
over the recorded window, from /proc/PID/stat, and every process but "sim" over "sim": the
ratio of what the gateway, router and broker spend to what the provider spends.

)";

int Usage(const std::string& message) {
  std::cerr << "anima-bench: " << message << "\n";
  return 2;
}

// The priority scenario: the high trickle alone, then with the low flood beside it.
int RunPriority(anima::bench::BenchConfig high, const std::string& flood_frame,
                int flood_connections, int flood_in_flight, bool json) {
  using anima::bench::BenchResult;
  auto alone = anima::bench::RunLoad(high, "ws");
  if (!alone.ok()) {
    std::cerr << "anima-bench: " << alone.status().message() << "\n";
    return 4;
  }
  anima::bench::BenchConfig flood = high;
  flood.load.frame = flood_frame;
  flood.rate = 0;
  flood.connections = flood_connections;
  flood.in_flight = flood_in_flight;
  flood.requests = 0;
  // The flood starts first and ends after the trickle's recorded window.
  flood.warmup_s = high.warmup_s + 1;
  flood.duration_s = high.duration_s + 1;
  absl::StatusOr<BenchResult> flooded;
  std::thread flood_thread([&] { flooded = anima::bench::RunLoad(flood, "ws"); });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto loaded = anima::bench::RunLoad(high, "ws");
  flood_thread.join();
  if (!loaded.ok() || !flooded.ok()) {
    std::cerr << "anima-bench: "
              << (loaded.ok() ? flooded.status().message() : loaded.status().message()) << "\n";
    return 4;
  }
  double ratio = alone->latency.p99_ms > 0 ? loaded->latency.p99_ms / alone->latency.p99_ms : 0;
  if (json) {
    nlohmann::json out = {{"scenario", "priority"},
                          {"high_alone", anima::bench::ToJson(*alone)},
                          {"high_under_flood", anima::bench::ToJson(*loaded)},
                          {"flood", anima::bench::ToJson(*flooded)},
                          {"p99_ratio", ratio}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << "high-priority chat, alone:\n"
              << anima::bench::FormatText(*alone) << "\nhigh-priority chat, under the flood:\n"
              << anima::bench::FormatText(*loaded) << "\nthe low-priority flood:\n"
              << anima::bench::FormatText(*flooded)
              << "\nhigh p99 under the flood / alone: " << ratio << "x (goal: within 2x)\n";
  }
  return loaded->ok > 0 && alone->ok > 0 ? 0 : 1;
}

int RunOverloadScenario(const anima::bench::OverloadConfig& config, bool json) {
  auto r = anima::bench::RunOverload(config);
  if (!r.ok()) {
    std::cerr << "anima-bench: " << r.status().message() << "\n";
    return 4;
  }
  if (json) {
    std::cout << anima::bench::OverloadToJson(*r).dump() << "\n";
  } else {
    std::cout << anima::bench::FormatOverloadText(*r);
  }
  for (const auto& step : r->steps) {
    if (step.result.ok == 0) return 1;
  }
  return 0;
}

// The idle scenario: connections held open while the gateway's memory is read.
int RunIdleScenario(const anima::bench::IdleConfig& config, bool json) {
  if (auto s = anima::bench::EnsureFileLimit(config.connections); !s.ok()) {
    return Usage(std::string(s.message()));
  }
  auto r = anima::bench::RunIdle(config);
  if (!r.ok()) {
    std::cerr << "anima-bench: " << r.status().message() << "\n";
    return 4;
  }
  if (json) {
    std::cout << anima::bench::IdleToJson(*r).dump() << "\n";
  } else {
    std::cout << anima::bench::FormatIdleText(*r);
  }
  return r->failed == 0 && r->dropped == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  using anima::bench::BenchConfig;
  BenchConfig c;
  std::string target = "ws";
  c.ws_url_text = "ws://127.0.0.1:3002/";
  c.sim_url_text = "http://127.0.0.1:18080/v1/chat/completions";
  c.sim_key = "sim-key";
  c.load.message = "Hello from anima-bench";
  bool json = false;
  std::string scenario = "load";
  std::string flood_frame =
      R"({"type":"word_count","text":"the quick brown fox jumps over the lazy dog"})";
  int flood_connections = 8;
  int flood_in_flight = 8;
  anima::bench::IdleConfig idle;
  std::string cpu_pids;
  double capacity = 0;
  std::string steps = "0.1,0.5,1,1.5,2,3";
  idle.metrics_url_text = "http://127.0.0.1:9100/metrics";

  anima::common::FlagSet flags("anima-bench");
  flags.Add("target", &target, "ANIMA_BENCH_TARGET", "ws, sim or both (sim first, then ws)");
  flags.Add("url", &c.ws_url_text, "ANIMA_BENCH_URL", "gateway WebSocket URL (loopback only)");
  flags.Add("sim-url", &c.sim_url_text, "ANIMA_BENCH_SIM_URL",
            "simulator chat completions URL, http:// (loopback only)");
  flags.Add("sim-key", &c.sim_key, "ANIMA_BENCH_SIM_KEY", "bearer key sent to the simulator");
  flags.Add("token", &c.token, "ANIMA_BENCH_TOKEN", "gateway bearer token, if auth is on");
  flags.Add("message", &c.load.message, "", "the chat message every request sends");
  flags.Add("stream", &c.load.stream, "",
            "ask for streamed answers (ws: until chat_response; sim: until data: [DONE])");
  flags.Add("model", &c.load.model, "", "model to ask for (sim default gpt-4o-mini)");
  flags.Add("conversations", &c.load.conversations, "",
            "ws chat: spread the messages over N conversations (id bench-<k>); 0: none");
  flags.Add("rate", &c.rate, "",
            "messages per second over all connections (open loop); 0 = full speed (closed loop)");
  flags.Add("connections", &c.connections, "",
            "WebSocket connections (idle: those held open) / sim lanes");
  flags.Add("in-flight", &c.in_flight, "",
            "closed loop: requests outstanding per connection; sim: HTTP connections per lane");
  flags.Add("threads", &c.threads, "",
            "generator threads (default 1 leaves the other core to the system under test)");
  flags.Add("duration", &c.duration_s, "", "seconds recorded, after the warmup");
  flags.Add("warmup", &c.warmup_s, "", "seconds of load before recording starts");
  flags.Add("requests", &c.requests, "", "stop after this many recorded requests (0: no limit)");
  flags.Add("drain-ms", &c.drain_ms, "",
            "after the last send, wait this long for answers; missing ones count as timeout");
  flags.Add("json", &json, "", "print one JSON line instead of the text report");
  flags.Add("scenario", &scenario, "",
            "load (the default), priority, idle or overload (see above)");
  flags.Add("cpu-pids", &cpu_pids, "",
            "name=pid,...: report each process's CPU per answered message (\"sim\": the "
            "provider, the ratio's denominator)");
  flags.Add("capacity", &capacity, "",
            "overload: the path's capacity in msg/s (0: measured by a closed-loop run first)");
  flags.Add("steps", &steps, "", "overload: offered load per step, as factors of capacity");
  flags.Add("flood-frame", &flood_frame, "", "priority: the low-priority frame of the flood");
  flags.Add("flood-connections", &flood_connections, "", "priority: connections of the flood");
  flags.Add("flood-in-flight", &flood_in_flight, "",
            "priority: requests each flood connection keeps outstanding");
  flags.Add("metrics-url", &idle.metrics_url_text, "",
            "idle: the gateway's Prometheus endpoint, http:// (loopback only)");
  flags.Add("connect-rate", &idle.connect_rate, "",
            "idle: new connections per second (the gateway allows 500 by default)");
  flags.Add("hold", &idle.hold_s, "", "idle: seconds every connection is held open and idle");

  if (auto s = flags.Parse(argc, argv); !s.ok()) return Usage(std::string(s.message()));
  if (flags.help_requested()) {
    std::cout << kAbout << flags.Usage();
    return 0;
  }
  if (!flags.positional().empty()) return Usage("unexpected argument " + flags.positional()[0]);
  if (target != "ws" && target != "sim" && target != "both") {
    return Usage("--target must be ws, sim or both");
  }
  if (c.rate < 0 || c.rate > 1e6) return Usage("--rate must be 0 to 1000000");
  if (c.connections < 1 || c.connections > 20000) return Usage("--connections must be 1-20000");
  if (c.in_flight < 1 || c.in_flight > 1024) return Usage("--in-flight must be 1-1024");
  if (c.threads < 1 || c.threads > 64) return Usage("--threads must be 1-64");
  if (!(c.duration_s > 0 && c.duration_s <= 3600)) return Usage("--duration must be (0, 3600]");
  if (!(c.warmup_s >= 0 && c.warmup_s <= 600)) return Usage("--warmup must be [0, 600]");
  if (c.requests < 0) return Usage("--requests must be >= 0");
  if (c.drain_ms < 0 || c.drain_ms > 600000) return Usage("--drain-ms must be 0-600000");
  if (c.load.message.empty()) return Usage("--message must not be empty");
  if (c.load.conversations < 0 || c.load.conversations > 10000000 ||
      (c.load.conversations > 0 && target == "sim")) {
    return Usage("--conversations must be 0-10000000, and needs the ws target");
  }

  auto ws_url = anima::cli::ParseUrl(c.ws_url_text);
  if (!ws_url.ok()) return Usage("--url: " + std::string(ws_url.status().message()));
  if (ws_url->scheme != "ws" && ws_url->scheme != "wss") return Usage("--url must be ws(s)://");
  auto sim_url = anima::cli::ParseUrl(c.sim_url_text);
  if (!sim_url.ok()) return Usage("--sim-url: " + std::string(sim_url.status().message()));
  if (sim_url->scheme != "http") return Usage("--sim-url must be http://");
  if (!anima::cli::IsLoopbackHost(ws_url->host) || !anima::cli::IsLoopbackHost(sim_url->host)) {
    return Usage("only loopback hosts (127.0.0.0/8, ::1, localhost) may be loaded");
  }
  c.ws_url = *ws_url;
  c.sim_url = *sim_url;
  if (!cpu_pids.empty()) {
    auto watch = anima::bench::ParseCpuPids(cpu_pids);
    if (!watch.ok()) return Usage(std::string(watch.status().message()));
    c.watch = *std::move(watch);
  }
  if (scenario == "overload") {
    auto parsed = anima::bench::ParseSteps(steps);
    if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
    if (!(capacity >= 0 && capacity <= 1e6)) return Usage("--capacity must be [0, 1000000]");
    if (target != "ws") return Usage("--scenario overload loads the gateway: --target ws");
    anima::bench::OverloadConfig overload;
    overload.base = c;
    overload.capacity = capacity;
    overload.steps = *std::move(parsed);
    return RunOverloadScenario(overload, json);
  }
  if (scenario == "priority") {
    auto frame = nlohmann::json::parse(flood_frame, nullptr, false);
    if (!frame.is_object() || !frame.contains("type") || frame.contains("id")) {
      return Usage("--flood-frame must be a JSON object with a type and no id");
    }
    if (flood_connections < 1 || flood_in_flight < 1) return Usage("the flood needs load");
    if (c.rate == 0) c.rate = 20;
    return RunPriority(c, frame.dump(), flood_connections, flood_in_flight, json);
  }
  if (scenario == "idle") {
    if (!(idle.connect_rate > 0 && idle.connect_rate <= 100000)) {
      return Usage("--connect-rate must be (0, 100000]");
    }
    if (!(idle.hold_s >= 0 && idle.hold_s <= 3600)) return Usage("--hold must be [0, 3600]");
    auto metrics_url = anima::cli::ParseUrl(idle.metrics_url_text);
    if (!metrics_url.ok()) {
      return Usage("--metrics-url: " + std::string(metrics_url.status().message()));
    }
    if (metrics_url->scheme != "http") return Usage("--metrics-url must be http://");
    if (!anima::cli::IsLoopbackHost(metrics_url->host)) {
      return Usage("only loopback hosts (127.0.0.0/8, ::1, localhost) may be loaded");
    }
    idle.metrics_url = *metrics_url;
    idle.ws_url = c.ws_url;
    idle.ws_url_text = c.ws_url_text;
    idle.token = c.token;
    idle.connections = c.connections;
    return RunIdleScenario(idle, json);
  }
  if (scenario != "load") return Usage("--scenario must be load, priority, idle or overload");

  try {
    std::vector<anima::bench::BenchResult> results;
    for (const std::string t : {"sim", "ws"}) {
      if (target != "both" && target != t) continue;
      auto r = anima::bench::RunLoad(c, t);
      if (!r.ok()) {
        std::cerr << "anima-bench: " << r.status().message() << "\n";
        return 4;
      }
      if (!json) std::cout << anima::bench::FormatText(*r) << std::flush;
      results.push_back(*std::move(r));
    }
    if (results.size() == 2) {
      if (json) {
        std::cout << anima::bench::ComparisonJson(results[0], results[1]).dump() << "\n";
      } else {
        std::cout << "\n" << anima::bench::FormatComparison(results[0], results[1]);
      }
    } else if (json) {
      std::cout << anima::bench::ToJson(results[0]).dump() << "\n";
    }
    for (const auto& r : results) {
      if (r.ok == 0) return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "anima-bench: " << e.what() << "\n";
    return 1;
  }
}
