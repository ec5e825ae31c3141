#include "tools/bench/report.h"

#include <gtest/gtest.h>

namespace anima::bench {
namespace {

BenchResult Result(const std::string& target, double p50, double p99) {
  BenchResult r;
  r.settings.target = target;
  r.settings.url = "ws://127.0.0.1:3002/";
  r.settings.connections = 16;
  r.settings.in_flight = 1;
  r.settings.threads = 1;
  r.settings.duration_s = 10;
  r.settings.warmup_s = 1;
  r.sent = 1000;
  r.ok = 990;
  r.errors = {{"rate_limited", 7}, {"timeout", 3}};
  r.window_s = 10;
  r.latency.count = 990;
  r.latency.p50_ms = p50;
  r.latency.p90_ms = p50 + 0.1;
  r.latency.p99_ms = p99;
  r.latency.p999_ms = p99 + 1;
  r.latency.max_ms = p99 + 2;
  return r;
}

TEST(ReportTest, MillisecondsHaveThreeDecimals) {
  EXPECT_EQ(Ms(1.23456), "1.235");
  EXPECT_EQ(Ms(0), "0.000");
  EXPECT_EQ(Ms(12), "12.000");
}

TEST(ReportTest, TextNamesCountsErrorsAndPercentiles) {
  const std::string text = FormatText(Result("ws", 0.5, 1.25));
  EXPECT_NE(text.find("requests sent 1000, ok 990, errors 10 (rate_limited 7, timeout 3)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("throughput 99.0 ok/s"), std::string::npos) << text;
  EXPECT_NE(text.find("p50 0.500"), std::string::npos) << text;
  EXPECT_NE(text.find("p99 1.250"), std::string::npos) << text;
  EXPECT_NE(text.find("p99.9 2.250"), std::string::npos) << text;
  EXPECT_NE(text.find("closed loop"), std::string::npos) << text;
}

TEST(ReportTest, TextSaysWhenThereAreNoSamples) {
  BenchResult r;
  r.settings.target = "sim";
  EXPECT_NE(FormatText(r).find("no successful samples"), std::string::npos);
}

TEST(ReportTest, JsonCarriesSettingsAndRoundedLatencies) {
  BenchResult r = Result("ws", 0.12345, 1.0);
  r.settings.open_loop = true;
  r.settings.rate = 200;
  const nlohmann::json j = ToJson(r);
  EXPECT_EQ(j["target"], "ws");
  EXPECT_EQ(j["mode"], "open");
  EXPECT_EQ(j["rate"], 200.0);
  EXPECT_EQ(j["sent"], 1000);
  EXPECT_EQ(j["ok"], 990);
  EXPECT_EQ(j["errors"]["rate_limited"], 7);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p50"].get<double>(), 0.123);
  EXPECT_DOUBLE_EQ(j["latency_ms"]["p99.9"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(j["throughput_per_s"].get<double>(), 99.0);
}

TEST(ReportTest, OverheadIsFullMinusDirectPerPercentile) {
  const BenchResult sim = Result("sim", 0.4, 1.0);
  const BenchResult ws = Result("ws", 0.9, 1.75);
  const Overhead o = OverheadOf(sim, ws);
  EXPECT_NEAR(o.p50_ms, 0.5, 1e-9);
  EXPECT_NEAR(o.p99_ms, 0.75, 1e-9);
  EXPECT_NEAR(o.p999_ms, 0.75, 1e-9);
  const std::string table = FormatComparison(sim, ws);
  EXPECT_NE(table.find("overhead"), std::string::npos) << table;
  EXPECT_NE(table.find("0.750"), std::string::npos) << table;
  const nlohmann::json j = ComparisonJson(sim, ws);
  EXPECT_DOUBLE_EQ(j["overhead_ms"]["p50"].get<double>(), 0.5);
  EXPECT_EQ(j["sim"]["target"], "sim");
  EXPECT_EQ(j["ws"]["target"], "ws");
}

}  // namespace
}  // namespace anima::bench
