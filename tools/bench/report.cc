#include "tools/bench/report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

namespace anima::bench {

namespace {

double Round3(double v) { return std::round(v * 1000.0) / 1000.0; }

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

std::string Row(const std::string& name, double p50, double p90, double p99, double p999,
                double max) {
  std::string row = name + std::string(name.size() < 10 ? 10 - name.size() : 1, ' ');
  for (double v : {p50, p90, p99, p999, max}) row += Pad(Ms(v), 11);
  return row + "\n";
}

}  // namespace

std::string Ms(double value) { return Fixed(value, 3); }

int64_t BenchResult::error_count() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

std::string FormatText(const BenchResult& r) {
  const RunSettings& s = r.settings;
  std::ostringstream out;
  out << "target " << s.target << "  " << s.url << "\n  "
      << (s.open_loop ? "open loop at " + Fixed(s.rate, 0) + " msg/s" : std::string("closed loop"))
      << ", " << s.connections << (s.target == "sim" ? " lane(s) x " : " connection(s)");
  if (s.target == "sim") {
    out << s.in_flight << " HTTP connection(s)";
  } else if (!s.open_loop) {
    out << " x " << s.in_flight << " in flight";
  }
  out << ", " << s.threads << " thread(s), " << (s.stream ? "stream" : "no stream") << ", "
      << Fixed(s.duration_s, 1) << " s after " << Fixed(s.warmup_s, 1) << " s warmup";
  if (s.requests_limit > 0) out << ", at most " << s.requests_limit << " requests";
  out << "\n  requests sent " << r.sent << ", ok " << r.ok << ", errors " << r.error_count();
  if (!r.errors.empty()) {
    out << " (";
    bool first = true;
    for (const auto& [code, count] : r.errors) {
      out << (first ? "" : ", ") << code << " " << count;
      first = false;
    }
    out << ")";
  }
  out << "\n  throughput " << Fixed(r.throughput(), 1) << " ok/s over " << Fixed(r.window_s, 3)
      << " s; generator CPU " << Fixed(r.generator_cpu_percent, 1) << " %\n";
  const LatencySummary& l = r.latency;
  if (l.count == 0) {
    out << "  latency ms: no successful samples\n";
  } else {
    out << "  latency ms  p50 " << Ms(l.p50_ms) << "  p90 " << Ms(l.p90_ms) << "  p99 "
        << Ms(l.p99_ms) << "  p99.9 " << Ms(l.p999_ms) << "  max " << Ms(l.max_ms) << "  (min "
        << Ms(l.min_ms) << ", mean " << Ms(l.mean_ms) << ", " << l.count << " samples)\n";
  }
  if (r.error_latency.count > 0) {
    const LatencySummary& e = r.error_latency;
    out << "  errors answered in ms  p50 " << Ms(e.p50_ms) << "  p99 " << Ms(e.p99_ms) << "  max "
        << Ms(e.max_ms) << "\n";
  }
  if (!r.process_cpu.empty()) {
    out << "  CPU per answered message:";
    for (const ProcessCpu& p : r.process_cpu) {
      out << " " << p.name << " " << Fixed(MicrosPerMessage(p, r.ok), 0) << " us";
    }
    // Only on the whole path does the simulator serve exactly the requests the others pass on.
    if (const double ratio = AnimaOverSim(r.process_cpu); ratio > 0 && s.target == "ws") {
      out << "; all but sim / sim " << Fixed(ratio, 2) << "x";
    }
    out << "\n";
  }
  for (const auto& note : r.notes) out << "  note: " << note << "\n";
  return out.str();
}

nlohmann::json ToJson(const BenchResult& r) {
  const RunSettings& s = r.settings;
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [code, count] : r.errors) errors[code] = count;
  const LatencySummary& l = r.latency;
  const LatencySummary& e = r.error_latency;
  nlohmann::json cpu = nlohmann::json::object();
  for (const ProcessCpu& p : r.process_cpu) {
    cpu[p.name] = {{"seconds", Round3(p.seconds)},
                   {"us_per_message", Round3(MicrosPerMessage(p, r.ok))}};
  }
  return {
      {"target", s.target},
      {"url", s.url},
      {"mode", s.open_loop ? "open" : "closed"},
      {"rate", s.rate},
      {"connections", s.connections},
      {"in_flight", s.in_flight},
      {"threads", s.threads},
      {"stream", s.stream},
      {"duration_s", s.duration_s},
      {"warmup_s", s.warmup_s},
      {"requests_limit", s.requests_limit},
      {"sent", r.sent},
      {"ok", r.ok},
      {"errors", errors},
      {"window_s", Round3(r.window_s)},
      {"throughput_per_s", Round3(r.throughput())},
      {"generator_cpu_percent", Round3(r.generator_cpu_percent)},
      {"latency_ms",
       {{"samples", l.count},
        {"min", Round3(l.min_ms)},
        {"mean", Round3(l.mean_ms)},
        {"p50", Round3(l.p50_ms)},
        {"p90", Round3(l.p90_ms)},
        {"p99", Round3(l.p99_ms)},
        {"p99.9", Round3(l.p999_ms)},
        {"max", Round3(l.max_ms)}}},
      {"error_latency_ms",
       {{"samples", e.count},
        {"p50", Round3(e.p50_ms)},
        {"p99", Round3(e.p99_ms)},
        {"max", Round3(e.max_ms)}}},
      {"cpu", cpu},
      {"anima_over_sim", Round3(AnimaOverSim(r.process_cpu))},
      {"notes", r.notes},
  };
}

Overhead OverheadOf(const BenchResult& direct, const BenchResult& full) {
  const LatencySummary& a = direct.latency;
  const LatencySummary& b = full.latency;
  return {b.p50_ms - a.p50_ms, b.p90_ms - a.p90_ms, b.p99_ms - a.p99_ms, b.p999_ms - a.p999_ms,
          b.max_ms - a.max_ms};
}

std::string FormatComparison(const BenchResult& direct, const BenchResult& full) {
  std::string out = "latency ms" + Pad("p50", 11) + Pad("p90", 11) + Pad("p99", 11) +
                    Pad("p99.9", 11) + Pad("max", 11) + "\n";
  for (const BenchResult* r : {&direct, &full}) {
    const LatencySummary& l = r->latency;
    out += Row(r->settings.target, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms);
  }
  const Overhead o = OverheadOf(direct, full);
  out += Row("overhead", o.p50_ms, o.p90_ms, o.p99_ms, o.p999_ms, o.max_ms);
  out += "throughput ok/s: " + direct.settings.target + " " + Fixed(direct.throughput(), 1) + ", " +
         full.settings.target + " " + Fixed(full.throughput(), 1) + "\n";
  return out;
}

nlohmann::json ComparisonJson(const BenchResult& direct, const BenchResult& full) {
  const Overhead o = OverheadOf(direct, full);
  return {{direct.settings.target, ToJson(direct)},
          {full.settings.target, ToJson(full)},
          {"overhead_ms",
           {{"p50", Round3(o.p50_ms)},
            {"p90", Round3(o.p90_ms)},
            {"p99", Round3(o.p99_ms)},
            {"p99.9", Round3(o.p999_ms)},
            {"max", Round3(o.max_ms)}}}};
}

}  // namespace anima::bench
