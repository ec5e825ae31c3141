#include "tools/bench/idle_scenario.h"

#include <gtest/gtest.h>

namespace anima::bench {
namespace {

constexpr double kMiB = 1024 * 1024;

IdleResult Held(int connections, double baseline_mib, double held_mib) {
  IdleResult r;
  r.config.ws_url_text = "ws://127.0.0.1:3002/";
  r.config.metrics_url_text = "http://127.0.0.1:9100/metrics";
  r.config.connections = connections;
  r.opened = connections;
  r.open_s = connections / 400.0;
  r.baseline = {baseline_mib * kMiB, 0};
  r.opened_sample = {held_mib * kMiB, static_cast<double>(connections)};
  r.held_sample = {held_mib * kMiB, static_cast<double>(connections)};
  return r;
}

TEST(IdleResultTest, PerConnectionIsTheGrowthOverTheConnectionsStillOpen) {
  IdleResult r = Held(1000, 20, 24);
  EXPECT_DOUBLE_EQ(r.PerConnectionBytes(), 4 * kMiB / 1000);
  r.dropped = 500;
  EXPECT_DOUBLE_EQ(r.PerConnectionBytes(), 4 * kMiB / 500);
  r.dropped = 1000;
  EXPECT_EQ(r.PerConnectionBytes(), 0);
}

TEST(IdleResultTest, TenThousandIsMeasuredOrProjected) {
  EXPECT_DOUBLE_EQ(Held(10000, 20, 70).GoalConnectionsBytes(), 70 * kMiB);
  EXPECT_DOUBLE_EQ(Held(1000, 20, 24).GoalConnectionsBytes(), 60 * kMiB);
}

TEST(IdleResultTest, TextGivesCountsMemoryAndTheVerdict) {
  IdleResult r = Held(1000, 20, 24);
  r.retries = 3;
  std::string text = FormatIdleText(r);
  EXPECT_NE(text.find("connections open 1000, failed 0, retries 3, dropped 0"), std::string::npos)
      << text;
  EXPECT_NE(text.find("baseline 20.0, all open 24.0, end of hold 24.0; per connection 4.10 KiB"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("at 10000 connections: 60.0 MiB (baseline + per connection x 10000)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(": met"), std::string::npos) << text;
  EXPECT_NE(FormatIdleText(Held(10000, 20, 100))
                .find("(measured); goal under 100 MB (95.4 MiB): "
                      "not met"),
            std::string::npos);
}

TEST(IdleResultTest, JsonCarriesTheSamplesAndTheVerdict) {
  const nlohmann::json j = IdleToJson(Held(10000, 20, 70));
  EXPECT_EQ(j["scenario"], "idle");
  EXPECT_EQ(j["opened"], 10000);
  EXPECT_EQ(j["gateway"]["baseline"]["rss_bytes"], 20 * kMiB);
  EXPECT_EQ(j["gateway"]["end_of_hold"]["connections"], 10000);
  EXPECT_EQ(j["per_connection_bytes"], 5243);  // 50 MiB / 10000, rounded
  EXPECT_EQ(j["goal_met"], true);
}

}  // namespace
}  // namespace anima::bench
