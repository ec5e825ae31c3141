#include "tools/bench/metrics_text.h"

#include <gtest/gtest.h>

namespace anima::bench {
namespace {

// As prometheus-cpp renders it: HELP and TYPE comments, doubles in exponent form.
constexpr char kExposition[] = R"(# HELP anima_gateway_connections Open WebSocket connections.
# TYPE anima_gateway_connections gauge
anima_gateway_connections 10000
# HELP anima_gateway_connections_total WebSocket connections accepted.
# TYPE anima_gateway_connections_total counter
anima_gateway_connections_total 10020
anima_gateway_limit_hits_total{limit="connections"} 3
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.8874368e+07
)";

TEST(SampleValueTest, ReadsUnlabelledSamples) {
  EXPECT_EQ(SampleValue(kExposition, "anima_gateway_connections"), 10000);
  EXPECT_EQ(SampleValue(kExposition, "anima_gateway_connections_total"), 10020);
  EXPECT_EQ(SampleValue(kExposition, "process_resident_memory_bytes"), 18874368);
}

TEST(SampleValueTest, IgnoresCommentsLabelledSamplesAndPrefixes) {
  EXPECT_EQ(SampleValue(kExposition, "anima_gateway_limit_hits_total"), std::nullopt);
  EXPECT_EQ(SampleValue(kExposition, "anima_gateway"), std::nullopt);
  EXPECT_EQ(SampleValue(kExposition, "HELP"), std::nullopt);
  EXPECT_EQ(SampleValue("", "process_resident_memory_bytes"), std::nullopt);
}

TEST(SampleValueTest, SkipsTheTimestampAndRejectsNonNumbers) {
  EXPECT_EQ(SampleValue("up 1 1700000000000\n", "up"), 1);
  EXPECT_EQ(SampleValue("up one\n", "up"), std::nullopt);
  EXPECT_EQ(SampleValue("up 2", "up"), 2) << "the last line needs no newline";
}

}  // namespace
}  // namespace anima::bench
