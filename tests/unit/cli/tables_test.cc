#include "tools/cli/tables.h"

#include <gtest/gtest.h>

namespace anima::cli {
namespace {

TEST(TableTest, PadsToTheWidestCellAndRightAlignsNumbers) {
  Table t({{"NAME"}, {"N", true}, {"NOTE"}});
  t.Add({"a", "1", ""});
  t.Add({"längere", "100", "x"});
  EXPECT_EQ(t.Render(),
            "NAME     N    NOTE\n"
            "a          1\n"
            "längere  100  x\n");
}

TEST(TableTest, CutsLongCellsWithoutSplittingACharacter) {
  Table t({{"T", false, 4}});
  t.Add({"ééééé"});
  t.Add({"abcd"});
  t.Add({"short", "extra cells are dropped"});
  EXPECT_EQ(t.Render(), "T\nééé…\nabcd\nsho…\n");
}

TEST(StateTableTest, SummaryAndOneRowPerModule) {
  auto state = nlohmann::json::parse(R"({
    "type":"consciousness_state","ts":"2026-12-03T10:00:00.000Z","harmony":0.75,
    "status":"degraded",
    "modules":[
      {"name":"llm-broker","kind":"service","status":"down","in_flight":0,
       "requests_per_second":0,"error_rate":0,"p95_ms":0,"detail":"unreachable\u001b[2J"},
      {"name":"llm-broker/openai","kind":"provider","status":"healthy","in_flight":2,
       "requests_per_second":1.5,"error_rate":0.25,"p95_ms":840}],
    "load":{"connections":12,"queue_depth":{"high":0,"normal":3,"low":1},
            "cpu_percent":7.5,"rss_bytes":41943040}})");
  EXPECT_EQ(StateTable(state),
            "harmony 0.750  degraded  at 2026-12-03T10:00:00.000Z\n"
            "load: 12 connections, queues high 0 / normal 3 / low 1, cpu 7.5%, rss 40.0 MiB\n"
            "\n"
            "MODULE             KIND      STATUS   IN FLIGHT  REQ/S  ERRORS  P95 MS  DETAIL\n"
            "llm-broker         service   down             0    0.0    0.0%       0  "
            "unreachable[2J\n"
            "llm-broker/openai  provider  healthy          2    1.5   25.0%     840\n");
}

TEST(StateTableTest, ToleratesMissingAndMistypedFields) {
  auto state = nlohmann::json::parse(R"({"harmony":"x","modules":[1,{"name":7}],"load":[]})");
  EXPECT_EQ(StateTable(state),
            "harmony 0.000    at \n"
            "\n"
            "MODULE  KIND  STATUS  IN FLIGHT  REQ/S  ERRORS  P95 MS  DETAIL\n"
            "                              0    0.0    0.0%       0\n");
}

TEST(JobsTableTest, EmptyListSaysSo) {
  EXPECT_EQ(JobsTable(nlohmann::json::parse(R"({"jobs":[]})"), false), "no jobs\n");
  EXPECT_EQ(JobsTable(nlohmann::json::parse(R"({"jobs":"x"})"), true), "no jobs\n");
}

}  // namespace
}  // namespace anima::cli
